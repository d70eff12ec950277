"""The slot sampler against the teacher-forced full forward pass (no cache)."""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rao_jax import sampler as sampler_lib
from rao_jax import testing
from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.model import sharding
from rao_jax.sampler import sampling

MAX_LEN = 64
SLOTS = 8


def _config():
  # A sliding window shorter than the sequences exercises the local layers.
  return config_lib.tiny(sliding_window=7, final_logit_softcap=6.0)


@pytest.fixture(scope='module')
def model():
  return testing.perturbed(gemma.Transformer(_config(), rngs=nnx.Rngs(0)),
                           seed=1, scale=0.3)


@functools.partial(jax.jit, static_argnums=0)
def _full_log_softmax(graphdef, params, tokens_1L, length):
  """Next-token log-probs `[L, V]` of a whole padded sequence, no cache."""
  model = nnx.merge(graphdef, params)
  positions = jnp.arange(tokens_1L.shape[1])[None]
  segments = (positions < length).astype(jnp.int32)
  logits, _ = model(tokens_1L, positions, segments)
  return jax.nn.log_softmax(logits[0], axis=-1)


def _log_softmax_at(model, tokens):
  """Model log-probs `[len(tokens), V]` of the next token at each position."""
  graphdef, params = nnx.split(model)
  padded = np.zeros((1, MAX_LEN), np.int32)
  padded[0, :len(tokens)] = tokens
  # Cut on the host: a device slice per length would compile per length.
  return np.asarray(_full_log_softmax(graphdef, params, jnp.asarray(padded),
                                      len(tokens)))[:len(tokens)]


def _greedy_reference(model, prompt, num_new):
  """Argmax decoding with the full forward pass re-run for every token."""
  tokens = list(prompt)
  for _ in range(num_new):
    tokens.append(int(np.argmax(_log_softmax_at(model, tokens)[-1])))
  return tokens[len(prompt):]


def _prompt(seed, length):
  return np.random.RandomState(seed).randint(3, 384, length).tolist()


def _request(seed, length, budget, stop=()):
  return sampler_lib.Request(_prompt(seed, length), jax.random.key(seed),
                             budget, stop)


def _run(sampler, num_steps=4):
  """Decodes until no slot runs; returns every finished turn by slot."""
  turns = {t.slot: t for t in sampler.decode(num_steps)}
  while sampler.num_running:
    turns.update({t.slot: t for t in sampler.decode(num_steps)})
  return turns


def _check_against_forward(model, prompt, turn, method):
  """Tokens in order, sampler log-probs equal the full forward's under
  `method`."""
  logp = _log_softmax_at(model, list(prompt) + turn.tokens.tolist())
  steps = np.arange(len(prompt) - 1, len(prompt) - 1 + len(turn.tokens))
  # log_softmax is shift-invariant: log-probs serve as logits. Padded to
  # MAX_LEN rows: one program a method, not one a length.
  rows = np.zeros((MAX_LEN, logp.shape[1]), logp.dtype)
  rows[:len(steps)] = logp[steps]
  dist = np.asarray(method.log_probs(jnp.asarray(rows)))[:len(steps)]
  np.testing.assert_allclose(turn.sampler_logprobs,
                             dist[np.arange(len(steps)), turn.tokens],
                             atol=2e-4)


def test_greedy_equals_full_forward_across_slots_and_times(model):
  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN)
  requests = {i: _request(i, length, budget) for i, (length, budget) in
              enumerate([(5, 12), (17, 9), (1, 20), (30, 6), (9, 15)])}
  slot_of = {}
  turns = {}
  # Different lengths, admitted at different times into scattered slots,
  # one slot reused after a release.
  slot_of.update(zip([0, 1], sampler.admit([requests[0], requests[1]],
                                           slots=[5, 2])))
  turns.update({t.slot: t for t in sampler.decode(4)})
  slot_of[2] = sampler.admit([requests[2]], slots=[7])[0]
  turns.update({t.slot: t for t in sampler.decode(3)})
  turns.update(_run(sampler))
  by_request = {i: turns[s] for i, s in slot_of.items()}
  sampler.release(slot_of[1])
  slot_of[3], slot_of[4] = sampler.admit([requests[3], requests[4]],
                                         slots=[2, 0])
  turns = _run(sampler)
  by_request.update({i: turns[slot_of[i]] for i in (3, 4)})

  for i, req in requests.items():
    turn = by_request[i]
    assert turn.stop_reason == 'budget'
    expected = _greedy_reference(model, req.tokens, req.max_new_tokens)
    assert turn.tokens.tolist() == expected, i
    _check_against_forward(model, req.tokens, turn, sampling.Greedy())
    np.testing.assert_array_equal(turn.sampler_logprobs, 0.0)


def test_extend_appends_to_the_slot(model):
  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN)
  prompt = _prompt(3, 8)
  (slot,) = sampler.admit([sampler_lib.Request(prompt, jax.random.key(0), 5)])
  first = _run(sampler)[slot]
  injected = _prompt(4, 6)
  sampler.extend([slot], [sampler_lib.Request(injected, None, 7)])
  second = _run(sampler)[slot]
  context = prompt + first.tokens.tolist() + injected
  assert second.tokens.tolist() == _greedy_reference(model, context, 7)
  _check_against_forward(model, context, second, sampling.Greedy())
  assert sampler.sequence_length(slot) == len(context) + 7
  assert sampler.tokens(slot) == context + second.tokens.tolist()
  # An extension with nothing injected continues the same sequence.
  sampler.extend([slot], [sampler_lib.Request([], None, 3)])
  third = _run(sampler)[slot]
  context += second.tokens.tolist()
  assert third.tokens.tolist() == _greedy_reference(model, context, 3)


def test_suspend_and_resume_into_another_slot(model):
  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN)
  prompt = _prompt(5, 11)
  (slot,) = sampler.admit([sampler_lib.Request(prompt, jax.random.key(0), 6)],
                          slots=[3])
  first = _run(sampler)[slot]
  suspended = sampler.suspend(slot)
  assert slot in sampler.free_slots
  context = prompt + first.tokens.tolist()
  assert suspended.context == tuple(context)
  # Other sequences overwrite the slot's cache meanwhile.
  sampler.admit([_request(6, 20, 4)], slots=[3])
  _run(sampler)
  sampler.resume(suspended, 6)
  with pytest.raises(ValueError, match='not a free slot'):
    sampler.resume(suspended, 6)
  injected = _prompt(7, 5)
  sampler.extend([6], [sampler_lib.Request(injected, None, 8)])
  second = _run(sampler)[6]
  context += injected
  assert second.tokens.tolist() == _greedy_reference(model, context, 8)
  _check_against_forward(model, context, second, sampling.Greedy())
  assert sampler.tokens(6) == context + second.tokens.tolist()
  with pytest.raises(ValueError, match='not held'):
    sampler.suspend(1)


@pytest.mark.parametrize('method', [
    # Top-p runs temperature and a truncated distribution: the quick case.
    pytest.param(sampling.Temperature(0.8), marks=pytest.mark.slow),
    pytest.param(sampling.TopK(5, temperature=1.3), marks=pytest.mark.slow),
    sampling.TopP(0.7, temperature=1.1),
], ids=['temperature', 'top_k', 'top_p'])
def test_samples_do_not_depend_on_slot_or_neighbours(model, method):
  target = _request(11, 7, 14)
  alone = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN,
                                  method=method)
  alone.admit([target], slots=[0])
  reference = _run(alone)[0]

  crowded = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN,
                                    method=method)
  crowded.admit([_request(20 + i, 3 + 4 * i, 30) for i in range(3)],
                slots=[1, 6, 2])
  crowded.decode(4)
  crowded.admit([target, _request(30, 11, 30)], slots=[5, 0])
  turn = _run(crowded)[5]
  np.testing.assert_array_equal(turn.tokens, reference.tokens)
  np.testing.assert_allclose(turn.sampler_logprobs,
                             reference.sampler_logprobs, atol=1e-5)
  _check_against_forward(model, target.tokens, turn, method)
  # Another key gives another sample (the key is really used).
  other = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN,
                                  method=method)
  other.admit([sampler_lib.Request(target.tokens, jax.random.key(99), 14)])
  assert _run(other)[0].tokens.tolist() != reference.tokens.tolist()


def _empirical(method, logits_V, num):
  keys = jax.random.split(jax.random.key(0), num)
  logits_NV = jnp.broadcast_to(logits_V, (num, logits_V.shape[0]))
  tokens, logp = jax.jit(method.sample)(logits_NV, keys)
  return np.asarray(tokens), np.asarray(logp)


@pytest.mark.parametrize('method', [
    sampling.Temperature(0.7),
    sampling.TopK(3),
    sampling.TopK(2, temperature=2.0),
    sampling.TopP(0.6),
    sampling.TopP(0.9, temperature=0.5),
], ids=str)
def test_sampling_distributions(method):
  logits = np.array([2.0, 1.5, 0.3, -0.2, 1.0, -3.0], np.float32)
  # The distribution each method should sample from, in plain NumPy.
  scaled = logits / method.temperature
  order = np.argsort(-scaled)
  keep = np.ones(6, bool)
  if isinstance(method, sampling.TopK):
    keep[:] = False
    keep[order[:method.k]] = True
  if isinstance(method, sampling.TopP):
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    before = np.cumsum(probs[order]) - probs[order]
    keep[:] = False
    keep[order[before < method.p]] = True
  expected = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
  expected /= expected.sum()

  dist = np.exp(np.asarray(method.log_probs(jnp.asarray(logits)[None]))[0])
  np.testing.assert_allclose(dist, expected, atol=1e-6)
  num = 20_000
  tokens, logp = _empirical(method, jnp.asarray(logits), num)
  freq = np.bincount(tokens, minlength=6) / num
  # 4.5 standard errors: fails on a wrong distribution, not by chance.
  tolerance = 4.5 * np.sqrt(expected * (1 - expected) / num) + 1e-9
  assert np.all(np.abs(freq - expected) <= tolerance), (freq, expected)
  np.testing.assert_allclose(logp, np.log(expected[tokens]), atol=1e-5)


def test_greedy_distribution_is_a_point_mass():
  logits = jnp.asarray([[0.1, 3.0, -1.0], [2.0, 0.0, 1.9]])
  tokens, logp = sampling.Greedy().sample(logits, None)
  assert tokens.tolist() == [1, 0]
  np.testing.assert_array_equal(logp, 0.0)
  probs = np.exp(np.asarray(sampling.Greedy().log_probs(logits)))
  np.testing.assert_array_equal(probs, [[0, 1, 0], [1, 0, 0]])


def test_stop_sequences_budget_and_max_len(model):
  prompts = [_prompt(40 + i, 6) for i in range(3)]
  free_run = [_greedy_reference(model, p, 20) for p in prompts]
  # A single stop token and a two-token stop sequence, both taken from the
  # greedy continuation, so the expected stop point is known.
  stop_token = free_run[0][6]
  pair = free_run[1][9:11]
  unused = next(t for t in range(3, 384) if t not in free_run[1])
  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN)
  slots = sampler.admit([
      sampler_lib.Request(prompts[0], jax.random.key(0), 20, [stop_token]),
      sampler_lib.Request(prompts[1], jax.random.key(0), 20, [pair, unused]),
      sampler_lib.Request(_prompt(43, MAX_LEN - 4), jax.random.key(0), 20),
  ])
  turns = _run(sampler)
  first = turns[slots[0]]
  assert first.stop_reason == 'stop'
  assert first.tokens.tolist() == free_run[0][:free_run[0].index(stop_token)
                                              + 1]
  second = turns[slots[1]].tokens.tolist()
  end = next(i + 2 for i in range(19) if free_run[1][i:i + 2] == pair)
  assert turns[slots[1]].stop_reason == 'stop'
  assert second == free_run[1][:end]
  assert turns[slots[2]].stop_reason == 'max_len'
  assert len(turns[slots[2]].tokens) == 4
  with pytest.raises(ValueError, match='no room'):
    sampler.extend([slots[2]], [sampler_lib.Request([], None, 1)])


def test_compiles_are_bounded_and_stable(model):
  # A max_len no other test uses: programs are shared between samplers of
  # the same shapes, and this one must compile its own.
  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=48)

  def workload(seed):
    # Two admissions of 1-2 prompts of lengths within one bucket, fixed
    # chunk size: the same shapes every round, whatever the token values.
    sampler.admit([_request(seed, 5, 10), _request(seed + 1, 12, 10)])
    sampler.decode(8)
    sampler.admit([_request(seed + 2, 3, 10)])
    turns = _run(sampler, num_steps=8)
    for slot in list(turns):
      sampler.release(slot)
    for t in sampler.decode(8):
      sampler.release(t.slot)

  workload(0)
  warm = sampler.num_compiles()
  # Prefill: (2 rows, 16), (1 row, 16); decode: windows 16 and 32.
  assert 2 <= warm <= 5
  for seed in (10, 20, 30):
    workload(seed)
  assert sampler.num_compiles() == warm
  # New weights of the same shapes: still no recompile.
  sampler.set_params(testing.perturbed(
      gemma.Transformer(_config(), rngs=nnx.Rngs(5)), seed=6, scale=0.3))
  workload(40)
  assert sampler.num_compiles() == warm
  with pytest.raises(ValueError, match='differ'):
    sampler.set_params(gemma.Transformer(_config().replace(mlp_dim=256),
                                         rngs=nnx.Rngs(0)))


def test_bad_input_leaves_other_slots_intact(model):
  requests = [_request(50, 9, 12), _request(51, 4, 12)]
  clean = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN)
  clean_slots = clean.admit(requests)
  clean.decode(4)
  expected = _run(clean)

  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN)
  slots = sampler.admit(requests)
  assert slots == clean_slots
  sampler.decode(4)
  key = jax.random.key(0)
  bad = [
      ('empty prompt', lambda: sampler.admit(
          [sampler_lib.Request([], key, 4)])),
      ('does not fit', lambda: sampler.admit(
          [sampler_lib.Request([5] * MAX_LEN, key, 4)])),
      ('free slots', lambda: sampler.admit(
          [_request(i, 3, 4) for i in range(SLOTS - 1)])),
      ('unknown stop', lambda: sampler.admit(
          [sampler_lib.Request([5], key, 4, stop=[384])])),
      ('unknown stop', lambda: sampler.admit(
          [sampler_lib.Request([5], key, 4, stop=[[7, -1]])])),
      ('busy', lambda: sampler.admit([_request(1, 3, 4)], slots=[slots[0]])),
      ('outside the vocabulary', lambda: sampler.admit(
          [sampler_lib.Request([5, 400], key, 4)])),
      ('max_new_tokens', lambda: sampler.admit(
          [sampler_lib.Request([5], key, 0)])),
      ('still running', lambda: sampler.extend(
          [slots[0]], [sampler_lib.Request([5], None, 4)])),
      ('not held', lambda: sampler.release(7)),
  ]
  for match, call in bad:
    with pytest.raises(ValueError, match=match):
      call()
  assert sampler.free_slots == [s for s in range(SLOTS) if s not in slots]
  got = _run(sampler)
  for slot in slots:
    np.testing.assert_array_equal(got[slot].tokens, expected[slot].tokens)


def test_sharded_equals_unsharded(model):
  mesh = sharding.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  requests = [_request(60 + i, 3 + 5 * i, 10) for i in range(5)]
  method = sampling.TopK(8, temperature=0.9)

  def run(sampler):
    slots = sampler.admit(requests[:3], slots=[0, 3, 6])
    sampler.decode(4)
    slots += sampler.admit(requests[3:], slots=[1, 4])
    turns = _run(sampler)
    return [turns[s] for s in slots]

  plain = run(sampler_lib.SlotSampler(model, num_slots=SLOTS,
                                      max_len=MAX_LEN, method=method))
  sharded_sampler = sampler_lib.SlotSampler(
      model, num_slots=SLOTS, max_len=MAX_LEN, method=method, mesh=mesh)
  sharded = run(sharded_sampler)
  k_cache = sharded_sampler._state.cache[0].k  # pylint: disable=protected-access
  assert k_cache.sharding.spec[0] == ('data', 'fsdp')
  assert k_cache.sharding.spec[1] == 'tensor'  # [B, K, S, H]
  assert len(k_cache.sharding.device_set) == 8
  for a, b in zip(plain, sharded):
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.sampler_logprobs, b.sampler_logprobs,
                               atol=1e-4)
