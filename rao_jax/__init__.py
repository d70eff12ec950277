"""rao_jax: Recursive Agent Optimization in JAX."""

from rao_jax.runtime import platforms as _platforms

# Before any jax import: on a machine without a TPU an installed libtpu
# would otherwise print its probe errors at start-up (`runtime.platforms`).
_platforms.default_to_cpu()

__version__ = '0.1.0'
