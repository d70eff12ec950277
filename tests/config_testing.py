"""Typed run configs of `configs/cpu_tiny.py` with fields overridden."""

from configs import cpu_tiny
from rao_jax import config as config_lib

# Entry-point overrides for runs whose checks are steps, checkpoints and
# messages: no held-out evaluation after each phase and no figures at the
# end (both free fields: a copied run resumes under them).
UNEVALUATED = ('--config.tasks.eval_levels=()', '--config.log.plots=False')


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
