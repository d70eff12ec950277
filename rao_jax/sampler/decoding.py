"""The device side of the slot sampler: state, prefill and the decode loop.

Everything here is a pure function of arrays, jitted by `slots.SlotSampler`
with static shapes. A slot holds one sequence. Its invariant between calls:
positions `0 .. seq_len - 2` are in the KV cache and the last token (at
`seq_len - 1`, the one most recently sampled) is `pending`, not yet in the
cache. Prefill writes a chunk (a prompt, or the pending token plus injected
tokens) and samples one token; each decode step writes the pending token and
samples the next, so every sampled token costs exactly one forward row.

A sampled token at position p uses the key `fold_in(slot_key, p)`: the
caller's per-sequence key and the position alone decide it, never the slot
or the neighbours. Each slot also holds its temperature (0: greedy), as
data: greedy and sampled slots decode in one batch with one program.
"""

from __future__ import annotations

from flax import nnx
import flax.struct
import jax
import jax.numpy as jnp

from rao_jax.model import gemma
from rao_jax.model import sharding
from rao_jax.sampler import sampling as sampling_lib

# Why a slot stopped (0: it has not).
RUNNING, STOP_SEQUENCE, BUDGET, MAX_LEN = 0, 1, 2, 3
STOP_REASONS = {STOP_SEQUENCE: 'stop', BUDGET: 'budget', MAX_LEN: 'max_len'}

# Stop-sequence tables are right-aligned and left-padded with this wildcard;
# the recent-token window starts each turn filled with _NO_TOKEN, which
# matches nothing, so a turn only stops on tokens it generated itself.
STOP_PAD = -1
_NO_TOKEN = -2


@flax.struct.dataclass
class SlotState:
  """Per-slot decoding state, all arrays with the slot axis first."""
  cache: gemma.Cache  # per layer k, v: [B, K, S, H]
  pending: jax.Array  # [B] int32, last sampled token, not yet in the cache
  seq_len: jax.Array  # [B] int32, tokens in the sequence, pending included
  active: jax.Array  # [B] bool, decoding
  reason: jax.Array  # [B] int32, why the slot stopped
  turn_new: jax.Array  # [B] int32, tokens sampled in the current turn
  budget: jax.Array  # [B] int32, per-turn new-token budget
  keys: jax.Array  # [B, 2] uint32, the caller's per-sequence key data
  temperature: jax.Array  # [B] float32, the turn's temperature (0: greedy)
  stops: jax.Array  # [B, M, L] int32, stop sequences (right-aligned)
  recent: jax.Array  # [B, L] int32, the turn's last L sampled tokens


def _slot_axes(x: jax.Array) -> tuple[str | None, ...]:
  return (sharding.BATCH,) + (None,) * (x.ndim - 1)


def constrain(state: SlotState) -> SlotState:
  """Pins slots to ('data','fsdp') and KV heads to 'tensor' (under a mesh).

  Every jitted function returns its state through here, so each call's
  output sharding equals the next call's input sharding: no recompiles.
  """
  cache = tuple(
      gemma.LayerCache(k=sharding.shard(c.k, gemma.CACHE_AXES),
                       v=sharding.shard(c.v, gemma.CACHE_AXES))
      for c in state.cache)
  rest = {
      name: sharding.shard(getattr(state, name), _slot_axes(
          getattr(state, name)))
      for name in ('pending', 'seq_len', 'active', 'reason', 'turn_new',
                   'budget', 'keys', 'temperature', 'stops', 'recent')
  }
  return SlotState(cache=cache, **rest)


def for_host(outputs):
  """What the host reads back, replicated on every device: with several
  processes each one then holds all of it (a slot-sharded array would be
  split over the hosts). The outputs are a few numbers a slot."""
  return jax.tree.map(lambda x: sharding.shard(x, (None,) * x.ndim), outputs)


def init_state(config, num_slots: int, max_len: int, max_stops: int,
               max_stop_len: int, key_shape: tuple[int, ...],
               cache_dtype=None) -> SlotState:
  """All slots free, cache zeroed (jit it: the arrays are born sharded)."""
  zeros = lambda dtype, *shape: jnp.zeros((num_slots,) + shape, dtype)
  state = SlotState(
      cache=gemma.init_cache(config, num_slots, max_len, cache_dtype),
      pending=zeros(jnp.int32),
      seq_len=zeros(jnp.int32),
      active=zeros(jnp.bool_),
      reason=zeros(jnp.int32),
      turn_new=zeros(jnp.int32),
      budget=zeros(jnp.int32),
      keys=zeros(jnp.uint32, *key_shape),
      temperature=zeros(jnp.float32),
      stops=jnp.full((num_slots, max_stops, max_stop_len), STOP_PAD,
                     jnp.int32),
      recent=jnp.full((num_slots, max_stop_len), _NO_TOKEN, jnp.int32))
  return constrain(state)


def _sample(method: sampling_lib.SamplingMethod, logits_BV: jax.Array,
            keys_BK: jax.Array, positions_B: jax.Array,
            temperature_B: jax.Array, live_B: jax.Array):
  """Samples the token at `positions_B`; returns it and its log-prob
  under the distribution sampled from (0 for a greedy row).

  `method` is the static filter, `temperature_B` each row's temperature;
  rows not `live_B` (padding, stopped slots) are computed and discarded.
  Only the sampler's log-prob is computed: it is what the trainer's ratio
  needs, and a second log-sum-exp over the vocabulary at every decode step
  would cost a [B, V] pass for nothing.
  """

  def mixed():
    keys_B = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(keys_BK),
                                          positions_B)
    return sampling_lib.sample_rows(method, logits_BV, keys_B, temperature_B)

  def greedy():
    return sampling_lib.Greedy().sample(logits_BV, None)

  # A batch of greedy rows only (an evaluation) skips the B threefry hashes
  # and the [B, V] Gumbel noise per step; the branch is taken at run time,
  # so greedy and sampled batches still share one program.
  return jax.lax.cond(jnp.any(live_B & (temperature_B > 0)), mixed, greedy)


def _stop_reason(recent_BL, stops_BML, turn_new_B, budget_B, seq_len_B,
                 max_len: int) -> jax.Array:
  """The first stop condition that holds, in priority order (0: none)."""
  match_BML = (stops_BML == STOP_PAD) | (stops_BML == recent_BL[:, None, :])
  real_BM = jnp.any(stops_BML != STOP_PAD, axis=-1)
  hit_B = jnp.any(jnp.all(match_BML, axis=-1) & real_BM, axis=-1)
  reason_B = jnp.where(seq_len_B >= max_len, MAX_LEN, RUNNING)
  reason_B = jnp.where(turn_new_B >= budget_B, BUDGET, reason_B)
  return jnp.where(hit_B, STOP_SEQUENCE, reason_B).astype(jnp.int32)


def _push(recent_BL: jax.Array, tokens_B: jax.Array) -> jax.Array:
  return jnp.concatenate([recent_BL[:, 1:], tokens_B[:, None]], axis=1)


def prefill(graphdef: nnx.GraphDef, method: sampling_lib.SamplingMethod,
            window: int, params: nnx.State, state: SlotState,
            slots_P: jax.Array, tokens_PT: jax.Array, start_P: jax.Array,
            chunk_len_P: jax.Array, keys_PK: jax.Array, budget_P: jax.Array,
            stops_PML: jax.Array, temperature_P: jax.Array):
  """Writes a chunk into each of P slots and samples one token for each.

  A row whose slot index is `num_slots` is padding (P is bucketed): it is
  computed on a clipped copy and dropped on the way back.

  Args:
    graphdef, method, window: static; `method` is a filter at temperature
      1 (`sampling.static_part`), the temperature is `temperature_P`.
      `window` (>= every row's end) is how many cache positions the chunk
      may attend to; shorter than `max_len` it saves attention work.
    params: the model's parameters (an argument, so weights are not baked
      into the program and can be swapped without recompiling).
    state: the slot state (donated by the caller).
    slots_P: [P] target slots.
    tokens_PT: [P, T] chunk tokens, right-padded.
    start_P: [P] position of each chunk's first token (0 for a new prompt).
    chunk_len_P: [P] tokens in each chunk (>= 1; 0 for padding rows).
    keys_PK, budget_P, stops_PML, temperature_P: the turn's key data,
      new-token budget, stop sequences and temperature (float32, 0:
      greedy; padding rows 0).

  Returns:
    The new state and, per row, (token, sampler log-prob, stop reason).
  """
  model = nnx.merge(graphdef, params)
  num_slots, _, max_len, _ = state.cache[0].k.shape
  p, t = tokens_PT.shape
  # Only this chunk's rows of the cache take part: gather them, run, scatter.
  rows_cache = tuple(
      gemma.LayerCache(
          k=jnp.take(c.k, slots_P, axis=0, mode='clip')[:, :, :window],
          v=jnp.take(c.v, slots_P, axis=0, mode='clip')[:, :, :window])
      for c in state.cache)
  positions_PT = start_P[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
  segments_PT = (jnp.arange(t)[None] < chunk_len_P[:, None]).astype(jnp.int32)
  h_PTD, rows_cache = model.hidden_states(tokens_PT, positions_PT, segments_PT,
                                          rows_cache)
  # Logits of the last chunk token only: no [P, T, V] projection.
  last_P = jnp.maximum(chunk_len_P - 1, 0)
  h_P1D = jnp.take_along_axis(h_PTD, last_P[:, None, None], axis=1)
  logits_PV = model.logits(h_P1D)[:, 0]
  seq_len_P = start_P + chunk_len_P + 1
  tokens_P, sampler_logp_P = _sample(
      method, logits_PV, keys_PK, seq_len_P - 1, temperature_P,
      chunk_len_P > 0)
  recent_PL = _push(jnp.full(stops_PML.shape[::2], _NO_TOKEN, jnp.int32),
                    tokens_P)
  turn_new_P = jnp.ones_like(seq_len_P)
  reason_P = _stop_reason(recent_PL, stops_PML, turn_new_P, budget_P,
                          seq_len_P, max_len)

  def put(x, rows):
    return x.at[slots_P].set(rows.astype(x.dtype), mode='drop')

  cache = tuple(
      gemma.LayerCache(
          k=c.k.at[slots_P, :, :window].set(r.k, mode='drop'),
          v=c.v.at[slots_P, :, :window].set(r.v, mode='drop'))
      for c, r in zip(state.cache, rows_cache))
  state = SlotState(
      cache=cache,
      pending=put(state.pending, tokens_P),
      seq_len=put(state.seq_len, seq_len_P),
      active=put(state.active, reason_P == RUNNING),
      reason=put(state.reason, reason_P),
      turn_new=put(state.turn_new, turn_new_P),
      budget=put(state.budget, budget_P),
      keys=put(state.keys, keys_PK),
      temperature=put(state.temperature, temperature_P),
      stops=put(state.stops, stops_PML),
      recent=put(state.recent, recent_PL))
  del num_slots
  return constrain(state), for_host((tokens_P, sampler_logp_P, reason_P))


def decode(graphdef: nnx.GraphDef, method: sampling_lib.SamplingMethod,
           num_steps: int, window: int, params: nnx.State, state: SlotState,
           live_B: jax.Array):
  """Up to `num_steps` decode steps for every live, active slot.

  One `lax.while_loop`, which also ends early once every slot has stopped.
  Inactive slots run as padding (segment 0: nothing is written to their
  cache) and their state is carried through unchanged.

  Args:
    graphdef, method, num_steps, window: static (`method` as in
      `prefill`). Every position written here is below `window`, so the
      loop attends to the cache's first `window` positions only.
    params: the model's parameters.
    state: the slot state (donated by the caller).
    live_B: [B] bool, slots the host still holds (a released slot is not).

  Returns:
    The new state and the chunk's outputs: tokens and sampler log-probs
    `[B, num_steps]` (valid up to each row's count), the count `[B]` of
    tokens each slot sampled here, and each slot's stop reason and
    sequence length `[B]`.
  """
  model = nnx.merge(graphdef, params)
  b = state.pending.shape[0]
  max_len = state.cache[0].k.shape[2]
  full_cache = state.cache
  cache = full_cache if window >= max_len else tuple(
      gemma.LayerCache(k=c.k[:, :, :window], v=c.v[:, :, :window])
      for c in full_cache)
  state = state.replace(cache=cache, active=state.active & live_B)
  out_tokens = jnp.zeros((b, num_steps), jnp.int32)
  out_sampler = jnp.zeros((b, num_steps), jnp.float32)
  count_B = jnp.zeros((b,), jnp.int32)

  def cond(carry):
    step, st = carry[0], carry[1]
    return (step < num_steps) & jnp.any(st.active)

  def body(carry):
    step, st, out_tokens, out_sampler, count_B = carry
    act_B = st.active
    logits_B1V, cache = model(st.pending[:, None], (st.seq_len - 1)[:, None],
                              act_B[:, None].astype(jnp.int32), st.cache)
    tokens_B, sampler_logp_B = _sample(
        method, logits_B1V[:, 0], st.keys, st.seq_len, st.temperature, act_B)
    seq_len_B = st.seq_len + act_B
    turn_new_B = st.turn_new + act_B
    recent_BL = jnp.where(act_B[:, None], _push(st.recent, tokens_B),
                          st.recent)
    reason_B = _stop_reason(recent_BL, st.stops, turn_new_B, st.budget,
                            seq_len_B, max_len)
    reason_B = jnp.where(act_B, reason_B, st.reason)
    st = st.replace(
        cache=cache,
        pending=jnp.where(act_B, tokens_B, st.pending),
        seq_len=seq_len_B,
        active=act_B & (reason_B == RUNNING),
        reason=reason_B,
        turn_new=turn_new_B,
        recent=recent_BL)
    # A slot that stops never restarts in this loop, so its outputs are the
    # contiguous prefix [0, count).
    column = lambda buf, x: jax.lax.dynamic_update_slice(
        buf, jnp.where(act_B, x, 0).astype(buf.dtype)[:, None], (0, step))
    return (step + 1, st, column(out_tokens, tokens_B),
            column(out_sampler, sampler_logp_B), count_B + act_B)

  carry = (jnp.int32(0), state, out_tokens, out_sampler, count_B)
  _, state, out_tokens, out_sampler, count_B = jax.lax.while_loop(
      cond, body, carry)
  if window < max_len:
    cache = tuple(
        gemma.LayerCache(k=f.k.at[:, :, :window].set(c.k),
                         v=f.v.at[:, :, :window].set(c.v))
        for f, c in zip(full_cache, state.cache))
    state = state.replace(cache=cache)
  return constrain(state), for_host(
      (out_tokens, out_sampler, count_B, state.reason, state.seq_len))


def save_rows(window: int, state: SlotState, slot: jax.Array) -> gemma.Cache:
  """A copy of one slot's first `window` cache positions, `[1, K, W, H]`."""
  return tuple(
      gemma.LayerCache(
          k=jax.lax.dynamic_slice_in_dim(c.k, slot, 1, axis=0)[:, :, :window],
          v=jax.lax.dynamic_slice_in_dim(c.v, slot, 1, axis=0)[:, :, :window])
      for c in state.cache)


def restore_rows(state: SlotState, rows: gemma.Cache,
                 slot: jax.Array) -> SlotState:
  """Writes `save_rows`'s copy back into a slot (any slot), in place.

  Only the cache changes: the slot's other fields are set by the prefill
  that extends it before it decodes again.
  """
  start = (slot, 0, 0, 0)
  cache = tuple(
      gemma.LayerCache(k=jax.lax.dynamic_update_slice(c.k, r.k, start),
                       v=jax.lax.dynamic_update_slice(c.v, r.v, start))
      for c, r in zip(state.cache, rows))
  return constrain(state.replace(cache=cache))
