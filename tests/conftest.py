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

from rao_jax.runtime import host_memory  # pylint: disable=g-import-not-at-top

# pytest-xdist's workers and the entry points tests start are new processes:
# they start with the malloc tunable `rao_jax.main` re-executes itself with.
os.environ.update(host_memory.environment_with_tunable(os.environ) or {})

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_numpy_rank_promotion', 'raise')
