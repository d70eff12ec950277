"""The temperature as per-row data: greedy and sampled rows in one batch."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rao_jax import sampler as sampler_lib
from rao_jax import testing
from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.sampler import sampling

SLOTS = 8
MAX_LEN = 40


@pytest.fixture(scope='module')
def model():
  # A logit softcap keeps the random model's next-token distributions
  # spread out: sampled tokens then have log-probs clearly below 0.
  config = config_lib.tiny(final_logit_softcap=6.0)
  return testing.perturbed(gemma.Transformer(config, rngs=nnx.Rngs(0)),
                           seed=1, scale=0.3)


def _request(seed, length, budget, temperature=None):
  prompt = np.random.RandomState(seed).randint(3, 384, length).tolist()
  return sampler_lib.Request(prompt, jax.random.key(seed), budget,
                             temperature=temperature)


def _run(sampler, num_steps=4):
  turns = {t.slot: t for t in sampler.decode(num_steps)}
  while sampler.num_running:
    turns.update({t.slot: t for t in sampler.decode(num_steps)})
  return turns


_sample_rows = jax.jit(sampling.sample_rows, static_argnums=0)


@pytest.mark.parametrize('method', [
    sampling.Temperature(0.7),
    sampling.Temperature(1.0),
    sampling.Temperature(1.6),
    sampling.TopK(5, temperature=0.8),
    sampling.TopP(0.9, temperature=1.3),
], ids=str)
def test_rows_at_a_temperature_sample_as_the_static_method(method):
  logits = 3 * jax.random.normal(jax.random.key(0), (16, 384))
  keys = jax.random.split(jax.random.key(1), 16)
  tokens, logp = jax.jit(method.sample)(logits, keys)
  temperature = jnp.full((16,), method.temperature, jnp.float32)
  rows_tokens, rows_logp = _sample_rows(sampling.static_part(method), logits,
                                        keys, temperature)
  np.testing.assert_array_equal(rows_tokens, tokens)
  # Bit-equal on CPU; a backend may fold the division differently.
  np.testing.assert_allclose(rows_logp, logp, rtol=0, atol=1e-6)


def test_each_row_samples_at_its_own_temperature():
  logits = 3 * jax.random.normal(jax.random.key(2), (6, 384))
  keys = jax.random.split(jax.random.key(3), 6)
  temps = [0.0, 0.5, 1.0, 0.0, 2.0, 1.0]
  method = sampling.TopK(7)
  tokens, logp = _sample_rows(method, logits, keys,
                              jnp.asarray(temps, jnp.float32))
  greedy_tokens, _ = sampling.Greedy().sample(logits, None)
  for row, t in enumerate(temps):
    if t == 0:
      assert tokens[row] == greedy_tokens[row]
      assert logp[row] == 0.0
      continue
    # The row alone, through the method at its temperature.
    alone = sampling.TopK(7, temperature=t).sample(logits[row:row + 1],
                                                   keys[row:row + 1])
    assert tokens[row] == alone[0][0]
    np.testing.assert_allclose(logp[row], alone[1][0], atol=1e-6)
  assert np.all(np.asarray(logp)[np.asarray(temps) > 0] < 0)


def test_a_mixed_batch_gives_each_row_what_its_own_kind_gives(model):
  greedy = [_request(i, 3 + 4 * i, 9) for i in range(3)]
  sampled = [_request(10 + i, 5 + 3 * i, 9) for i in range(3)]
  only_greedy = sampler_lib.SlotSampler(model, num_slots=SLOTS,
                                        max_len=MAX_LEN,
                                        method=sampling.Greedy())
  greedy_slots = only_greedy.admit(greedy)
  greedy_turns = _run(only_greedy)
  only_sampled = sampler_lib.SlotSampler(model, num_slots=SLOTS,
                                         max_len=MAX_LEN,
                                         method=sampling.Temperature(0.7))
  sampled_slots = only_sampled.admit(sampled)
  sampled_turns = _run(only_sampled)

  # One sampler of another default: each request names its temperature.
  mixed = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN,
                                  method=sampling.Temperature(1.0))
  interleaved = [r for pair in zip(greedy, sampled) for r in pair]
  temps = [0.0, 0.7] * 3
  slots = mixed.admit([
      sampler_lib.Request(r.tokens, r.key, r.max_new_tokens, temperature=t)
      for r, t in zip(interleaved, temps)])
  turns = _run(mixed)
  expected = [turn for pair in zip(
      [greedy_turns[s] for s in greedy_slots],
      [sampled_turns[s] for s in sampled_slots]) for turn in pair]
  for slot, t, want in zip(slots, temps, expected):
    got = turns[slot]
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.sampler_logprobs, want.sampler_logprobs,
                               atol=1e-5)
    if t == 0:
      np.testing.assert_array_equal(got.sampler_logprobs, 0.0)
    else:
      assert np.all(got.sampler_logprobs < 0)
  # A slot's next turn may run at another temperature: a greedy sequence
  # goes on sampled, as it would have in a sampled sampler.
  mixed.extend([slots[0]], [sampler_lib.Request([7, 8], None, 6,
                                                temperature=0.7)])
  only_sampled.admit([sampler_lib.Request(
      list(greedy[0].tokens) + turns[slots[0]].tokens.tolist() + [7, 8],
      greedy[0].key, 6)], slots=[7])
  np.testing.assert_array_equal(_run(mixed)[slots[0]].tokens,
                                _run(only_sampled)[7].tokens)


def test_programs_do_not_depend_on_the_temperature(model):
  # A max_len no other test uses: this sampler compiles its own programs
  # (programs are shared by samplers of one shape), so its count sees them.
  max_len = 44
  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=max_len,
                                    method=sampling.Temperature(1.0))

  def workload(temperatures):
    # Two 5-token prompts (one 16-long chunk, window 16) and a budget of 4
    # tokens, all decoded by one chunk of 4 steps (window 16).
    slots = sampler.admit([_request(20 + i, 5, 4, t)
                           for i, t in enumerate(temperatures)])
    turns = sampler.decode(4)
    assert sorted(t.slot for t in turns) == slots
    for slot in slots:
      sampler.release(slot)

  workload([1.0, 1.0])
  assert sampler.num_compiles() == 2  # one prefill, one decode
  for temperatures in ([0.0, 0.0], [0.0, 0.5], [2.0, 0.0], [None, 0.3]):
    workload(temperatures)
  assert sampler.num_compiles() == 2
  # A greedy sampler of the same shapes reuses those programs too.
  greedy = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=max_len,
                                   method=sampling.Greedy())
  greedy.admit([_request(30, 5, 4), _request(31, 5, 4)])
  greedy.decode(4)
  assert greedy.num_compiles() == 0


def test_a_bad_temperature_names_the_request(model):
  sampler = sampler_lib.SlotSampler(model, num_slots=SLOTS, max_len=MAX_LEN)
  assert sampler.temperature == 0.0  # Greedy's rows
  for bad in (-0.5, float('nan'), float('inf'), '1.0', True):
    with pytest.raises(ValueError, match=r'admit: request 1: temperature='):
      sampler.admit([_request(40, 5, 4), _request(41, 5, 4, bad)])
  assert sampler.free_slots == list(range(SLOTS))  # nothing admitted
  (slot,) = sampler.admit([_request(42, 5, 4)])
  _run(sampler)
  with pytest.raises(ValueError, match=rf'extend: slot {slot}: temperature'):
    sampler.extend([slot], [sampler_lib.Request([5], None, 4,
                                                temperature=-1.0)])
  with pytest.raises(ValueError, match='must be > 0'):
    sampling.Temperature(0.0)  # a method's temperature: use Greedy()
