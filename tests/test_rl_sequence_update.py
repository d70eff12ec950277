"""The update over a step's node sequences: skipping, rescaling, passes."""

import dataclasses

from flax import nnx
import jax
import numpy as np
import pytest

from configs import cpu_tiny
from rao_jax import config as config_lib
from rao_jax.training import phases as phases_lib
from rao_jax.training import setup as setup_lib
from rao_jax.training import train_state
from rao_jax.model import params as params_lib
from rao_jax.rl import packing
from rao_jax.rl import sequence_update


def _rl_phase(**rl_overrides):
  config = cpu_tiny.get_config('smoke')
  for name, value in rl_overrides.items():
    config.rl[name] = value
  return config


def _sequences(vocab_size, advantage_of):
  rng = np.random.default_rng(0)
  sequences = []
  for i in range(16):
    n = int(rng.integers(60, 250))
    mask = (np.arange(n) >= n // 3).astype(np.int32)  # prompt, then output
    sequences.append(packing.TrainSequence(
        rng.integers(3, vocab_size, n).astype(np.int32), mask,
        np.where(mask, -2.0, 0.0).astype(np.float32),
        advantage=advantage_of(i, rng), weight=float(rng.uniform(0.5, 2.0))))
  return sequences


@pytest.mark.parametrize('aggregation', ['token_mean', 'sequence_mean'])
def test_skipping_zero_advantages_keeps_the_update(aggregation):
  # With one update a pass, leaving out the sequences whose advantage is 0
  # gives the update of the whole batch: their terms are 0 and the divisor
  # still counts them. SGD, whose step scales with the gradient, so a wrong
  # divisor would show (Adam would normalise it away).
  config = _rl_phase(skip_zero_advantage=True, updates_per_pass=1,
                     rows_per_batch=8)
  config.rl.loss.aggregation = aggregation
  config.optim.optimizer = 'sgd'
  run_config = config_lib.from_config_dict(config)
  s = setup_lib.setup(run_config)
  rl_phase = phases_lib.phases(run_config, ('sft', 'rl'))[-1]
  sequences = _sequences(
      run_config.model.vocab_size,
      lambda i, rng: 0.0 if i % 2 else float(rng.normal()))

  def updated(skip, sequences=sequences):
    settings = dataclasses.replace(rl_phase.update, skip_zero_advantage=skip)
    model = params_lib.create_model(run_config.model, s.mesh, s.rules, seed=0)
    fresh = train_state.fresh(model, rl_phase.optim, s.mesh, s.rules)
    graphdef, state = fresh.graphdef, fresh.arrays
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    state, metrics = sequence_update.update_on_sequences(
        graphdef, state, sequences, settings, 0.5, mesh=s.mesh,
        rules=s.rules, rng=np.random.default_rng(1))
    after = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
    return before, jax.tree.map(np.asarray, after), metrics

  before, whole, whole_metrics = updated(False)
  _, skipped, skipped_metrics = updated(True)
  assert whole_metrics['minibatches'] == 2  # accumulated into one update
  assert skipped_metrics['minibatches'] == 1
  assert skipped_metrics['trained_sequence_share'] == 0.5
  loss_tokens = [int(q.loss_mask.sum()) for q in sequences]
  assert skipped_metrics['trained_token_share'] == pytest.approx(
      sum(loss_tokens[::2]) / sum(loss_tokens))
  assert whole_metrics['trained_token_share'] == 1.0
  assert skipped_metrics['loss'] == pytest.approx(whole_metrics['loss'],
                                                  rel=1e-5)
  steps = [np.abs(w - b).max() for w, b in zip(jax.tree.leaves(whole),
                                               jax.tree.leaves(before))]
  assert max(steps) > 1e-3  # the update moved the parameters
  for w, k in zip(jax.tree.leaves(whole), jax.tree.leaves(skipped)):
    np.testing.assert_allclose(k, w, atol=1e-6 * max(steps) + 1e-7)

  # Nothing to train: no update, the parameters stay.
  untrained = [packing.TrainSequence(q.tokens, q.loss_mask,
                                     q.sampler_logprobs, 0.0, q.weight)
               for q in sequences]
  before, after, metrics = updated(True, untrained)
  assert metrics['updates'] == 0 and metrics['trained_token_share'] == 0
  for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)


def test_trained_mask_keeps_everything_unless_skipping_rl():
  run_config = config_lib.from_config_dict(_rl_phase(skip_zero_advantage=True))
  sft, rl = phases_lib.phases(run_config, ('sft', 'rl'))
  sequences = _sequences(run_config.model.vocab_size,
                         lambda i, rng: float(i % 3 == 0))
  assert sequence_update.trained_mask(sequences, sft.update).all()
  np.testing.assert_array_equal(
      sequence_update.trained_mask(sequences, rl.update),
      [i % 3 == 0 for i in range(16)])
  # A KL term moves every token whatever its advantage: nothing is skipped.
  with_kl = dataclasses.replace(
      rl.update, loss=dataclasses.replace(rl.update.loss, kl_coef=0.1))
  assert sequence_update.trained_mask(sequences, with_kl).all()


def test_passes_repeat_every_update():
  run_config = config_lib.from_config_dict(_rl_phase(num_iterations=3,
                                                     rows_per_batch=8))
  s = setup_lib.setup(run_config)
  rl = phases_lib.phases(run_config, ('sft', 'rl'))[-1]
  sequences = _sequences(run_config.model.vocab_size,
                         lambda i, rng: float(rng.normal()))
  model = params_lib.create_model(run_config.model, s.mesh, s.rules, seed=0)
  fresh = train_state.fresh(model, rl.optim, s.mesh, s.rules)
  graphdef, state = fresh.graphdef, fresh.arrays
  _, metrics = sequence_update.update_on_sequences(
      graphdef, state, sequences, rl.update, 1e-3, mesh=s.mesh,
      rules=s.rules, rng=np.random.default_rng(0))
  per_pass = metrics['minibatches'] // 3
  assert per_pass >= 2
  assert metrics['updates'] == 3 * per_pass  # one update per minibatch
  # The first minibatch saw the sampler's log-probs (-2 everywhere here).
  assert metrics['first_minibatch_logprob_mismatch'] > 0


def test_should_stop_ends_the_step_between_updates():
  # A preemption notice mid-step: the update under way finishes, no other
  # starts, and the metrics say so.
  run_config = config_lib.from_config_dict(_rl_phase(rows_per_batch=8))
  s = setup_lib.setup(run_config)
  rl = phases_lib.phases(run_config, ('sft', 'rl'))[-1]
  # Twice the usual sequences: four minibatches or so.
  sequences = 2 * _sequences(run_config.model.vocab_size,
                             lambda i, rng: float(rng.normal()))
  model = params_lib.create_model(run_config.model, s.mesh, s.rules, seed=0)
  fresh = train_state.fresh(model, rl.optim, s.mesh, s.rules)
  graphdef, state = fresh.graphdef, fresh.arrays
  asked = []

  def should_stop():
    asked.append(True)
    return len(asked) >= 2  # the notice comes after the second update

  _, metrics = sequence_update.update_on_sequences(
      graphdef, state, sequences, rl.update, 1e-3, mesh=s.mesh,
      rules=s.rules, rng=np.random.default_rng(0), should_stop=should_stop)
  assert metrics['minibatches'] >= 3
  assert metrics['updates'] == 2
  assert metrics['stopped_early'] == 1.0
