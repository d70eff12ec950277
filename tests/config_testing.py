"""Typed run configs of `configs/cpu_tiny.py` with fields overridden."""

from configs import cpu_tiny
from rao_jax import config as config_lib


def run_config(arg: str | None = 'smoke', **overrides):
  """`cpu_tiny.get_config(arg)` with `overrides` (dotted field names as
  keys, e.g. `**{'rl.steps': 3}`), as a `RunConfig`."""
  config = cpu_tiny.get_config(arg)
  for dotted, value in overrides.items():
    section = config
    *path, last = dotted.split('.')
    for name in path:
      section = section[name]
    section[last] = value
  return config_lib.from_config_dict(config)
