"""Architecture configuration for the Gemma-family decoder.

One frozen dataclass covers Gemma 1, Gemma 2 and Gemma 3 text models; the
generations differ only in switches (post norms, QK-norm, soft-capping,
sliding-window layers, per-layer RoPE bases). Presets at the bottom give the
published shapes and the tiny CPU shapes the tests use.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

# Attention kinds of a layer, in Hugging Face's `layer_types` spelling.
GLOBAL = 'full_attention'
LOCAL = 'sliding_attention'

Family = Literal['gemma', 'gemma2', 'gemma3']
_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Shapes and switches of a Gemma-style decoder.

  Attributes:
    family: which Hugging Face architecture this model round-trips to.
    vocab_size: V, rows of the (tied) embedding table.
    embed_dim: D, the residual width.
    num_layers: number of decoder blocks.
    num_heads: N, query heads.
    num_kv_heads: K, key/value heads (K = N: MHA, K = 1: MQA, else GQA).
    head_dim: H.
    mlp_dim: F, hidden width of the GeGLU feed-forward.
    layer_types: per layer, `GLOBAL` or `LOCAL` (sliding-window) attention.
    sliding_window: keys a LOCAL layer sees: q_pos - k_pos < sliding_window.
    rope_base_global: RoPE base of GLOBAL layers.
    rope_base_local: RoPE base of LOCAL layers.
    rope_scale_global: linear RoPE scaling factor of GLOBAL layers (Gemma 3
      4B+ uses 8); positions are divided by it.
    query_pre_attn_scalar: queries are scaled by its inverse square root.
    attn_logit_softcap: `cap * tanh(logits / cap)` on attention logits.
    final_logit_softcap: the same on the output logits.
    use_post_attn_norm: Gemma 2/3 norm the attention output before the
      residual add (Gemma 1 does not).
    use_post_ffw_norm: Gemma 2/3 norm the MLP output before the residual add.
    use_qk_norm: Gemma 3 RMS-normalises queries and keys per head.
    norm_eps: RMSNorm epsilon.
    dtype: activation/compute dtype; softmax and norms always run in fp32.
    param_dtype: storage dtype of the parameters.
  """

  family: Family = 'gemma3'
  vocab_size: int
  embed_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  layer_types: tuple[str, ...] = ()
  sliding_window: int | None = None
  rope_base_global: float = 10_000.0
  rope_base_local: float = 10_000.0
  rope_scale_global: float = 1.0
  query_pre_attn_scalar: float | None = None
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  use_post_attn_norm: bool = True
  use_post_ffw_norm: bool = True
  use_qk_norm: bool = True
  norm_eps: float = 1e-6
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  def __post_init__(self):
    if not self.layer_types:
      object.__setattr__(self, 'layer_types', (GLOBAL,) * self.num_layers)
    object.__setattr__(self, 'layer_types', tuple(self.layer_types))
    if self.query_pre_attn_scalar is None:
      object.__setattr__(self, 'query_pre_attn_scalar', float(self.head_dim))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    if self.family not in ('gemma', 'gemma2', 'gemma3'):
      raise ValueError(f'model.family={self.family!r}: expected gemma, '
                       'gemma2 or gemma3')
    for name in ('vocab_size', 'embed_dim', 'num_layers', 'num_heads',
                 'num_kv_heads', 'head_dim', 'mlp_dim'):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f'model.{name}={value!r}: must be a positive int')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f'model.num_heads={self.num_heads} is not a multiple of '
          f'model.num_kv_heads={self.num_kv_heads} (grouped-query attention '
          'needs whole groups)')
    if self.head_dim % 2:
      raise ValueError(f'model.head_dim={self.head_dim}: RoPE needs it even')
    if len(self.layer_types) != self.num_layers:
      raise ValueError(
          f'model.layer_types has {len(self.layer_types)} entries, '
          f'model.num_layers={self.num_layers}')
    bad = sorted(set(self.layer_types) - {GLOBAL, LOCAL})
    if bad:
      raise ValueError(f'model.layer_types: unknown kinds {bad}; use '
                       f'{GLOBAL!r} or {LOCAL!r}')
    if LOCAL in self.layer_types and not self.sliding_window:
      raise ValueError('model.sliding_window must be set (> 0) when '
                       'model.layer_types has sliding_attention layers')
    for name in ('dtype', 'param_dtype'):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f'model.{name}={getattr(self, name)!r}: expected '
                         f'one of {_DTYPES}')
    for name in ('attn_logit_softcap', 'final_logit_softcap'):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f'model.{name}={value}: must be > 0 or None')
    if self.rope_scale_global <= 0:
      raise ValueError(f'model.rope_scale_global={self.rope_scale_global}: '
                       'must be > 0')

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Parameter count (tied embedding counted once)."""
    d, n, k, h, f = (self.embed_dim, self.num_heads, self.num_kv_heads,
                     self.head_dim, self.mlp_dim)
    attn = d * h * (2 * n + 2 * k)
    norms = d * (2 + self.use_post_attn_norm + self.use_post_ffw_norm)
    norms += 2 * h * self.use_qk_norm
    per_layer = attn + 3 * d * f + norms
    return self.vocab_size * d + self.num_layers * per_layer + d


def _alternating(num_layers: int, period: int) -> tuple[str, ...]:
  """Hugging Face's pattern: every `period`-th layer is global."""
  return tuple(GLOBAL if (i + 1) % period == 0 else LOCAL
               for i in range(num_layers))


def _preset(base: dict, overrides: dict) -> ModelConfig:
  return ModelConfig(**{**base, **overrides})


def gemma_2b(**overrides) -> ModelConfig:
  """Gemma 1 2B."""
  return _preset(dict(
      family='gemma', vocab_size=256_000, embed_dim=2048, num_layers=18,
      num_heads=8, num_kv_heads=1, head_dim=256, mlp_dim=16_384,
      use_post_attn_norm=False, use_post_ffw_norm=False, use_qk_norm=False),
                 overrides)


def gemma2_2b(**overrides) -> ModelConfig:
  """Gemma 2 2B: sliding window on even layers, both soft-caps."""
  return _preset(dict(
      family='gemma2', vocab_size=256_000, embed_dim=2304, num_layers=26,
      num_heads=8, num_kv_heads=4, head_dim=256, mlp_dim=9216,
      layer_types=_alternating(26, 2), sliding_window=4096,
      query_pre_attn_scalar=256.0, attn_logit_softcap=50.0,
      final_logit_softcap=30.0, use_qk_norm=False), overrides)


def gemma3_1b(**overrides) -> ModelConfig:
  """Gemma 3 1B: 5 local : 1 global layers, QK-norm, two RoPE bases."""
  return _preset(dict(
      family='gemma3', vocab_size=262_144, embed_dim=1152, num_layers=26,
      num_heads=4, num_kv_heads=1, head_dim=256, mlp_dim=6912,
      layer_types=_alternating(26, 6), sliding_window=512,
      rope_base_global=1_000_000.0, rope_base_local=10_000.0,
      query_pre_attn_scalar=256.0), overrides)


def tiny(**overrides) -> ModelConfig:
  """A Gemma-3-style model of ~0.6M parameters that trains on a CPU."""
  return _preset(dict(
      family='gemma3', vocab_size=384, embed_dim=128, num_layers=3,
      num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=512,
      layer_types=(LOCAL, LOCAL, GLOBAL), sliding_window=256), overrides)


PRESETS = {
    'gemma_2b': gemma_2b,
    'gemma2_2b': gemma2_2b,
    'gemma3_1b': gemma3_1b,
    'tiny': tiny,
}


def from_dict(fields: dict) -> ModelConfig:
  """Builds a ModelConfig from a config dict, optionally naming a preset.

  `{'preset': 'gemma3_1b', 'dtype': 'bfloat16'}` starts from the preset and
  overrides fields; without `preset` every required field must be given.
  Unknown keys are refused with their name.
  """
  fields = dict(fields)
  preset = fields.pop('preset', None)
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f'model: unknown fields {unknown}; known: '
                     f'{sorted(known)}')
  if 'layer_types' in fields and fields['layer_types'] is not None:
    fields['layer_types'] = tuple(fields['layer_types'])
  if preset is None:
    return ModelConfig(**fields)
  if preset not in PRESETS:
    raise ValueError(f'model.preset={preset!r}: expected one of '
                     f'{sorted(PRESETS)}')
  return PRESETS[preset](**fields)
