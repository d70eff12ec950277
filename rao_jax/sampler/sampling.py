"""Sampling methods: greedy, temperature, top-k, top-p (nucleus).

Each method is a small frozen (hashable) dataclass. A method maps fp32
logits `[B, V]` and one PRNG key per row to the sampled tokens and the
log-probability of each under the distribution it actually sampled from
(after temperature, top-k, top-p). `log_probs` gives that whole
distribution, for tests and for off-policy corrections.

The slot sampler compiles a method's *filter* only (`static_part`: top-k
or top-p and its k or p, at temperature 1) and takes the temperature as
data, one per row (`sample_rows`): greedy rows (temperature 0) and rows
sampled at any temperature share one program and one batch.

Keys are per row and used only for that row (`vmap` over rows), so a row's
sample never depends on its neighbours in the batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

# Finite stand-in for -inf on masked-out logits: keeps softmax and
# `log_softmax` free of NaN (inf - inf) while giving exp() == 0.
_MASKED = -1e30


class SamplingMethod(Protocol):
  """What the sampler needs from a sampling method."""

  def log_probs(self, logits_BV: jax.Array) -> jax.Array:
    """Log-probs `[B, V]` of the distribution sampled from (masked: -1e30)."""

  def sample(self, logits_BV: jax.Array,
             keys_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Tokens `[B]` int32 and their log-probs `[B]` under `log_probs`."""


def _check_temperature(temperature: float) -> None:
  if not temperature > 0:
    raise ValueError(f'temperature={temperature}: must be > 0 (use Greedy() '
                     'for argmax decoding)')


def _categorical(keys_B: jax.Array, logits_BV: jax.Array) -> jax.Array:
  # One key per row: the same row samples the same token in any batch.
  return jax.vmap(jax.random.categorical)(keys_B, logits_BV).astype(jnp.int32)


def _take(x_BV: jax.Array, index_B: jax.Array) -> jax.Array:
  return jnp.take_along_axis(x_BV, index_B[:, None], axis=1)[:, 0]


def argmax(logits_BV: jax.Array) -> jax.Array:
  """`jnp.argmax` over the last axis (first index of the maximum), int32.

  Two plain reductions (max, then the smallest index that holds it): XLA
  on CPU ran argmax's single (value, index) reduction 2-4x slower per
  decode step (64 x 384 and 64 x 8192 logits).
  """
  vocab = logits_BV.shape[-1]
  max_B1 = jnp.max(logits_BV, axis=-1, keepdims=True)
  index_V = jnp.arange(vocab, dtype=jnp.int32)
  first_B = jnp.min(jnp.where(logits_BV == max_B1, index_V, vocab), axis=-1)
  return jnp.minimum(first_B, vocab - 1)  # a NaN row still gives a token


@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding. The sampled distribution is a point mass: log-prob 0."""

  def log_probs(self, logits_BV: jax.Array) -> jax.Array:
    hot_BV = jax.nn.one_hot(argmax(logits_BV), logits_BV.shape[-1],
                            dtype=jnp.bool_)
    return jnp.where(hot_BV, 0.0, _MASKED).astype(jnp.float32)

  def sample(self, logits_BV, keys_B):
    del keys_B  # deterministic
    tokens_B = argmax(logits_BV)
    return tokens_B, jnp.zeros(tokens_B.shape, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Temperature:
  """Samples from `softmax(logits / temperature)`."""
  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)

  def log_probs(self, logits_BV):
    return jax.nn.log_softmax(logits_BV / self.temperature, axis=-1)

  def sample(self, logits_BV, keys_B):
    logp_BV = self.log_probs(logits_BV)
    tokens_B = _categorical(keys_B, logp_BV)
    return tokens_B, _take(logp_BV, tokens_B)


@dataclasses.dataclass(frozen=True)
class TopK:
  """Temperature, then sampling among the `k` most likely tokens."""
  k: int
  temperature: float = 1.0

  def __post_init__(self):
    if not isinstance(self.k, int) or self.k < 1:
      raise ValueError(f'TopK.k={self.k!r}: must be a positive int')
    _check_temperature(self.temperature)

  def log_probs(self, logits_BV):
    k = min(self.k, logits_BV.shape[-1])
    scaled_BV = logits_BV / self.temperature
    kth_B1 = jax.lax.top_k(scaled_BV, k)[0][:, -1:]
    # Ties at the k-th value keep all tied tokens here; `sample` keeps exactly
    # k. With float logits of a trained or random model ties are negligible.
    masked_BV = jnp.where(scaled_BV >= kth_B1, scaled_BV, _MASKED)
    return jax.nn.log_softmax(masked_BV, axis=-1)

  def sample(self, logits_BV, keys_B):
    k = min(self.k, logits_BV.shape[-1])
    # Sampling inside the top-k values avoids a full-vocab softmax per step.
    values_BK, index_BK = jax.lax.top_k(logits_BV / self.temperature, k)
    logp_BK = jax.nn.log_softmax(values_BK, axis=-1)
    choice_B = _categorical(keys_B, logp_BK)
    return _take(index_BK, choice_B), _take(logp_BK, choice_B)


@dataclasses.dataclass(frozen=True)
class TopP:
  """Temperature, then nucleus sampling: the smallest set of most likely
  tokens whose probability reaches `p` (always at least one token)."""
  p: float
  temperature: float = 1.0

  def __post_init__(self):
    if not 0.0 < self.p <= 1.0:
      raise ValueError(f'TopP.p={self.p}: must be in (0, 1]')
    _check_temperature(self.temperature)

  def _sorted(self, logits_BV):
    values_BV, index_BV = jax.lax.top_k(logits_BV / self.temperature,
                                        logits_BV.shape[-1])
    probs_BV = jax.nn.softmax(values_BV, axis=-1)
    # A token is kept if the mass strictly before it is below p.
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    keep_BV = before_BV < self.p
    logp_BV = jax.nn.log_softmax(jnp.where(keep_BV, values_BV, _MASKED),
                                 axis=-1)
    return logp_BV, index_BV

  def log_probs(self, logits_BV):
    logp_sorted_BV, index_BV = self._sorted(logits_BV)
    rows_B1 = jnp.arange(logits_BV.shape[0])[:, None]
    return jnp.full(logits_BV.shape, _MASKED, jnp.float32).at[
        rows_B1, index_BV].set(logp_sorted_BV)

  def sample(self, logits_BV, keys_B):
    logp_sorted_BV, index_BV = self._sorted(logits_BV)
    choice_B = _categorical(keys_B, logp_sorted_BV)
    return _take(index_BV, choice_B), _take(logp_sorted_BV, choice_B)


def static_part(method: SamplingMethod) -> SamplingMethod:
  """What a compiled program depends on: `method`'s filter at temperature 1.

  Greedy is plain temperature sampling here: its rows carry temperature 0
  (see `sample_rows`). Methods that differ only by temperature map to the
  same (equal, hashable) value, so they share compiled programs.
  """
  if isinstance(method, Greedy):
    return Temperature(1.0)
  return dataclasses.replace(method, temperature=1.0)


def default_temperature(method: SamplingMethod) -> float:
  """The temperature of `method`'s rows: 0 for `Greedy` (argmax)."""
  return 0.0 if isinstance(method, Greedy) else float(method.temperature)


def check_row_temperature(temperature, where: str) -> float:
  """A row's temperature as a float: finite and >= 0 (0: greedy)."""
  if (isinstance(temperature, bool) or
      not isinstance(temperature, (int, float, np.integer, np.floating)) or
      not math.isfinite(temperature) or temperature < 0):
    raise ValueError(f'{where}: temperature={temperature!r} must be a finite '
                     'number >= 0 (0: greedy)')
  return float(temperature)


def sample_rows(method: SamplingMethod, logits_BV: jax.Array,
                keys_B: jax.Array,
                temperature_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Samples each row at its own temperature, through `method`'s filter.

  Args:
    method: its filter (top-k / top-p) applies after the temperature; its
      own temperature is ignored (`static_part`).
    logits_BV: fp32 logits.
    keys_B: one PRNG key per row (unused by greedy rows).
    temperature_B: [B] float32; 0 takes the argmax with log-prob 0, as
      `Greedy` does; t > 0 samples from softmax(logits / t), as `method`
      at temperature t does.

  Returns:
    Tokens `[B]` int32 and their log-probs `[B]` float32.
  """
  greedy_B = temperature_B == 0
  # Greedy rows divide by 1, not 0: their discarded sample stays finite.
  # x / 1 is exact, so a row at t = 1 samples from the unscaled logits.
  safe_B1 = jnp.where(greedy_B, 1.0, temperature_B)[:, None]
  tokens_B, logp_B = static_part(method).sample(logits_BV / safe_B1, keys_B)
  tokens_B = jnp.where(greedy_B, argmax(logits_BV), tokens_B)
  return tokens_B, jnp.where(greedy_B, 0.0, logp_B).astype(jnp.float32)
