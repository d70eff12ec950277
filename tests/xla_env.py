"""The environment tests give the processes they start.

Fake CPU devices run XLA's collectives as threads that must meet within a
timeout (40 s by default); on a loaded 2-core machine eight of them can
miss it and abort the process, so tests allow far longer.
"""

import os

_TIMEOUTS = ('--xla_cpu_collective_call_terminate_timeout_seconds=900 '
             '--xla_cpu_collective_timeout_seconds=900')


def xla_flags(devices: int = 8) -> str:
  """XLA_FLAGS for `devices` fake CPU devices."""
  return f'--xla_force_host_platform_device_count={devices} {_TIMEOUTS}'


def env(devices: int = 8) -> dict[str, str]:
  """This process's environment with `xla_flags(devices)`."""
  return dict(os.environ, XLA_FLAGS=xla_flags(devices))
