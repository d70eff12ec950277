"""Test set-up: 8 fake CPU devices, strict rank promotion.

XLA_FLAGS must be set before jax is imported anywhere.
"""

import os

import fuzz_testing  # pylint: disable=g-import-not-at-top
import xla_env  # pylint: disable=g-import-not-at-top

fuzz_testing.load()  # hypothesis: fixed examples unless asked otherwise

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' ' + xla_env.xla_flags(8)).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent compilation cache for the suite: pytest-xdist's workers
# and every entry point a test starts (they inherit this environment)
# reuse each other's compiled programs instead of compiling the same
# train step and sampler again in each process. A cached program is the
# one the compiler would build, so runs stay bit-identical.
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 '.cache', 'jax-tests'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

from rao_jax.runtime import host_memory  # pylint: disable=g-import-not-at-top

# pytest-xdist's workers and the entry points tests start are new processes:
# they start with the malloc tunable `rao_jax.main` re-executes itself with.
os.environ.update(host_memory.environment_with_tunable(os.environ) or {})

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_numpy_rank_promotion', 'raise')
# The suite's in-process programs are mostly tiny models run for a step or
# two: compiling them costs more than running them, so the test processes
# compile with XLA's optimisations mostly off (`-m 'not slow'` on 2 cores:
# 408 s -> 339 s). The entry points tests start run many steps and keep
# them (a subprocess does not inherit this), as do tests of the real
# checkpoint (tests/test_gguf.py).
jax.config.update('jax_disable_most_optimizations', True)


# pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order
import json
import pathlib
import subprocess
import sys
import types

import filelock
import pytest

import xla_env

_ROOT = pathlib.Path(__file__).resolve().parent.parent
# The shared smoke run saves its trees at every step, for the viewer's tests.
SMOKE_COMMAND = ('-m', 'rao_jax.main', '--config=configs/cpu_tiny.py:smoke',
                 '--config.log.trees_every_steps=1',
                 '--config.log.progress_bar=False')


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory, worker_id):
  """One `cpu_tiny:smoke` run of the entry point for the whole suite:
  (its workdir, its output as `.returncode`, `.stdout`, `.stderr`).

  pytest-xdist's workers share it: the first to ask runs it under a file
  lock, the others wait and read it. Tests that change a workdir copy it.
  """
  base = tmp_path_factory.getbasetemp()
  root = base if worker_id == 'master' else base.parent
  workdir, output = root / 'shared_smoke', root / 'shared_smoke.json'
  with filelock.FileLock(str(root / 'shared_smoke.lock')):
    if not output.exists():
      result = subprocess.run(
          [sys.executable, *SMOKE_COMMAND, f'--workdir={workdir}'],
          cwd=_ROOT, env=xla_env.env(8), capture_output=True, text=True,
          timeout=900)
      output.write_text(json.dumps({'returncode': result.returncode,
                                    'stdout': result.stdout,
                                    'stderr': result.stderr}))
  result = types.SimpleNamespace(**json.loads(output.read_text()))
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir, result


@pytest.fixture(scope='session')
def gemma3_270m(tmp_path_factory, worker_id):
  """(GGUF path, converted Hugging Face directory) of the packaged Gemma 3
  270M, converted once for the whole suite by the command users run
  (`python -m rao_jax.model.gguf_io`; about 40 s and 1 GB): pytest-xdist's
  workers share it as they share `smoke_run`. Read-only: a test that
  changes it copies it."""
  from rao_jax.model import gguf_io  # pylint: disable=import-outside-toplevel
  base = tmp_path_factory.getbasetemp()
  root = (base if worker_id == 'master' else base.parent) / 'shared_gemma3'
  done, out = root / 'converted', root / 'hf'
  with filelock.FileLock(str(root) + '.lock'):
    if not done.exists():
      root.mkdir(exist_ok=True)
      gguf_path = gguf_io.packaged_gguf(str(root))
      result = subprocess.run(
          [sys.executable, '-m', 'rao_jax.model.gguf_io',
           f'--gguf={gguf_path}', f'--out={out}'],
          cwd=_ROOT, env=xla_env.env(1), capture_output=True, text=True,
          timeout=900)
      assert result.returncode == 0, result.stderr[-4000:]
      assert f'-> {out}: 268,098,176 parameters' in result.stdout, (
          result.stdout)
      done.write_text(gguf_path)
  return done.read_text(), str(out)
