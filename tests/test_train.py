"""The trainer end to end through the real entry point, and exact resume."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import cpu_tiny
from rao_jax import train
from rao_jax.rl import update

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')


def _command(workdir, *overrides):
  return [sys.executable, '-m', 'rao_jax.main',
          '--config=configs/cpu_tiny.py:smoke', f'--workdir={workdir}',
          *overrides]


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  # Wall-clock figures differ between runs; everything else must not.
  return [{k: v for k, v in r.items() if not k.endswith('_s')}
          for r in records]


def _final_params(workdir):
  from rao_jax import checkpoint  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(directory, str(step), 'state'))
  del checkpoint
  return step, restored


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('smoke')
  result = subprocess.run(_command(workdir), cwd=_ROOT, env=_ENV,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir, result


def test_smoke_run_trains_evaluates_and_logs(smoke_run):
  workdir, result = smoke_run
  config = cpu_tiny.get_config('smoke')
  total = config.sft.steps + config.rl.steps
  records = _metrics(workdir)
  steps = [r['step'] for r in records if 'loss' in r]
  assert steps == list(range(1, total + 1))
  phases = [r['phase'] for r in records if 'loss' in r]
  assert phases == ['sft'] * config.sft.steps + ['rl'] * config.rl.steps
  # Each phase's schedule runs over its own trainer steps, however many
  # minibatches a step makes.
  for phase, optim in (('sft', config.sft.optim), ('rl', config.optim)):
    schedule = update.learning_rate_schedule(update.OptimConfig(**optim))
    rates = [r['learning_rate'] for r in records if r.get('phase') == phase]
    np.testing.assert_allclose(
        rates, [schedule(i) for i in range(len(rates))], rtol=1e-6)
  rl = [r for r in records if r.get('phase') == 'rl']
  for r in rl:
    assert np.isfinite(r['loss']) and 0 <= r['root_success'] <= 1
    # One pass per batch: the first minibatch's ratio is 1 up to float error.
    assert r['first_minibatch_logprob_mismatch'] < 1e-3
  summary = json.loads((workdir / 'summary.json').read_text())
  for tag in ('after_sft', 'after_rl'):
    for name in ('recursive', 'recursive_eval_depth', 'single_agent'):
      assert f'{tag}/easy/{name}/root_success' in summary['evals']
  assert os.listdir(workdir / 'trees')
  assert os.listdir(workdir / 'tb')
  assert 'root success' in result.stdout


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(smoke_run, tmp_path):
  reference_dir, _ = smoke_run
  config = cpu_tiny.get_config('smoke')
  total = config.sft.steps + config.rl.steps
  kill_after = random.Random(0).randint(1, total - 1)
  workdir = tmp_path / 'killed'
  process = subprocess.Popen(_command(workdir), cwd=_ROOT, env=_ENV,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while time.time() < deadline:
    path = workdir / 'metrics.jsonl'
    if path.exists() and any(
        json.loads(line).get('step', 0) >= kill_after
        for line in path.read_text().splitlines() if line.strip()):
      break
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  result = subprocess.run(_command(workdir), cwd=_ROOT, env=_ENV,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  assert _metrics(workdir) == _metrics(reference_dir)
  step_a, params_a = _final_params(reference_dir)
  step_b, params_b = _final_params(workdir)
  assert step_a == step_b == total
  import jax  # pylint: disable=import-outside-toplevel
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_resume_with_another_optimizer_for_rl(tmp_path):
  # AdamW for SFT, SGD for RL: the optimiser states differ in structure, and
  # each checkpoint must restore into its own phase's.
  config = cpu_tiny.get_config('smoke')
  sft_steps = config.sft.steps
  sgd = '--config.optim.optimizer=sgd'
  first = subprocess.run(
      _command(tmp_path, sgd, '--config.rl.steps=1'), cwd=_ROOT, env=_ENV,
      capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-4000:]
  second = subprocess.run(
      _command(tmp_path, sgd, '--config.rl.steps=2', '--verbosity=0'),
      cwd=_ROOT, env=_ENV,
      capture_output=True, text=True, timeout=900)
  assert second.returncode == 0, second.stderr[-4000:]
  assert f'resumed from step {sft_steps + 1}' in second.stderr
  assert 'does not restore' not in second.stderr
  steps = [r['step'] for r in _metrics(tmp_path) if 'loss' in r]
  assert steps == list(range(1, sft_steps + 3))


@pytest.mark.parametrize('field, value, message', [
    ('tasks.name', 'nope', 'tasks.name'),
    ('tasks.sft_level', 'huge', "tasks.sft_level='huge'"),
    ('sft.aggregation', 'median', "sft.aggregation='median'"),
    ('rl.group_size', 1, 'rl.group_size=1'),
    ('rl.updates_per_pass', -1, 'rl.updates_per_pass=-1'),
    ('rl.loss.kl_coef', 0.1, 'rl.loss.kl_coef=0.1'),
    ('sampler.num_slots', 2, 'sampler.num_slots=2 is fewer'),
    ('rollout.budgets.max_depth', -1, 'rollout.budgets.max_depth'),
    ('rl.loss.estimator', 'reinforce', 'rl.loss.estimator'),
    ('optim.learning_rate', -1.0, 'optim.learning_rate'),
    ('mode', 'fly', 'config.mode'),
])
def test_bad_config_is_refused_naming_the_field(field, value, message):
  config = cpu_tiny.get_config('smoke')
  section = config
  *path, last = field.split('.')
  for name in path:
    section = section[name]
  section[last] = value
  with pytest.raises(ValueError, match=message.replace('.', r'\.')):
    train.setup(config)


def test_trainer_temperature_must_be_the_samplers():
  config = cpu_tiny.get_config('smoke')
  # The config ties the two; `--config.sampler.temperature` moves both.
  config.sampler.temperature = 1.5
  s = train.setup(config)
  assert s.loss.temperature == 1.5
  assert s.sft_loss.temperature == 1.0
  config.rl.loss = dict(config.rl.loss.to_dict(), temperature=2.0)
  with pytest.raises(ValueError, match=r'rl\.loss\.temperature=2\.0 differs'):
    train.setup(config)


def test_eval_mode_restores_the_trained_run(smoke_run, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / 'eval'
  shutil.copytree(smoke_run[0], workdir)
  result = subprocess.run(_command(workdir, '--config.mode=eval'), cwd=_ROOT,
                          env=_ENV, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  trained = json.loads((smoke_run[0] / 'summary.json').read_text())
  # Greedy evaluation of the restored parameters reproduces the trained
  # run's final evaluation exactly.
  for name in ('recursive', 'single_agent'):
    assert (summary['evals'][f'eval/easy/{name}/root_success'] ==
            trained['evals'][f'after_rl/easy/{name}/root_success'])


@pytest.mark.parametrize('aggregation', ['token_mean', 'sequence_mean'])
def test_skipping_zero_advantages_keeps_the_update(aggregation):
  # With one update a pass, leaving out the sequences whose advantage is 0
  # gives the update of the whole batch: their terms are 0 and the divisor
  # still counts them. SGD, whose step scales with the gradient, so a wrong
  # divisor would show (Adam would normalise it away).
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from rao_jax.model import params as params_lib  # pylint: disable=import-outside-toplevel
  from rao_jax.model import sharding  # pylint: disable=import-outside-toplevel
  from rao_jax.rl import packing  # pylint: disable=import-outside-toplevel
  config = cpu_tiny.get_config('smoke')
  config.rl.skip_zero_advantage = True
  config.rl.updates_per_pass = 1
  config.rl.rows_per_batch = 8
  config.rl.loss.aggregation = aggregation
  config.optim.optimizer = 'sgd'
  s = train.setup(config)
  rng = np.random.default_rng(0)
  sequences = []
  for i in range(16):
    n = int(rng.integers(60, 250))
    mask = (np.arange(n) >= n // 3).astype(np.int32)  # prompt, then output
    sequences.append(packing.TrainSequence(
        rng.integers(3, s.model.vocab_size, n).astype(np.int32), mask,
        np.where(mask, -2.0, 0.0).astype(np.float32),
        advantage=0.0 if i % 2 else float(rng.normal()),
        weight=float(rng.uniform(0.5, 2.0))))

  def updated(skip, sequences=sequences):
    config.rl.skip_zero_advantage = skip
    model = params_lib.create_model(s.model, s.mesh, s.rules, seed=0)
    with sharding.use_mesh(s.mesh, s.rules):
      optimizer = nnx.Optimizer(model, update.make_optimizer(s.optim),
                                wrt=nnx.Param)
    graphdef, state = update.split_train_state(model, optimizer)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    state, metrics = train._update(graphdef, state, sequences, config,  # pylint: disable=protected-access
                                   s.loss, s, 0.5, step=1)
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
