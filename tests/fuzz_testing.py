"""Hypothesis profiles: a fixed one for the suite, a random one on demand.

`tests/conftest.py` loads the profile `HYPOTHESIS_PROFILE` names before
any test module is imported:

  ci (default)  derandomize=True, no example database: every run draws the
                same examples, so the suite passes or fails the same way
                on every machine and every retry.
  random        fresh random examples, `RANDOM_SCALE` times as many:
                `HYPOTHESIS_PROFILE=random pytest tests/test_tasks_fuzz.py`
                hunts for new failures (then add the one found as an
                explicit example).

Fuzz tests take their settings from `fuzz(n)`, which scales `n` under the
random profile; everything else comes from the loaded profile.
"""

import os

from hypothesis import settings

PROFILE_ENV = 'HYPOTHESIS_PROFILE'
RANDOM_SCALE = 10

settings.register_profile('ci', derandomize=True, database=None,
                          deadline=None)
settings.register_profile('random', derandomize=False, deadline=None)


def profile() -> str:
  """The profile this session runs under."""
  return os.environ.get(PROFILE_ENV, 'ci')


def load() -> None:
  """Loads `profile()` (conftest calls it, once)."""
  settings.load_profile(profile())


def fuzz(max_examples: int) -> settings:
  """Settings for a fuzz test of `max_examples` examples in the suite."""
  scale = RANDOM_SCALE if profile() == 'random' else 1
  return settings(max_examples=max_examples * scale, deadline=None)
