"""Faults a run meets, through the real entry point: a corrupt newest
checkpoint, a half-written metrics line, a second run on the workdir, an
export of an older step, non-finite parameters.

The suite's one cpu_tiny:smoke run (`smoke_run` in tests/conftest.py: 3
SFT and 2 RL steps, checkpoints 3, 4, 5 and `hf/` of step 5) is copied for
each test; a test breaks its copy as a fault would and reruns the command
(3 RL steps where it should resume and train on)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import config_testing
import xla_env

# Every test here runs the entry point (one smoke run shared, then reruns).
pytestmark = pytest.mark.slow

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENV = xla_env.env(8)


def _command(workdir, *overrides):
  return [sys.executable, '-m', 'rao_jax.main',
          '--config=configs/cpu_tiny.py:smoke', f'--workdir={workdir}',
          *overrides]


def _main(workdir, *overrides):
  return subprocess.run(_command(workdir, *overrides), cwd=_ROOT, env=_ENV,
                        capture_output=True, text=True, timeout=900)


def _steps(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f if line.strip()
            and 'loss' in json.loads(line)]


def _checkpoints(workdir):
  return sorted(int(name) for name in os.listdir(workdir / 'checkpoints')
                if name.isdigit())


def _listing(folder):
  return os.listdir(folder) if folder.exists() else []


def _error_line(result):
  lines = [line for line in result.stderr.splitlines()
           if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, (
      result.stderr[-3000:])
  return lines[0]


@pytest.fixture
def run_copy(smoke_run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(smoke_run[0], workdir)
  assert _checkpoints(workdir) == [3, 4, 5]
  return workdir


def test_corrupt_newest_checkpoint_is_moved_aside_and_saved_again(run_copy):
  workdir = run_copy
  # The newest step's arrays overwritten, as a disk fault or a bad copy
  # leaves them; and a save that never finished.
  for folder, _, files in os.walk(workdir / 'checkpoints' / '5' / 'state'):
    for name in files:
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(b'not a checkpoint')
  partial = workdir / 'checkpoints' / '6.orbax-checkpoint-tmp-1700000000'
  partial.mkdir()
  (partial / 'junk').write_text('half')
  result = _main(workdir, '--verbosity=0', *config_testing.UNEVALUATED)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'moved it to' in result.stderr
  assert 'never finished' in result.stderr
  assert os.path.isdir(workdir / 'checkpoints' / 'corrupt' / '5')
  assert not partial.exists()
  # Step 5 was redone and saved again: the next run starts after it.
  assert _checkpoints(workdir) == [3, 4, 5]
  again = _main(workdir, '--verbosity=0', *config_testing.UNEVALUATED)
  assert again.returncode == 0, again.stderr[-4000:]
  assert 'resumed from step 5' in again.stderr
  assert 'does not restore' not in again.stderr
  assert _steps(workdir) == [1, 2, 3, 4, 5]


def test_export_never_replaces_a_newer_export(run_copy):
  workdir = run_copy
  with open(workdir / 'hf' / 'rao_export.json') as f:
    assert json.load(f) == {'step': 5}
  before = (workdir / 'hf' / 'model.safetensors').read_bytes()
  # The newest checkpoint lost: the newest that restores is step 4.
  shutil.rmtree(workdir / 'checkpoints' / '5')
  result = _main(workdir, '--config.mode=export')
  assert result.returncode == 2, result.stderr[-3000:]
  line = _error_line(result)
  assert 'holds the export of step 5, newer than step 4' in line
  assert (workdir / 'hf' / 'model.safetensors').read_bytes() == before


def test_torn_metrics_line_is_dropped_on_resume(run_copy):
  workdir = run_copy
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 6, "loss": 0.12')  # killed mid-write
  result = _main(workdir, '--config.rl.steps=3', '--verbosity=0',
                 *config_testing.UNEVALUATED)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'cut short' in result.stderr
  assert _steps(workdir) == [1, 2, 3, 4, 5, 6]


def test_one_run_a_workdir_and_a_killed_one_does_not_block(run_copy):
  workdir = run_copy
  first = subprocess.Popen(_command(workdir, '--config.rl.steps=3'),
                           cwd=_ROOT, env=_ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 300
    lock = workdir / '.lock'
    while time.time() < deadline:
      if lock.exists() and f'"pid": {first.pid}' in lock.read_text():
        break
      assert first.poll() is None, 'the first run ended early'
      time.sleep(0.2)
    second = _main(workdir, '--config.rl.steps=3')
    assert second.returncode == 2, second.stderr[-3000:]
    line = _error_line(second)
    assert 'is in use by another run' in line
    assert f'pid {first.pid}' in line and 'host ' in line
    assert 'started 20' in line
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # The kill released the lock: the next command runs.
  third = _main(workdir, '--config.mode=export')
  assert third.returncode == 0, third.stderr[-3000:]


def test_nonfinite_parameters_are_never_exported(run_copy):
  # A newest checkpoint whose parameters went NaN (as a diverged update
  # leaves them), written as Orbax writes one.
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  workdir = run_copy
  shutil.copytree(workdir / 'checkpoints' / '5', workdir / 'checkpoints' / '6')
  state_dir = workdir / 'checkpoints' / '6' / 'state'
  state = ocp.StandardCheckpointer().restore(state_dir)
  leaves, treedef = jax.tree.flatten(state)
  leaves = [np.full_like(x, np.nan) if np.issubdtype(np.asarray(x).dtype,
                                                     np.floating) else x
            for x in leaves]
  shutil.rmtree(state_dir)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(state_dir, jax.tree.unflatten(treedef, leaves))
  before = (workdir / 'hf' / 'model.safetensors').read_bytes()
  result = _main(workdir, '--config.mode=export')
  assert result.returncode == 1, result.stderr[-3000:]
  line = _error_line(result)
  assert 'export of step 6' in line and 'NaN or infinity' in line
  assert (workdir / 'hf' / 'model.safetensors').read_bytes() == before


# At once (the workdir locked), and mid-setup, when the datasets start to
# be built (where a plain exit once ended in a segfault of XLA's threads
# after the line). Markers, not delays: a warm compilation cache makes
# setup take a second.
@pytest.mark.parametrize('marker', ['.lock', 'data'])
def test_sigterm_before_the_loop_is_one_line_and_non_zero(tmp_path, marker):
  workdir = tmp_path / 'run'
  process = subprocess.Popen(_command(workdir), cwd=_ROOT, env=_ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  deadline = time.time() + 300
  lock = workdir / '.lock'
  # The lock is taken before anything is built: the loop is far off.
  while not (lock.exists() and f'"pid": {process.pid}' in lock.read_text()
             and (workdir / marker).exists()):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.01)
  process.send_signal(signal.SIGTERM)
  sent = time.time()
  _, stderr = process.communicate(timeout=120)
  assert time.time() - sent < 60
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith('error:')]
  assert len(lines) == 1 and 'Traceback' not in stderr, stderr[-3000:]
  assert 'SIGTERM outside the training loop' in lines[0]
  checkpoints = workdir / 'checkpoints'
  assert not checkpoints.exists() or not _checkpoints(workdir)


def test_a_step_running_past_the_patience_stops_between_minibatches(
    tmp_path):
  # With no patience, SIGTERM during a step ends it at its next minibatch
  # boundary (a large model's step may outlast a cloud's grace period);
  # the cut step is saved and the rerun goes on after it.
  workdir = tmp_path / 'run'
  slow = ('--config.checkpoint.preemption_patience_s=0',
          '--config.sft.rows_per_batch=8', '--config.log.progress_bar=False',
          *config_testing.UNEVALUATED)
  process = subprocess.Popen(_command(workdir, *slow), cwd=_ROOT, env=_ENV,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  # Step 1's checkpoint is saved after the loop asked whether to stop at
  # step 1: once it appears the signal lands in step 2 (at step 1's
  # metrics line alone it could still land before that question).
  deadline = time.time() + 600
  while not any(name.split('.')[0] == '1' for name in _listing(
      workdir / 'checkpoints')):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.01)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  with open(workdir / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f if 'loss' in line]
  last = records[-1]
  assert last['stopped_early'] == 1.0, last
  assert _checkpoints(workdir)[-1] == last['step']
  result = _main(workdir, *slow)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _steps(workdir)[-1] > last['step']
