"""Fixtures shared by the tests: tiny models with non-trivial weights."""

from __future__ import annotations

from flax import nnx
import jax

from rao_jax.model import config as config_lib
from rao_jax.model import gemma


def perturbed(model: gemma.Transformer, seed: int = 0,
              scale: float = 0.2) -> gemma.Transformer:
  """Adds Gaussian noise to every parameter, norms included.

  Gemma's norm scales start at zero and Qwen3's at one, so an unperturbed
  model would hide a missing (or extra) `1 +` in RMSNorm; noise also makes
  outputs vary from token to token.
  """
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype)
            for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


def tiny_model(seed: int = 0, scale: float = 0.2, preset: str = 'tiny',
               **overrides) -> gemma.Transformer:
  """`config.PRESETS[preset](**overrides)` (a tiny Gemma 3 by default, or
  'tiny_qwen3') with perturbed weights."""
  config = config_lib.PRESETS[preset](**overrides)
  return perturbed(gemma.Transformer(config, rngs=nnx.Rngs(0)), seed, scale)
