"""rao_jax: Recursive Agent Optimization in JAX."""

__version__ = '0.1.0'
