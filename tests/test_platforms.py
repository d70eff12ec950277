"""A CPU machine with libtpu installed starts JAX quietly (`runtime.platforms`)."""

import os
import subprocess
import sys

import pytest

from rao_jax.runtime import platforms

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What libtpu prints when it probes a machine that has no TPU.
_PROBE_NOISE = ('TPU_WORKER_HOSTNAMES', 'TPU_ACCELERATOR_TYPE', 'libtpu',
                'INVALID_ARGUMENT')


def _python(*args, **env):
  environ = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  environ.update(env)
  return subprocess.run([sys.executable, *args], capture_output=True,
                        text=True, cwd=_ROOT, env=environ, timeout=300)


needs_cpu_only_machine = pytest.mark.skipif(
    platforms._has_tpu() or platforms._has_gpu_plugin(),  # pylint: disable=protected-access
    reason='this machine has another backend than the CPU')


@needs_cpu_only_machine
def test_importing_rao_jax_first_keeps_jax_off_the_tpu_probe():
  result = _python('-c', 'import rao_jax, jax; print(jax.devices()[0].platform)')
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'cpu'
  assert not any(word in result.stderr for word in _PROBE_NOISE), (
      result.stderr)


@needs_cpu_only_machine
def test_the_viewer_says_one_line_and_no_probe(tmp_path):
  result = _python('-m', 'rao_jax.viewer', str(tmp_path / 'missing'))
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_platform_the_user_chose_is_kept():
  environ = {'JAX_PLATFORMS': 'tpu'}
  assert platforms.default_to_cpu(environ) is None
  assert environ == {'JAX_PLATFORMS': 'tpu'}


@needs_cpu_only_machine
def test_without_a_choice_the_cpu_is_chosen():
  environ = {}
  assert platforms.default_to_cpu(environ) == 'cpu'
  assert environ == {'JAX_PLATFORMS': 'cpu'}
