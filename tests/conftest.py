"""Test set-up: 8 fake CPU devices, strict rank promotion.

XLA_FLAGS must be set before jax is imported anywhere.
"""

import os

import xla_env  # pylint: disable=g-import-not-at-top

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
