"""The environment tests give the processes they start.

Fake CPU devices run XLA's collectives as threads that must meet within a
timeout (40 s by default); on a loaded 2-core machine eight of them can
miss it and abort the process, so tests allow far longer.

The suite's programs are mostly tiny models run for a few steps: compiling
them costs more than running them, so tests compile with XLA's
optimisations mostly off (`JAX_DISABLE_MOST_OPTIMIZATIONS`; measured on 2
cores: `-m 'not slow'` 408 s -> 327 s). The real checkpoint's tests run
long enough that the optimised programs pay for themselves and ask for
them (`optimized=True`; Gemma 3 270M `:smoke` 186 s optimised, 223 s
not).
"""

import os

_TIMEOUTS = ('--xla_cpu_collective_call_terminate_timeout_seconds=900 '
             '--xla_cpu_collective_timeout_seconds=900')


def xla_flags(devices: int = 8) -> str:
  """XLA_FLAGS for `devices` fake CPU devices."""
  return f'--xla_force_host_platform_device_count={devices} {_TIMEOUTS}'


# Set in every test process (conftest) and inherited by what they start.
QUICK_COMPILE = {'JAX_DISABLE_MOST_OPTIMIZATIONS': '1'}


def env(devices: int = 8, optimized: bool = False) -> dict[str, str]:
  """This process's environment with `xla_flags(devices)`, compiling with
  XLA's optimisations when `optimized` (see the module's docstring)."""
  return dict(os.environ, XLA_FLAGS=xla_flags(devices),
              JAX_DISABLE_MOST_OPTIMIZATIONS='0' if optimized else '1')
