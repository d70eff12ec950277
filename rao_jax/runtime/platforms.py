"""Which JAX backends a process starts with, settled before jax loads.

An installed `libtpu` (the test extra brings it, for plan mode's ahead-of-
time compiles) makes JAX probe for a TPU at start-up; on a machine without
one the probe prints a dozen lines of errors (`TPU_WORKER_HOSTNAMES`,
`INVALID_ARGUMENT`) that read as a broken install, and then JAX uses the
CPU anyway. Where the machine has no TPU device and no GPU plugin is
installed, the CPU is the only backend JAX could pick, so `JAX_PLATFORMS`
is set to `cpu` before jax loads. A `JAX_PLATFORMS` the user set is kept.
Plan mode still compiles for a TPU slice: libtpu's topology description
needs no TPU backend.
"""

from __future__ import annotations

from collections.abc import MutableMapping
import glob
import importlib.metadata
import importlib.util
import os

# Device nodes of a TPU VM (libtpu opens these).
_TPU_DEVICES = ('/dev/accel*', '/dev/vfio/[0-9]*')
# JAX's GPU plugins, by the module each installs.
_GPU_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin',
                'jax_rocm7_plugin')


def _has_tpu() -> bool:
  return any(glob.glob(pattern) for pattern in _TPU_DEVICES)


def _has_gpu_plugin() -> bool:
  if any(importlib.util.find_spec(name) for name in _GPU_PLUGINS):
    return True
  return bool(importlib.metadata.entry_points(group='jax_plugins'))


def default_to_cpu(environ: MutableMapping[str, str] = os.environ
                   ) -> str | None:
  """Sets `JAX_PLATFORMS=cpu` in `environ` where the CPU is the only
  backend (no TPU device, no GPU plugin, no `JAX_PLATFORMS` set); returns
  the value set, or None when it changed nothing."""
  if 'JAX_PLATFORMS' in environ or _has_tpu() or _has_gpu_plugin():
    return None
  environ['JAX_PLATFORMS'] = 'cpu'
  return 'cpu'
