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

import config_testing
import xla_env

from configs import cpu_tiny
from rao_jax import config as config_lib
from rao_jax.training import setup as setup_lib
from rao_jax.rl import update

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENV = xla_env.env(8)


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
  from rao_jax.runtime import checkpoint  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(directory, str(step), 'state'))
  del checkpoint
  return step, restored


# `smoke_run` (tests/conftest.py): the suite's one `cpu_tiny:smoke` run.


@pytest.mark.slow
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
  # No held-out evaluations or figures: what is checked is the resume.
  sgd = ('--config.optim.optimizer=sgd', *config_testing.UNEVALUATED)
  first = subprocess.run(
      _command(tmp_path, *sgd, '--config.rl.steps=1'), cwd=_ROOT, env=_ENV,
      capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-4000:]
  second = subprocess.run(
      _command(tmp_path, *sgd, '--config.rl.steps=2', '--verbosity=0'),
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
    setup_lib.setup(config_lib.from_config_dict(config))


def test_trainer_temperature_must_be_the_samplers():
  config = cpu_tiny.get_config('smoke')
  # The config ties the two; `--config.sampler.temperature` moves both.
  config.sampler.temperature = 1.5
  run_config = config_lib.from_config_dict(config)
  assert run_config.rl.loss.temperature == 1.5
  assert run_config.sft_loss.temperature == 1.0
  config.rl.loss = dict(config.rl.loss.to_dict(), temperature=2.0)
  with pytest.raises(ValueError, match=r'rl\.loss\.temperature=2\.0 differs'):
    config_lib.from_config_dict(config)


@pytest.mark.slow
def test_eval_mode_restores_the_trained_run(smoke_run, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / 'eval'
  shutil.copytree(smoke_run[0], workdir)
  # What evaluates may change when a run continues: the recursive agent
  # alone here, at both depth budgets.
  result = subprocess.run(
      _command(workdir, '--config.mode=eval',
               "--config.tasks.eval_agents=('recursive',)"),
      cwd=_ROOT, env=_ENV, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  trained = json.loads((smoke_run[0] / 'summary.json').read_text())
  evaluated = {k.split('/')[2] for k in summary['evals']
               if k.startswith('eval/')}
  assert evaluated == {'recursive', 'recursive_eval_depth'}, evaluated
  # Greedy evaluation of the restored parameters reproduces the trained
  # run's final evaluation exactly.
  for name in evaluated:
    assert (summary['evals'][f'eval/easy/{name}/root_success'] ==
            trained['evals'][f'after_rl/easy/{name}/root_success'])


@pytest.mark.slow
def test_a_workdir_of_another_run_is_refused(smoke_run, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / 'other'
  shutil.copytree(smoke_run[0], workdir)
  recorded = (workdir / 'config.json').read_text()
  steps = sorted(os.listdir(workdir / 'checkpoints'))
  result = subprocess.run(_command(workdir, '--config.model.mlp_dim=256'),
                          cwd=_ROOT, env=_ENV, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode != 0
  assert 'model.mlp_dim: 512 in config.json, 256 now' in result.stderr
  assert '--start_over' in result.stderr
  # Refused before anything ran: the old run's record and work are intact.
  assert (workdir / 'config.json').read_text() == recorded
  assert sorted(os.listdir(workdir / 'checkpoints')) == steps
  assert _metrics(workdir) == _metrics(smoke_run[0])


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_is_skipped_with_a_message(smoke_run,
                                                               tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / 'corrupt'
  shutil.copytree(smoke_run[0], workdir)
  newest = max(int(d) for d in os.listdir(workdir / 'checkpoints')
               if d.isdigit())
  for root, _, files in os.walk(workdir / 'checkpoints' / str(newest) /
                                'state'):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 64:
        with open(path, 'r+b') as f:
          f.truncate(16)
  result = subprocess.run(
      _command(workdir, '--config.mode=eval', '--verbosity=0'), cwd=_ROOT,
      env=_ENV, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  assert f'checkpoint step {newest}' in result.stderr
  assert 'does not restore' in result.stderr
  assert f'resumed from step {newest - 1}' in result.stderr


@pytest.mark.slow
def test_start_over_moves_the_old_run_aside(smoke_run, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / 'again'
  shutil.copytree(smoke_run[0], workdir)
  # Another run (one step a phase, no held-out evaluation) in the same
  # workdir, with the model's shapes of the smoke run: its programs are the
  # suite's cached ones.
  result = subprocess.run(
      _command(workdir, '--config.sft.steps=1', '--config.rl.steps=1',
               *config_testing.UNEVALUATED,
               '--start_over'),
      cwd=_ROOT, env=_ENV, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  (replaced,) = os.listdir(workdir / 'replaced')
  old = workdir / 'replaced' / replaced
  assert _metrics(old) == _metrics(smoke_run[0])
  config = cpu_tiny.get_config('smoke')
  assert json.loads((old / 'config.json').read_text())['sft']['steps'] == (
      config.sft.steps) != 1
  assert json.loads((workdir / 'config.json').read_text())['sft'][
      'steps'] == 1
  assert sorted(int(d) for d in os.listdir(workdir / 'checkpoints')) == [1, 2]
  assert [r['step'] for r in _metrics(workdir) if 'loss' in r] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize('family', ['crafting', 'multihop'])
def test_every_task_family_trains(family, tmp_path):
  command = _command(tmp_path)
  command[3] = f'--config=configs/cpu_tiny.py:{family},smoke'
  result = subprocess.run(command, cwd=_ROOT, env=_ENV, capture_output=True,
                          text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  config = cpu_tiny.get_config(f'{family},smoke')
  records = _metrics(tmp_path)
  phases = [r['phase'] for r in records if 'loss' in r]
  assert phases == ['sft'] * config.sft.steps + ['rl'] * config.rl.steps
  # The demonstrations are the family's reference solver's: they succeed.
  assert all(r['root_success'] == 1.0 for r in records
             if r.get('phase') == 'sft')
  assert all(np.isfinite(r['loss']) for r in records if 'loss' in r)
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert json.loads((tmp_path / 'config.json').read_text())['tasks'][
      'name'] == family
  for name in ('recursive', 'recursive_eval_depth', 'single_agent'):
    assert f'after_rl/easy/{name}/root_success' in summary['evals']


@pytest.mark.slow
def test_the_trained_policy_exports_to_transformers(smoke_run):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from rao_jax.agent import protocol  # pylint: disable=import-outside-toplevel
  from rao_jax.model import hf_io  # pylint: disable=import-outside-toplevel
  from rao_jax.model import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  from rao_jax.sampler import slots  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  workdir, _ = smoke_run
  summary = json.loads((workdir / 'summary.json').read_text())
  exported = workdir / 'hf'
  assert summary['export'] == str(exported)
  model = transformers.AutoModelForCausalLM.from_pretrained(exported)
  tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
  ours = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  prompt = '<task>sum of the numbers</task><data>7\n5\n</data>\nbudget: depth 1'
  ids = [ours.bos_id] + ours.encode(prompt)
  # The exported tokenizer encodes as the run's did.
  assert tokenizer(prompt, add_special_tokens=False).input_ids == ids[1:]
  assert tokenizer.decode(ids[1:]) == prompt
  # Greedy continuation: transformers on the exported directory, and
  # rao_jax's sampler on the same weights read back.
  new = 24
  with torch.no_grad():
    theirs = model.generate(torch.tensor([ids]), max_new_tokens=new,
                            min_new_tokens=new, do_sample=False)[0, len(ids):]
  sampler = slots.SlotSampler(hf_io.load_hf(str(exported)), num_slots=8,
                              max_len=128)
  sampler.admit([slots.Request(ids, jax.random.key(0), new)])
  turns = []
  while sampler.num_running:
    turns += sampler.decode(8)
  assert [int(t) for t in turns[0].tokens] == theirs.tolist()
