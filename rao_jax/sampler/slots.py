"""The host-side slot sampler: admit, extend, decode in chunks, release.

A `SlotSampler` holds `num_slots` sequences of at most `max_len` tokens in
one sharded KV cache. The agent scheduler drives it:

  sampler = SlotSampler(model, num_slots=64, max_len=1024,
                        method=sampling.TopP(0.95))
  slots = sampler.admit([Request(prompt_ids, key, max_new_tokens=128,
                                 stop=[closing_tag_ids]),
                         Request(eval_ids, key, 128, temperature=0.0)])
  while sampler.num_running:
    for turn in sampler.decode(num_steps=32):   # turns that ended
      ...                                        # parse turn.tokens
      sampler.extend([turn.slot], [Request(observation_ids, None, 128)])
      # or sampler.release(turn.slot)

A stopped sequence that must wait can give its slot up without losing its
KV cache: `suspend` copies it out, `resume` puts it into any free slot, and
`extend` goes on from there.

A turn stops on its stop sequences inside the decode loop, and on the host
by its `find_stop` rule, checked after the prefill and after every decode
chunk: a rule that ends the turn early drops the tokens sampled after its
end and rolls the slot back (`seq_len`, the pending token), so the turn
ends exactly there. The KV cache index is the position and attention only
sees positions up to the query's, so the dropped tokens' cache entries are
never read and the next `extend` overwrites them.

The temperature is each request's (`Request.temperature`, 0: greedy; the
method's by default) and data, not part of a program: greedy and sampled
turns share the slots, the KV cache and every compiled program.

Programs are compiled for a few static shapes only: prefill per
(rows bucket, chunk-length bucket, attention window), decode per
(num_steps, attention window) and suspend/resume per window; buckets are
powers of two, chunk lengths also 3 * 2^k. `num_compiles` counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
import dataclasses
import functools
from typing import NamedTuple

from flax import nnx
import jax
import numpy as np

from rao_jax.model import gemma
from rao_jax.model import sharding
from rao_jax.sampler import decoding
from rao_jax.sampler import sampling as sampling_lib


@dataclasses.dataclass(frozen=True)
class Request:
  """One turn to run in a slot.

  Attributes:
    tokens: for `admit`, the prompt; for `extend`, the tokens appended after
      what the slot already holds (e.g. a tool observation).
    key: the sequence's PRNG key (`jax.random.key(...)` or a raw
      `jax.random.PRNGKey`); the token at position p is sampled with
      `fold_in(key, p)`. Required by `admit`; for `extend`, None keeps the
      slot's key.
    max_new_tokens: the turn's budget of sampled tokens (>= 1).
    stop: stop sequences, each a token id or a sequence of ids; the turn ends
      right after sampling one (the stop tokens are part of the turn).
    find_stop: a host-side stop rule, (the turn's tokens, how many of them
      are already known to go on) -> how many it keeps (it ends after
      them) or None; e.g. `agent.stops.StopRule.find`. None: stop
      sequences only.
    temperature: the turn's sampling temperature, >= 0: 0 takes the
      argmax (sampler log-prob 0), t > 0 samples softmax(logits / t)
      through the sampler's top-k / top-p. None: the sampler's method's
      (0 for `Greedy`).
  """
  tokens: Sequence[int]
  key: jax.Array | None
  max_new_tokens: int
  stop: Sequence[int | Sequence[int]] = ()
  find_stop: Callable[[Sequence[int], int], int | None] | None = None
  temperature: float | None = None


@dataclasses.dataclass(frozen=True)
class Turn:
  """A finished turn: what one slot sampled since its admit/extend.

  Attributes:
    slot: the slot it ran in (still held until `release`).
    tokens: [n] int32, the sampled tokens.
    sampler_logprobs: [n] float32, log-probs under the distribution sampled
      from (after temperature/top-k/top-p; 0 for greedy).
    stop_reason: 'stop' (a stop sequence), 'budget' (max_new_tokens) or
      'max_len' (the slot is full; it cannot be extended).
  """
  slot: int
  tokens: np.ndarray
  sampler_logprobs: np.ndarray
  stop_reason: str


@dataclasses.dataclass(frozen=True)
class Suspended:
  """A stopped sequence taken out of its slot by `suspend`, its KV included.

  Attributes:
    context: every token of the sequence.
    seq_len: len(context).
    last_token: the last sampled token (not yet in the cache).
    key_data: the sequence's key data.
    cache: per layer k, v `[1, K, W, H]`: the cache's first W positions
      (W >= seq_len - 1, a power-of-two bucket).
  """
  context: tuple[int, ...]
  seq_len: int
  last_token: int
  key_data: np.ndarray
  cache: gemma.Cache


@dataclasses.dataclass
class _Slot:
  """What the host knows of a held slot."""
  key_data: np.ndarray
  seq_len: int  # tokens in the sequence, the last sampled one included
  last_token: int
  context: list  # every token of the sequence
  running: bool = True
  tokens: list = dataclasses.field(default_factory=list)
  sampler_logprobs: list = dataclasses.field(default_factory=list)
  find_stop: Callable[[Sequence[int], int], int | None] | None = None
  checked: int = 0  # tokens of the turn find_stop has let go on


class _PrefillRow(NamedTuple):
  """One checked request of a prefill call, as the host holds it."""

  slot: int
  chunk: list[int]  # tokens to write, from position `start`
  start: int  # the position of the chunk's first token (0: a new prompt)
  key_data: np.ndarray
  budget: int  # new tokens the turn may sample
  stops: np.ndarray  # [max_stop_sequences, max_stop_len], STOP_PAD-padded
  temperature: float  # 0: greedy
  find_stop: Callable[[Sequence[int], int], int | None] | None


# Shared by all samplers, so samplers of one shape (e.g. rebuilt each RL
# step) reuse programs; the graph, sampling filter (`sampling.static_part`:
# not the temperature, which is data), chunk size and attention window are
# static. The state (and its KV cache) is donated to every call:
# prefill and decode update it in place instead of copying num_slots x max_len
# x layers of K/V per call, which would double its memory and dominate a
# decode chunk's time.
# Both are called with keyword arguments only: names, not positions, say
# which arguments are static and which buffer is donated.
_prefill = jax.jit(decoding.prefill,
                   static_argnames=('graphdef', 'method', 'window'),
                   donate_argnames=('state',))
_decode = jax.jit(decoding.decode,
                  static_argnames=('graphdef', 'method', 'num_steps',
                                   'window'),
                  donate_argnames=('state',))
# Suspend copies a slot's rows out (the state is only read); resume writes
# them back in place (the state is donated). One program per window bucket.
_save_rows = jax.jit(decoding.save_rows, static_argnames=('window',))
_restore_rows = jax.jit(decoding.restore_rows, donate_argnames=('state',))


def _bucket(n: int, minimum: int, maximum: int) -> int:
  """The power of two >= n (at least `minimum`), capped at `maximum`."""
  return min(max(minimum, 1 << max(0, n - 1).bit_length()), maximum)


def _chunk_bucket(n: int, minimum: int, maximum: int) -> int:
  """The smallest 2^k or 3 * 2^(k-1) >= n (at least `minimum`), capped.

  Prefill is compute-bound, so its padded length costs in proportion: these
  steps pad a chunk by at most a third, powers of two by up to half (e.g.
  a 90-token prompt: 96, not 128), for twice as few extra programs.
  """
  power = 1 << max(0, n - 1).bit_length()
  size = power * 3 // 4 if power >= 4 and power * 3 // 4 >= n else power
  return min(max(minimum, size), maximum)


class SlotSampler:
  """A fixed batch of sequence slots decoded together (see module doc)."""

  def __init__(
      self,
      model: gemma.Transformer,
      *,
      num_slots: int,
      max_len: int,
      method: sampling_lib.SamplingMethod = sampling_lib.Greedy(),
      max_stop_sequences: int = 4,
      max_stop_len: int = 8,
      min_bucket: int = 16,
      mesh: jax.sharding.Mesh | None = None,
      rules: sharding.Rules = sharding.DEFAULT_RULES,
      cache_dtype=None,
  ):
    """Creates the slots and their (sharded) cache.

    Args:
      model: the policy; only its graph is kept, parameters are passed to
        every call (see `set_params`).
      num_slots: sequences decoded together; divisible by the mesh's
        data x fsdp size.
      max_len: cache positions per slot (prompt + all turns).
      method: a sampling method: its filter (top-k / top-p) is static (a
        new one compiles new programs), its temperature is the default of
        requests that name none (data: any temperature, greedy included,
        runs in the same programs).
      max_stop_sequences: stop sequences per turn, at most.
      max_stop_len: tokens per stop sequence, at most.
      min_bucket: smallest chunk-length / attention-window bucket.
      mesh: shards slots over ('data', 'fsdp') and KV heads over 'tensor';
        None runs on the default device.
      rules: logical-axis rules used with `mesh`.
      cache_dtype: KV cache dtype (default: the model's compute dtype).
    """
    config = model.config
    self.config = config
    self.num_slots = num_slots
    self.max_len = max_len
    self.method = method
    self.temperature = sampling_lib.default_temperature(method)
    self._filter = sampling_lib.static_part(method)
    self.max_stop_sequences = max_stop_sequences
    self.max_stop_len = max_stop_len
    self.min_bucket = min_bucket
    self._graphdef, self._params = nnx.split(model)
    if mesh is None:
      # A model loaded onto a mesh (e.g. by `load_hf`) brings it along: the
      # state must live there too, or each call's outputs (placed on the
      # model's mesh) would differ in sharding from the first call's inputs
      # and compile a second program.
      leaf_sharding = jax.tree.leaves(self._params)[0].sharding
      if isinstance(leaf_sharding, jax.sharding.NamedSharding):
        mesh = leaf_sharding.mesh
    self._mesh = mesh
    self._rules = sharding.normalize_rules(rules)
    self._row_parts = 1
    if mesh is not None:
      sharding.check_divisible((num_slots,), (sharding.BATCH,), self._rules,
                               mesh, 'sampler.num_slots')
      spec = sharding.logical_to_spec((sharding.BATCH,), self._rules)[0]
      self._row_parts = sharding.num_parts(mesh, spec)
    if max_len < 2:
      raise ValueError(f'sampler.max_len={max_len}: must be >= 2')
    self._key_shape = jax.random.key_data(jax.random.key(0)).shape
    init = jax.jit(functools.partial(
        decoding.init_state, config, num_slots, max_len, max_stop_sequences,
        max_stop_len, self._key_shape, cache_dtype))
    with self._mesh_context():
      self._state = init()
    self._compiles = 0
    self._slots: dict[int, _Slot] = {}
    self._finished: list[Turn] = []

  # -------------------------------------------------------------------------
  # Public API
  # -------------------------------------------------------------------------

  @property
  def free_slots(self) -> list[int]:
    return [s for s in range(self.num_slots) if s not in self._slots]

  @property
  def num_running(self) -> int:
    return sum(s.running for s in self._slots.values())

  def num_compiles(self) -> int:
    """Programs compiled by this sampler's calls (prefill + decode).

    Programs another sampler of the same shapes compiled first are reused
    and not counted.
    """
    return self._compiles

  def tokens(self, slot: int) -> list[int]:
    """The whole sequence a slot holds (prompt, sampled and injected), e.g.
    to check whether a node's new context extends it (then `extend`)."""
    return list(self._held(slot).context)

  def sequence_length(self, slot: int) -> int:
    """Tokens held in a slot: prompt, sampled and injected."""
    return self._held(slot).seq_len

  def set_params(self, model_or_params: nnx.Module | nnx.State) -> None:
    """Swaps in new weights (a new policy version) without recompiling."""
    params = (nnx.state(model_or_params)
              if isinstance(model_or_params, nnx.Module) else model_or_params)
    old = jax.tree.map(lambda x: (x.shape, x.dtype), self._params)
    new = jax.tree.map(lambda x: (x.shape, x.dtype), params)
    if old != new:
      raise ValueError('set_params: new parameters differ in structure, '
                       'shape or dtype from the sampler\'s model')
    self._params = params

  def admit(self, requests: Sequence[Request],
            slots: Sequence[int] | None = None) -> list[int]:
    """Prefills new sequences into free slots, all in one call.

    Each admitted slot has sampled its first token on return; a turn that
    already ended (stop token or budget 1) is reported by the next `decode`.

    Args:
      requests: the prompts, each with its key, budget and stop sequences.
      slots: which free slots to use (default: the lowest free ones).

    Returns:
      The slot of each request.

    Raises:
      ValueError: on an empty or too long prompt, a missing key, bad stop
        sequences or temperature, busy or unknown slots, or more requests
        than free slots.
        Nothing is changed then.
    """
    requests = list(requests)
    free = self.free_slots
    if slots is None:
      if len(requests) > len(free):
        raise ValueError(f'admit: {len(requests)} requests but only '
                         f'{len(free)} free slots')
      slots = free[:len(requests)]
    slots = [int(s) for s in slots]
    if len(slots) != len(requests):
      raise ValueError(f'admit: {len(requests)} requests for {len(slots)} '
                       'slots')
    if len(set(slots)) != len(slots):
      raise ValueError(f'admit: slots {slots} repeat a slot')
    for s in slots:
      if not 0 <= s < self.num_slots:
        raise ValueError(f'admit: slot {s} is not in [0, {self.num_slots})')
      if s in self._slots:
        raise ValueError(f'admit: slot {s} is busy; release it first')
    rows = []
    for i, (slot, req) in enumerate(zip(slots, requests)):
      where = f'admit: request {i}'
      tokens = self._check_tokens(req.tokens, where)
      if len(tokens) >= self.max_len:
        raise ValueError(f'{where}: prompt of {len(tokens)} tokens does not '
                         f'fit max_len={self.max_len} (it needs room for at '
                         'least one new token)')
      if req.key is None:
        raise ValueError(f'{where}: a key is required')
      rows.append(_PrefillRow(
          slot=slot, chunk=tokens, start=0,
          key_data=self._key_data(req.key, where),
          budget=self._check_budget(req.max_new_tokens, where),
          stops=self._stop_table(req.stop, where),
          temperature=self._temperature(req, where), find_stop=req.find_stop))
    self._run_prefill(rows)
    return slots

  def extend(self, slots: Sequence[int], requests: Sequence[Request]) -> None:
    """Appends tokens to stopped slots and starts a new turn in each.

    The slot keeps its cache: only the appended tokens (and the last sampled
    token, not yet cached) are prefilled, not the whole context.

    Raises:
      ValueError: on slots not held or still running, a slot that ended at
        max_len, tokens that do not fit, or bad stop sequences / budgets /
        temperatures.
        Nothing is changed then.
    """
    slots = [int(s) for s in slots]
    requests = list(requests)
    if len(slots) != len(requests) or len(set(slots)) != len(slots):
      raise ValueError(f'extend: slots {slots} and {len(requests)} requests '
                       'must match one to one')
    rows = []
    for slot, req in zip(slots, requests):
      where = f'extend: slot {slot}'
      held = self._held(slot, where)
      if held.running:
        raise ValueError(f'{where} is still running; wait for its turn to end')
      tokens = self._check_tokens(req.tokens, where, allow_empty=True)
      end = held.seq_len + len(tokens)
      if end >= self.max_len:
        raise ValueError(f'{where}: {held.seq_len} held + {len(tokens)} new '
                         f'tokens leave no room in max_len={self.max_len}')
      key_data = (held.key_data if req.key is None else
                  self._key_data(req.key, where))
      # The chunk starts with the last sampled token, which is not cached.
      rows.append(_PrefillRow(
          slot=slot, chunk=[held.last_token] + tokens,
          start=held.seq_len - 1, key_data=key_data,
          budget=self._check_budget(req.max_new_tokens, where),
          stops=self._stop_table(req.stop, where),
          temperature=self._temperature(req, where), find_stop=req.find_stop))
    self._run_prefill(rows)

  def decode(self, num_steps: int) -> list[Turn]:
    """Runs up to `num_steps` decode steps for all running slots.

    `num_steps` is static: use one or two fixed chunk sizes.

    Returns:
      The turns that ended since the last call (also those that ended at
      their admit/extend), by slot. Running slots are not reported.
    """
    if num_steps < 1:
      raise ValueError(f'decode: num_steps={num_steps} must be >= 1')
    running = [s for s, h in self._slots.items() if h.running]
    if running:
      longest = max(self._slots[s].seq_len for s in running)
      # Positions written here are < longest + num_steps - 1.
      window = _bucket(longest + num_steps - 1, self.min_bucket, self.max_len)
      live = np.zeros((self.num_slots,), bool)
      live[running] = True
      with self._mesh_context(), self._counting():
        self._state, outputs = _decode(
            graphdef=self._graphdef, method=self._filter, num_steps=num_steps,
            window=window, params=self._params, state=self._state,
            live_B=live)
      tokens, sampler_lp, count, reason, seq_len = jax.device_get(outputs)
      for s in running:
        held, n = self._slots[s], int(count[s])
        held.tokens.extend(tokens[s, :n].tolist())
        held.context.extend(tokens[s, :n].tolist())
        held.sampler_logprobs.extend(sampler_lp[s, :n].tolist())
        held.seq_len = int(seq_len[s])
        if n:
          held.last_token = int(tokens[s, n - 1])
        if n and self._host_stop(s):
          continue  # ended by its rule, maybe before the loop stopped it
        if reason[s] != decoding.RUNNING:
          self._finish(s, int(reason[s]))
    finished, self._finished = self._finished, []
    return finished

  def release(self, slot: int) -> None:
    """Frees a slot (running or not); its cache is overwritten by the next
    admit."""
    self._held(slot, f'release: slot {slot}')
    del self._slots[slot]
    self._finished = [t for t in self._finished if t.slot != slot]

  def suspend(self, slot: int) -> Suspended:
    """Takes a stopped sequence out of its slot, KV cache included, and
    frees the slot.

    `resume` puts it back later (into any free slot) and `extend` goes on
    from it: a sequence that must wait (e.g. an agent for its sub-agents)
    gives its slot up without losing the prefill of its context.

    Raises:
      ValueError: if the slot is not held or still running.
    """
    held = self._held(slot, f'suspend: slot {slot}')
    if held.running:
      raise ValueError(f'suspend: slot {slot} is still running')
    window = _bucket(max(held.seq_len - 1, 1), self.min_bucket, self.max_len)
    with self._mesh_context(), self._counting():
      rows = _save_rows(window=window, state=self._state, slot=np.int32(slot))
    suspended = Suspended(tuple(held.context), held.seq_len, held.last_token,
                          held.key_data, rows)
    self.release(slot)
    return suspended

  def resume(self, suspended: Suspended, slot: int) -> None:
    """Puts a suspended sequence into a free slot, stopped: `extend` it.

    Raises:
      ValueError: if the slot is not free.
    """
    if not 0 <= slot < self.num_slots or slot in self._slots:
      raise ValueError(f'resume: slot {slot} is not a free slot')
    with self._mesh_context(), self._counting():
      self._state = _restore_rows(state=self._state, rows=suspended.cache,
                                  slot=np.int32(slot))
    self._slots[slot] = _Slot(
        key_data=suspended.key_data, seq_len=suspended.seq_len,
        last_token=suspended.last_token, context=list(suspended.context),
        running=False)

  # -------------------------------------------------------------------------
  # Internals
  # -------------------------------------------------------------------------

  def _counting(self):
    return _CompileCounter(self)

  def _mesh_context(self):
    if self._mesh is None:
      return contextlib.nullcontext()
    return sharding.use_mesh(self._mesh, self._rules)

  def _held(self, slot: int, where: str | None = None) -> _Slot:
    if slot not in self._slots:
      raise ValueError(f'{where or f"slot {slot}"}: slot {slot} is not held')
    return self._slots[slot]

  def _check_tokens(self, tokens, where: str, allow_empty=False) -> list[int]:
    tokens = [int(t) for t in np.asarray(tokens, np.int64).reshape(-1)]
    if not tokens and not allow_empty:
      raise ValueError(f'{where}: empty prompt')
    bad = [t for t in tokens if not 0 <= t < self.config.vocab_size]
    if bad:
      raise ValueError(f'{where}: token ids {bad[:5]} outside the vocabulary '
                       f'[0, {self.config.vocab_size})')
    return tokens

  def _check_budget(self, budget: int, where: str) -> int:
    if not isinstance(budget, (int, np.integer)) or budget < 1:
      raise ValueError(f'{where}: max_new_tokens={budget!r} must be an int '
                       '>= 1')
    return int(budget)

  def _temperature(self, request: Request, where: str) -> float:
    if request.temperature is None:
      return self.temperature
    return sampling_lib.check_row_temperature(request.temperature, where)

  def _key_data(self, key, where: str) -> np.ndarray:
    key = jax.numpy.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(key)
    data = np.asarray(key)
    if data.shape != self._key_shape or data.dtype != np.uint32:
      raise ValueError(f'{where}: key must be one jax PRNG key (typed, or '
                       f'raw uint32 {self._key_shape}); got {data.dtype}'
                       f'{list(data.shape)}')
    return data

  def _stop_table(self, stop, where: str) -> np.ndarray:
    """Stop sequences as a right-aligned [M, L] table padded with STOP_PAD."""
    table = np.full((self.max_stop_sequences, self.max_stop_len),
                    decoding.STOP_PAD, np.int32)
    stop = list(stop)
    if len(stop) > self.max_stop_sequences:
      raise ValueError(f'{where}: {len(stop)} stop sequences, at most '
                       f'max_stop_sequences={self.max_stop_sequences}')
    for i, seq in enumerate(stop):
      seq = [seq] if isinstance(seq, (int, np.integer)) else list(seq)
      if not seq or len(seq) > self.max_stop_len:
        raise ValueError(f'{where}: stop sequence {seq} must have 1 to '
                         f'max_stop_len={self.max_stop_len} tokens')
      bad = [t for t in seq if not (isinstance(t, (int, np.integer)) and
                                    0 <= t < self.config.vocab_size)]
      if bad:
        raise ValueError(f'{where}: unknown stop token(s) {bad} (vocabulary '
                         f'is [0, {self.config.vocab_size}))')
      table[i, self.max_stop_len - len(seq):] = seq
    return table

  def _run_prefill(self, rows: Sequence[_PrefillRow]) -> None:
    """One prefill call for `rows`.

    Callers validate everything first: from here on nothing raises on bad
    input, so a rejected request never leaves a half-updated state.
    """
    n = len(rows)
    if not n:
      return
    p = _bucket(n, self._row_parts, self.num_slots)
    p = max(p, self._row_parts)
    t = _chunk_bucket(max(len(r.chunk) for r in rows), self.min_bucket,
                      self.max_len)
    end = max(r.start + len(r.chunk) for r in rows)
    window = max(t, _bucket(end, self.min_bucket, self.max_len))
    slots = np.full((p,), self.num_slots, np.int32)  # padding rows: dropped
    tokens = np.zeros((p, t), np.int32)
    start = np.zeros((p,), np.int32)
    chunk_len = np.zeros((p,), np.int32)
    keys = np.zeros((p,) + self._key_shape, np.uint32)
    budget = np.ones((p,), np.int32)
    stops = np.full((p, self.max_stop_sequences, self.max_stop_len),
                    decoding.STOP_PAD, np.int32)
    temperature = np.zeros((p,), np.float32)  # padding rows: greedy
    for i, row in enumerate(rows):
      slots[i], start[i], chunk_len[i] = row.slot, row.start, len(row.chunk)
      tokens[i, :len(row.chunk)] = row.chunk
      keys[i], budget[i] = row.key_data, row.budget
      stops[i], temperature[i] = row.stops, row.temperature
    with self._mesh_context(), self._counting():
      self._state, outputs = _prefill(
          graphdef=self._graphdef, method=self._filter, window=window,
          params=self._params, state=self._state, slots_P=slots,
          tokens_PT=tokens, start_P=start, chunk_len_P=chunk_len,
          keys_PK=keys, budget_P=budget, stops_PML=stops,
          temperature_P=temperature)
    first, sampler_lp, reason = jax.device_get(outputs)
    for i, row in enumerate(rows):
      context = self._slots[row.slot].context if row.start else []
      # An extension's chunk starts with the (already held) last token.
      context = context + row.chunk[1 if row.start else 0:] + [int(first[i])]
      self._slots[row.slot] = _Slot(
          key_data=row.key_data, seq_len=row.start + len(row.chunk) + 1,
          context=context, last_token=int(first[i]), tokens=[int(first[i])],
          sampler_logprobs=[float(sampler_lp[i])], find_stop=row.find_stop)
      if not self._host_stop(row.slot) and reason[i] != decoding.RUNNING:
        self._finish(row.slot, int(reason[i]))

  def _host_stop(self, slot: int) -> bool:
    """Applies the slot's `find_stop` rule to its turn; True if it ended
    the turn, rolled back to end at the rule's last kept token."""
    held = self._slots[slot]
    if held.find_stop is None:
      return False
    keep = held.find_stop(held.tokens, held.checked)
    if keep is None:
      held.checked = len(held.tokens)
      return False
    if not 1 <= keep <= len(held.tokens):
      raise ValueError(f'slot {slot}: find_stop kept {keep} of '
                       f'{len(held.tokens)} tokens')
    drop = len(held.tokens) - keep
    if drop:
      # The device's state still counts the dropped tokens; the host's
      # record is what the next extend / suspend / release reads.
      del held.tokens[keep:], held.context[-drop:]
      del held.sampler_logprobs[keep:]
      held.seq_len -= drop
      held.last_token = held.tokens[-1]
    self._finish(slot, decoding.STOP_SEQUENCE)
    return True

  def _finish(self, slot: int, reason: int) -> None:
    held = self._slots[slot]
    held.running = False
    self._finished.append(Turn(
        slot=slot,
        tokens=np.asarray(held.tokens, np.int32),
        sampler_logprobs=np.asarray(held.sampler_logprobs, np.float32),
        stop_reason=decoding.STOP_REASONS[reason]))


class _CompileCounter:
  """Adds the programs compiled during a call to the sampler's count."""

  def __init__(self, sampler: SlotSampler):
    self._sampler = sampler

  @staticmethod
  def _size() -> int:
    programs = (_prefill, _decode, _save_rows, _restore_rows)
    return sum(f._cache_size() for f in programs)  # pylint: disable=protected-access

  def __enter__(self):
    self._before = self._size()

  def __exit__(self, *exc):
    self._sampler._compiles += self._size() - self._before  # pylint: disable=protected-access
    return False
