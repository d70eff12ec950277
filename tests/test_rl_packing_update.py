"""Packing into fixed buckets, and the jitted update on packed batches."""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.rl import losses
from rao_jax.rl import packing
from rao_jax.rl import update


def _seq(n, advantage=1.0, start=0):
  tokens = np.arange(start, start + n) % 120 + 3
  return packing.TrainSequence(tokens, np.ones(n, np.int32), np.zeros(n),
                               advantage, 1.0)


def test_first_fit_decreasing_by_hand():
  rows = packing.first_fit_decreasing([5, 9, 3, 7, 2], row_length=10)
  # 9 -> row0 (1 left); 7 -> row1 (3 left); 5 -> row2 (5 left);
  # 3 -> row1 (0 left); 2 -> row2 (3 left).
  assert rows == [[1], [3, 2], [0, 4]]
  with pytest.raises(ValueError, match='11 tokens'):
    packing.first_fit_decreasing([11], row_length=10)


def test_pack_fields_segments_and_padding():
  seqs = [_seq(n, advantage=float(i), start=10 * i)
          for i, n in enumerate([5, 9, 3, 7, 2])]
  batches, stats = packing.pack(seqs, buckets=[8, 16, 32], rows_per_batch=2)
  assert stats.row_length == 16
  assert [b['tokens'].shape for b in batches] == [(2, 16)]
  ids = np.concatenate([b['sequence_ids'] for b in batches])
  seg = np.concatenate([b['segment_ids'] for b in batches])
  pos = np.concatenate([b['positions'] for b in batches])
  adv = np.concatenate([b['advantages'] for b in batches])
  tok = np.concatenate([b['tokens'] for b in batches])
  for i, s in enumerate(seqs):
    where = ids == i + 1
    assert where.sum() == len(s)
    np.testing.assert_array_equal(tok[where], s.tokens)
    np.testing.assert_array_equal(pos[where], np.arange(len(s)))
    assert np.all(adv[where] == i)
    assert len(np.unique(seg[where])) == 1  # one segment within one row
  assert np.all(seg[ids == 0] == 0)
  assert stats.padding_fraction == pytest.approx(1 - 26 / 32)


def test_pack_pads_to_whole_minibatches_and_refuses_overflow():
  batches, stats = packing.pack([_seq(8) for _ in range(5)], buckets=[8],
                                rows_per_batch=2)
  assert len(batches) == 3 and stats.num_rows == 5
  assert batches[-1]['loss_mask'][1].sum() == 0  # the padding row
  with pytest.raises(ValueError, match='largest packing bucket 8'):
    packing.pack([_seq(9)], buckets=[8], rows_per_batch=1)


def test_shuffled_rows_mix_long_and_short_sequences_across_minibatches():
  # Ten 12-token and twenty 4-token sequences in rows of 12: first-fit
  # decreasing gives ten rows of one long sequence, then rows of three
  # short ones; unshuffled, the first minibatches hold long ones only.
  seqs = ([_seq(12, start=i) for i in range(10)] +
          [_seq(4, start=50 + i) for i in range(21)])
  plain, _ = packing.pack(seqs, buckets=[12], rows_per_batch=4)
  shuffled, stats = packing.pack(seqs, buckets=[12], rows_per_batch=4,
                                 rng=np.random.default_rng(0))
  assert stats.num_rows == 17
  # The same rows, every sequence once, only in another order.
  rows = lambda bs: sorted(tuple(r) for b in bs for r in b['sequence_ids'])
  assert rows(plain) == rows(shuffled)

  def mixed(batches):  # minibatches holding both a long and a short row
    kinds = [set(b['segment_ids'].max(axis=1)) for b in batches]
    return sum({1, 3} <= k for k in kinds)

  assert mixed(plain) == 1  # only where the long rows end
  assert mixed(shuffled) >= 3
  again, _ = packing.pack(seqs, buckets=[12], rows_per_batch=4,
                          rng=np.random.default_rng(0))
  for a, b in zip(again, shuffled):  # a seed packs alike (exact resume)
    np.testing.assert_array_equal(a['tokens'], b['tokens'])


def _model():
  cfg = config_lib.tiny(vocab_size=128, num_layers=2,
                        layer_types=(config_lib.LOCAL, config_lib.GLOBAL),
                        sliding_window=8)
  return gemma.Transformer(cfg, rngs=nnx.Rngs(0))


def _jnp(batch):
  return {k: jnp.asarray(v) for k, v in batch.items()}


def test_sft_updates_fit_a_fixed_batch_without_recompiling():
  model = _model()
  optimizer = nnx.Optimizer(model, update.make_optimizer(update.OptimConfig(
      learning_rate=3e-3, warmup_steps=1, weight_decay=0.0)), wrt=nnx.Param)
  seqs = [_seq(n, start=7 * n) for n in (12, 9, 14, 5)]
  batches, _ = packing.pack(seqs, buckets=[16], rows_per_batch=4)
  config = losses.LossConfig(estimator='sft', logprob_chunk=8)
  graphdef, state = update.split_train_state(model, optimizer)
  compiled_before = update.train_step._cache_size()  # pylint: disable=protected-access
  losses_seen = []
  for _ in range(12):
    state, metrics = update.train_step(graphdef, state, _jnp(batches[0]),
                                       config, 3e-3)
    losses_seen.append(float(metrics['loss']))
  model, optimizer = nnx.merge(graphdef, state)
  assert losses_seen[-1] < 0.5 * losses_seen[0]
  assert update.nonfinite_counts(optimizer) == (0, 0)
  # One program for one bucket shape, whatever the step.
  assert update.train_step._cache_size() - compiled_before == 1  # pylint: disable=protected-access


def test_nonfinite_update_is_skipped_and_counted():
  model = _model()
  optimizer = nnx.Optimizer(model, update.make_optimizer(update.OptimConfig(
      learning_rate=1e-3)), wrt=nnx.Param)
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  batches, _ = packing.pack([_seq(10, advantage=float('nan'))], buckets=[16],
                            rows_per_batch=1)
  config = losses.LossConfig(estimator='cispo', logprob_chunk=8)
  graphdef, state = update.split_train_state(model, optimizer)
  for _ in range(2):
    state, _ = update.train_step(graphdef, state, _jnp(batches[0]), config,
                                 1e-3)
  model, optimizer = nnx.merge(graphdef, state)
  after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
  assert update.nonfinite_counts(optimizer) == (2, 2)


@pytest.mark.parametrize('name', ['adamw', 'sgd'])
def test_optimizer_is_optax_at_the_given_learning_rate(name):
  # The trainer hands each update its step's rate; with a fixed rate the
  # updates must be optax's clipped AdamW (or SGD with momentum and
  # decoupled decay), step for step.
  optim = update.OptimConfig(optimizer=name, learning_rate=2e-3,
                             weight_decay=0.1, grad_clip=0.5)
  if name == 'adamw':
    inner = optax.adamw(optim.learning_rate, b1=optim.b1, b2=optim.b2,
                        eps=optim.eps, weight_decay=optim.weight_decay)
  else:
    inner = optax.chain(optax.trace(decay=optim.b1),
                        optax.add_decayed_weights(optim.weight_decay),
                        optax.scale(-optim.learning_rate))
  reference = optax.chain(optax.clip_by_global_norm(optim.grad_clip), inner)
  ours = update.make_optimizer(optim)
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
  ours_state, ref_state = ours.init(params), reference.init(params)
  for _ in range(3):
    grads = {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    got, ours_state = ours.update(grads, ours_state, params,
                                  learning_rate=optim.learning_rate)
    want, ref_state = reference.update(grads, ref_state, params)
    np.testing.assert_allclose(got['w'], want['w'], rtol=1e-6, atol=1e-9)
    params = optax.apply_updates(params, want)


def test_first_minibatch_ratio_is_one_with_sampler_logprobs():
  model = _model()
  seqs = [_seq(11), _seq(6, start=50)]
  batch = _jnp(packing.pack(seqs, buckets=[16], rows_per_batch=2)[0][0])
  logp, _ = nnx.jit(losses.token_logprobs, static_argnames='chunk')(
      model, batch['tokens'], batch['positions'], batch['segment_ids'],
      chunk=8)
  batch['sampler_logprobs'] = logp
  _, metrics = losses.policy_loss(logp, batch, losses.LossConfig())
  assert float(metrics['ratio_mean']) == pytest.approx(1.0, abs=1e-6)
  assert float(metrics['logprob_mismatch']) < 1e-6


def test_bad_optim_config_names_the_field():
  with pytest.raises(ValueError, match='optim.learning_rate'):
    update.OptimConfig(learning_rate=0)
  with pytest.raises(ValueError, match='optim.b2'):
    update.OptimConfig(b2=1.0)
  with pytest.raises(ValueError, match='optim.optimizer'):
    update.OptimConfig(optimizer='lion')


@pytest.mark.parametrize('warmup, decay', [(0, 0), (0, 10), (4, 0), (4, 10)])
def test_schedule_warms_up_only_when_asked(warmup, decay):
  schedule = update.learning_rate_schedule(update.OptimConfig(
      learning_rate=1e-3, warmup_steps=warmup, decay_steps=decay))
  # Without warm-up the very first update already moves the parameters.
  assert float(schedule(0)) == pytest.approx(0.0 if warmup else 1e-3)
  assert float(schedule(warmup)) == pytest.approx(1e-3)
  if decay:
    assert float(schedule(warmup + decay)) == pytest.approx(1e-4)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _whole_batch_gradient(graphdef, state, batch, config):
  """The reference: the gradient and loss of one minibatch holding every
  row, taken directly (jitted: eagerly each op compiles on its own)."""
  model = nnx.merge(graphdef, state)[0]
  (loss, _), grads = nnx.value_and_grad(update.loss_and_metrics,
                                        has_aux=True)(model, batch, config)
  return grads, loss


# constant_sum adds up with any split; the other two need the shared
# denominator.
@pytest.mark.parametrize('aggregation', ['token_mean', 'sequence_mean'])
def test_accumulated_minibatches_update_as_one_batch(aggregation):
  # Three one-row minibatches accumulated with their shared denominator give
  # the gradient, loss and update of one minibatch holding all three rows.
  model = _model()
  seqs = [_seq(n, advantage=a, start=9 * i) for i, (n, a) in
          enumerate([(13, 0.7), (9, -1.2), (15, 0.4), (6, 1.5)])]
  seqs = [packing.TrainSequence(s.tokens, s.loss_mask,
                                np.full(len(s), -0.5), s.advantage, s.weight)
          for s in seqs]
  config = losses.LossConfig(estimator='cispo', aggregation=aggregation,
                             constant=50.0, logprob_chunk=8)
  whole, _ = packing.pack(seqs, buckets=[16], rows_per_batch=3)
  parts, _ = packing.pack(seqs, buckets=[16], rows_per_batch=1)
  assert len(whole) == 1 and len(parts) == 3
  optimizer = nnx.Optimizer(model, update.make_optimizer(update.OptimConfig(
      learning_rate=1e-2, weight_decay=0.0)), wrt=nnx.Param)
  graphdef, state = update.split_train_state(model, optimizer)

  denominator = losses.loss_denominator(parts, config)
  grads = update.zero_grads(graphdef, state)
  compiled_before = update.accumulate_grads._cache_size()  # pylint: disable=protected-access
  loss = 0.0
  for batch in parts:
    grads, metrics = update.accumulate_grads(graphdef, state, _jnp(batch),
                                             config, denominator, grads)
    loss += float(metrics['loss'])
  # One program for one bucket shape, whatever the minibatch.
  assert update.accumulate_grads._cache_size() - compiled_before == 1  # pylint: disable=protected-access
  want, want_loss = _whole_batch_gradient(graphdef, state, _jnp(whole[0]),
                                          config)
  assert loss == pytest.approx(float(want_loss), rel=1e-5)
  for got_leaf, want_leaf in zip(jax.tree.leaves(grads),
                                 jax.tree.leaves(want)):
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=1e-7)
  assert float(optax.tree.norm(want)) > 0

  # The update equals train_step's on the whole minibatch (both donate
  # their state: each gets its own copy).
  copy = jax.tree.map(jnp.copy, state)
  accumulated, _ = update.apply_grads(graphdef, state, grads, 1e-2)
  single, _ = update.train_step(graphdef, copy, _jnp(whole[0]), config, 1e-2)
  for a, b in zip(jax.tree.leaves(nnx.state(nnx.merge(graphdef, accumulated)[0],
                                            nnx.Param)),
                  jax.tree.leaves(nnx.state(nnx.merge(graphdef, single)[0],
                                            nnx.Param))):
    # Adam's first step divides by |g|: float error in tiny gradients shows.
    np.testing.assert_allclose(a, b, atol=2e-4)
