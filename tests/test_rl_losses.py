"""Policy objectives against hand-computed values, log-probs, gradients."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rao_jax import testing
from rao_jax.model import config as config_lib
from rao_jax.rl import losses
from rao_jax.rl import packing
from rao_jax.sampler import sampling

# One row, two sequences: tokens 0-3 are sequence 1, 4-5 sequence 2.
_RATIO = np.array([0.5, 1.0, 1.5, 8.0, 0.5, 2.0])
_LOGP = np.array([-1.0, -2.0, -0.5, -0.1, -1.0, -0.2])
_ADV = np.array([2.0, 2.0, 2.0, 2.0, -2.0, -2.0])


def _batch(weights=1.0):
  return {
      'loss_mask': jnp.ones((1, 6), jnp.int32),
      'sampler_logprobs': jnp.asarray([_LOGP - np.log(_RATIO)], jnp.float32),
      'advantages': jnp.asarray([_ADV], jnp.float32),
      'weights': jnp.full((1, 6), weights, jnp.float32),
      'sequence_ids': jnp.asarray([[1, 1, 1, 1, 2, 2]]),
  }


def _loss(config, batch=None):
  return losses.policy_loss(jnp.asarray([_LOGP], jnp.float32),
                            batch or _batch(), config)


def test_cispo_by_hand():
  loss, metrics = _loss(losses.LossConfig(estimator='cispo', epsilon_max=5.0))
  # -clip(r, 0, 5) * A * logp per token: r=8 is clipped to 5.
  per_token = [-0.5 * 2 * -1.0, -1.0 * 2 * -2.0, -1.5 * 2 * -0.5,
               -5.0 * 2 * -0.1, -0.5 * -2 * -1.0, -2.0 * -2 * -0.2]
  assert float(loss) == pytest.approx(np.mean(per_token), rel=1e-5)
  assert float(metrics['clip_fraction']) == pytest.approx(1 / 6)
  # The ratio is under stop-gradient: d loss / d logp = -clip(r) * A / 6.
  grad = jax.grad(lambda lp: losses.policy_loss(
      lp, _batch(), losses.LossConfig())[0])(jnp.asarray([_LOGP], jnp.float32))
  np.testing.assert_allclose(
      grad[0], -np.minimum(_RATIO, 5.0) * _ADV / 6, rtol=1e-5)


def test_ppo_clips_on_both_sides_by_hand():
  config = losses.LossConfig(estimator='ppo', clip_low=0.2, clip_high=0.3)
  loss, metrics = _loss(config)
  # A > 0: min(r A, clip(r, .8, 1.3) A); A < 0 likewise.
  per_token = [
      -min(0.5 * 2, 0.8 * 2),  # r below the range, A > 0: unclipped term
      -min(1.0 * 2, 1.0 * 2),
      -min(1.5 * 2, 1.3 * 2),  # clipped high
      -min(8.0 * 2, 1.3 * 2),  # clipped high
      -min(0.5 * -2, 0.8 * -2),  # clipped low, A < 0
      -min(2.0 * -2, 1.3 * -2),  # r above the range, A < 0: unclipped
  ]
  assert float(loss) == pytest.approx(np.mean(per_token), rel=1e-5)
  # Tokens whose ratio lies outside [0.8, 1.3]: all but r = 1.0.
  assert float(metrics['clip_fraction']) == pytest.approx(5 / 6)


def test_aggregations_by_hand():
  base = dict(estimator='sft')
  token = float(_loss(losses.LossConfig(**base))[0])
  assert token == pytest.approx(-np.mean(_LOGP), rel=1e-5)
  seq = float(_loss(losses.LossConfig(**base, aggregation='sequence_mean'))[0])
  assert seq == pytest.approx(
      (-np.mean(_LOGP[:4]) - np.mean(_LOGP[4:])) / 2, rel=1e-5)
  const = float(_loss(losses.LossConfig(**base, aggregation='constant_sum',
                                        constant=10.0))[0])
  assert const == pytest.approx(-np.sum(_LOGP) / 10, rel=1e-5)


def test_depth_weights_and_mask_enter_the_loss():
  half = float(_loss(losses.LossConfig(), _batch(weights=0.5))[0])
  full = float(_loss(losses.LossConfig())[0])
  assert half == pytest.approx(full / 2, rel=1e-5)
  batch = _batch()
  batch['loss_mask'] = jnp.asarray([[1, 1, 0, 0, 0, 0]])
  masked = float(_loss(losses.LossConfig(estimator='sft'), batch)[0])
  assert masked == pytest.approx(1.5, rel=1e-5)


def test_kl_k3_by_hand():
  ref = jnp.asarray([_LOGP + 0.3], jnp.float32)
  config = losses.LossConfig(estimator='sft', kl_coef=0.5)
  loss, metrics = losses.policy_loss(jnp.asarray([_LOGP], jnp.float32),
                                     _batch(), config, ref)
  k3 = np.exp(0.3) - 0.3 - 1
  assert float(metrics['kl']) == pytest.approx(k3, rel=1e-4)
  assert float(loss) == pytest.approx(-np.mean(_LOGP) + 0.5 * k3, rel=1e-5)
  with pytest.raises(ValueError, match='reference'):
    losses.policy_loss(jnp.asarray([_LOGP]), _batch(), config)


@pytest.mark.parametrize('field, value', [
    ('estimator', 'reinforce'), ('aggregation', 'median'),
    ('epsilon_max', 0.0), ('clip_low', 1.5), ('kl_coef', -1.0)])
def test_bad_loss_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=f'rl.loss.{field}'):
    losses.LossConfig(**{field: value})


_logprobs = nnx.jit(losses.token_logprobs,
                    static_argnames=('chunk', 'temperature'))
_forward = nnx.jit(lambda m, t, p: m(t, p)[0])


def _tiny_model():
  return testing.tiny_model(
      seed=1, scale=0.1, vocab_size=128, num_layers=2,
      final_logit_softcap=15.0, sliding_window=4,
      layer_types=(config_lib.LOCAL, config_lib.GLOBAL))


def _packed(seqs, length=16):
  batches, _ = packing.pack(seqs, buckets=[length], rows_per_batch=2)
  return {k: jnp.asarray(v) for k, v in batches[0].items()}


def _seq(tokens, sampled_from):
  tokens = np.asarray(tokens)
  mask = (np.arange(len(tokens)) >= sampled_from).astype(np.int32)
  return packing.TrainSequence(tokens, mask, np.zeros(len(tokens)), 1.0, 1.0)


@pytest.mark.parametrize('temperature', [1.0, 1.7])
def test_chunked_logprobs_equal_full_log_softmax_per_sequence(temperature):
  # The reference is the sampler's own log-probs at that temperature.
  model = _tiny_model()
  rng = np.random.RandomState(0)
  seqs = [_seq(rng.randint(3, 128, n), 2) for n in (9, 5, 12)]
  batch = _packed(seqs)
  logp, entropy = _logprobs(model, batch['tokens'], batch['positions'],
                            batch['segment_ids'], chunk=4,
                            temperature=temperature)
  for index, s in enumerate(seqs):
    n = len(s)
    logits = _forward(model, jnp.asarray([s.tokens]), jnp.arange(n)[None])
    ref = sampling.Temperature(temperature).log_probs(logits[0])
    want = ref[jnp.arange(n - 1), s.tokens[1:]]
    ids = np.asarray(batch['sequence_ids'])
    r, cols = np.nonzero(ids == index + 1)
    got = np.asarray(logp)[r, cols]
    assert got[0] == 0  # nothing predicts a sequence's first token
    np.testing.assert_allclose(got[1:], want, atol=1e-5)
    p = jnp.exp(ref[:-1])
    np.testing.assert_allclose(np.asarray(entropy)[r, cols][1:],
                               -jnp.sum(p * ref[:-1], -1), atol=1e-4)


@pytest.mark.parametrize('estimator', ['ppo', 'sft'])
def test_gradient_matches_finite_differences(estimator):
  model = _tiny_model()
  rng = np.random.RandomState(2)
  seqs = [_seq(rng.randint(3, 128, n), 3) for n in (10, 6)]
  batch = _packed(seqs)
  batch['advantages'] = jnp.where(batch['sequence_ids'] == 1, 1.5, -0.7)
  # Sampler log-probs near the current ones keep PPO inside its clip range,
  # where the objective is smooth.
  logp, _ = _logprobs(model, batch['tokens'], batch['positions'],
                      batch['segment_ids'], chunk=8)
  batch['sampler_logprobs'] = logp + 0.01
  config = losses.LossConfig(estimator=estimator, logprob_chunk=8)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def loss_of(p):
    m = nnx.merge(graphdef, p, rest)
    lp, _ = losses.token_logprobs(m, batch['tokens'], batch['positions'],
                                  batch['segment_ids'], chunk=8)
    return losses.policy_loss(lp, batch, config)[0]

  grads = jax.jit(jax.grad(loss_of))(params)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  direction = jax.tree.unflatten(treedef, [
      jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  eps = 1e-3
  shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)
  numeric = (loss_of(shift(eps)) - loss_of(shift(-eps))) / (2 * eps)
  analytic = sum(jnp.vdot(g, d) for g, d in zip(
      jax.tree.leaves(grads), jax.tree.leaves(direction)))
  assert float(analytic) == pytest.approx(float(numeric), rel=2e-2, abs=1e-3)


@pytest.mark.parametrize('aggregation', losses.AGGREGATIONS)
def test_in_graph_divisor_is_the_hosts(aggregation):
  # The jitted loss's own divisor and the host's `loss_denominator` of the
  # same minibatch are one definition: equal, and so are the losses.
  config = losses.LossConfig(aggregation=aggregation, constant=7.0)
  batch = _batch()
  batch['loss_mask'] = jnp.asarray([[1, 1, 0, 1, 0, 0]], jnp.int32)
  host = losses.loss_denominator(
      [{k: np.asarray(v) for k, v in batch.items()}], config)
  assert host == {'token_mean': 3.0, 'sequence_mean': 1.0,
                  'constant_sum': 7.0}[aggregation]
  own, _ = _loss(config, batch)
  given, _ = losses.policy_loss(jnp.asarray([_LOGP], jnp.float32), batch,
                                config, denominator=host)
  assert float(own) == float(given)
