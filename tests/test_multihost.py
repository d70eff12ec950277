"""One run over several processes: the same results, faults, preemption.

Every test starts real processes of the entry point on localhost
(`jax.distributed`, gloo collectives on CPU). Two processes with two
devices each are compared with one process with four: both use gloo, so
their reductions add in the same order and the results match bit for bit
(XLA's in-process CPU collectives add in another order: differences of
~1e-7 relative).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import xla_env

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Devices of a run, over all its processes: two a process keeps a process
# holding several shards while gloo's all-to-all connections stay few (each
# collective waits on every device's thread; eight cost ~1.4x the time).
_DEVICES = 4
# A few real SFT and RL steps, one evaluation pass a phase (the recursive
# agent's). Short trees: across processes every decoded token waits on
# gloo collectives (~0.5 s a decode call of 8 tokens on CPU), and what is
# checked is that both topologies agree, not what the trees hold.
_SHORT = ('--config.sft.steps=2', '--config.rl.steps=3',
          '--config.tasks.num_eval=1',
          "--config.tasks.eval_agents=('recursive',)",
          '--config.rollout.eval_max_depth=8',
          '--config.rollout.budgets.max_depth=8',
          '--config.rollout.budgets.max_steps=3',
          '--config.rollout.budgets.max_new_tokens=32',
          '--config.rollout.budgets.max_nodes=8')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(workdir, num_processes, *overrides, heartbeat_s=30):
  """The processes of one run, started; returns the Popen objects."""
  port = _free_port()
  env = xla_env.env(_DEVICES // num_processes)
  processes = []
  for i in range(num_processes):
    command = [sys.executable, '-m', 'rao_jax.main',
               '--config=configs/cpu_tiny.py:smoke', f'--workdir={workdir}',
               '--config.distributed=True',
               f'--coordinator_address=localhost:{port}',
               f'--num_processes={num_processes}', f'--process_id={i}',
               f'--heartbeat_timeout_s={heartbeat_s}', *_SHORT, *overrides]
    log = open(os.path.join(workdir.parent, f'{workdir.name}.{i}.log'), 'w')
    processes.append(subprocess.Popen(command, cwd=_ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
  return processes


def _log(workdir, i):
  return (workdir.parent / f'{workdir.name}.{i}.log').read_text()


def _wait(processes, timeout=900):
  deadline = time.time() + timeout
  for p in processes:
    p.wait(timeout=max(deadline - time.time(), 1))
  return [p.returncode for p in processes]


def _run(workdir, num_processes, *overrides):
  workdir.mkdir(parents=True, exist_ok=True)
  codes = _wait(_start(workdir, num_processes, *overrides))
  assert codes == [0] * num_processes, _log(workdir, 0)[-3000:]
  return workdir


def _metrics(workdir):
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines() if line]
  return [{k: v for k, v in r.items() if not k.endswith('_s')}
          for r in records]


def _params(workdir, step=None):
  """The newest checkpoint's train state as NumPy arrays (saved by another
  topology than this test process's, so restored without shardings)."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = workdir / 'checkpoints'
  step = step or max(int(d) for d in os.listdir(directory) if d.isdigit())
  path = directory / str(step) / 'state'
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata
  as_numpy = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree,
      is_leaf=lambda x: hasattr(x, 'shape'))
  return step, checkpointer.restore(path, restore_args=as_numpy)


def _assert_same_params(a, b):
  import jax  # pylint: disable=import-outside-toplevel
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _wait_for_step(workdir, step, processes, timeout=600):
  deadline = time.time() + timeout
  path = workdir / 'metrics.jsonl'
  while time.time() < deadline:
    assert all(p.poll() is None for p in processes), _log(workdir, 0)[-3000:]
    if path.exists() and any(json.loads(line).get('step', 0) >= step and
                             'loss' in json.loads(line)
                             for line in path.read_text().splitlines()
                             if line.strip()):
      return
    time.sleep(0.2)
  raise TimeoutError(f'step {step} never logged')


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
  return _run(tmp_path_factory.mktemp('two') / 'run', 2)


@pytest.mark.slow
def test_two_processes_train_as_one(two_processes, tmp_path):
  one = _run(tmp_path / 'one', 1)
  assert _metrics(two_processes) == _metrics(one)
  phases = [r['phase'] for r in _metrics(one) if 'loss' in r]
  assert phases == ['sft', 'sft', 'rl', 'rl', 'rl']
  step_a, params_a = _params(two_processes)
  step_b, params_b = _params(one)
  assert step_a == step_b == 5
  _assert_same_params(params_a, params_b)
  # Process 0 alone wrote the logs; both processes ran the whole run.
  summary = json.loads((two_processes / 'summary.json').read_text())
  assert 'after_rl/easy/recursive/root_success' in summary['evals']
  assert 'root success' in _log(two_processes, 0)
  assert 'root success' not in _log(two_processes, 1)


@pytest.mark.slow
def test_a_lost_process_stops_the_other(tmp_path):
  workdir = tmp_path / 'lost'
  workdir.mkdir()
  processes = _start(workdir, 2, '--config.rl.steps=20', heartbeat_s=5)
  try:
    _wait_for_step(workdir, 1, processes)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.time()
    code = processes[0].wait(timeout=60)
    assert time.time() - killed < 60
  finally:
    for p in processes:
      p.kill()
  assert code == 1
  log = _log(workdir, 0)
  # One line says what happened; no abort, no stack of every thread.
  errors = [line for line in log.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, log[-3000:]
  assert 'most likely a lost peer' in errors[0]
  assert 'Traceback' not in log and 'Fatal Python error' not in log


@pytest.mark.slow
def test_sigterm_saves_the_step_and_the_pair_resumes_exactly(two_processes,
                                                             tmp_path):
  workdir = tmp_path / 'preempted'
  workdir.mkdir()
  # Checkpoints only at phase ends, so the preemption's is the only other.
  processes = _start(workdir, 2, '--config.checkpoint.every_steps=100')
  _wait_for_step(workdir, 3, processes)
  for p in processes:
    p.send_signal(signal.SIGTERM)
  assert _wait(processes, timeout=300) == [0, 0], _log(workdir, 0)[-3000:]
  steps = sorted(int(d) for d in os.listdir(workdir / 'checkpoints')
                 if d.isdigit())
  assert steps[0] == 2 and len(steps) == 2 and steps[1] in (4, 5), steps
  assert not (workdir / 'summary.json').exists()  # the run is not over
  _run(workdir, 2, '--config.checkpoint.every_steps=100')
  assert _metrics(workdir) == _metrics(two_processes)
  _assert_same_params(_params(workdir)[1], _params(two_processes)[1])
