"""Fixtures shared by the tests: tiny models with non-trivial weights."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

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
  # Drawn on the host: on a device each leaf's shape would compile its
  # own normal sampler (threefry is slow to compile) for a tiny model's
  # weights.
  rng = np.random.default_rng(seed)
  leaves = [jnp.asarray(np.asarray(x) + scale * rng.standard_normal(x.shape),
                        x.dtype) for x in leaves]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


def tiny_model(seed: int = 0, scale: float = 0.2, preset: str = 'tiny',
               **overrides) -> gemma.Transformer:
  """`config.PRESETS[preset](**overrides)` (a tiny Gemma 3 by default, or
  'tiny_qwen3') with perturbed weights."""
  config = config_lib.PRESETS[preset](**overrides)
  return perturbed(gemma.Transformer(config, rngs=nnx.Rngs(0)), seed, scale)


def logits(model: gemma.Transformer, tokens_BT: jax.Array) -> np.ndarray:
  """The model's logits `[B, T, V]` of unpadded rows, positions 0..T-1."""
  return np.asarray(_logits(model, jnp.asarray(tokens_BT)))


@nnx.jit
def _logits(model: gemma.Transformer, tokens_BT: jax.Array) -> jax.Array:
  positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]),
                                  tokens_BT.shape)
  return model(tokens_BT, positions_BT)[0]


def sft_losses(model: gemma.Transformer, optimizer: nnx.Optimizer,
               rows: list[np.ndarray], *, bucket: int, logprob_chunk: int,
               learning_rate: float, steps: int
               ) -> tuple[gemma.Transformer, list[float]]:
  """`steps` SFT updates on `rows` (every token trained), packed into one
  row of `bucket` tokens; returns the trained model and the loss before
  each update."""
  # Imported here: the fixture module stays light for the model's tests.
  from rao_jax.rl import losses  # pylint: disable=g-import-not-at-top
  from rao_jax.rl import packing  # pylint: disable=g-import-not-at-top
  from rao_jax.rl import update  # pylint: disable=g-import-not-at-top
  seqs = [packing.TrainSequence(np.asarray(row), np.ones(len(row), np.int32),
                                np.zeros(len(row)), 1.0, 1.0) for row in rows]
  (batch,), _ = packing.pack(seqs, buckets=[bucket], rows_per_batch=1)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  config = losses.LossConfig(estimator='sft', logprob_chunk=logprob_chunk)
  graphdef, state = update.split_train_state(model, optimizer)
  seen = []
  for _ in range(steps):
    state, metrics = update.train_step(graphdef, state, batch, config,
                                       learning_rate)
    seen.append(float(metrics['loss']))
  return nnx.merge(graphdef, state)[0], seen
