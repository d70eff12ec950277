"""Architecture configuration of the decoder: Gemma 1/2/3 and Qwen3.

One frozen dataclass covers the Gemma 1, Gemma 2, Gemma 3 and Qwen3 text
models. They differ only in switches:

  Gemma 2/3 vs 1: post norms, soft-capping, sliding-window layers;
  Gemma 3: QK-norm, per-layer RoPE bases;
  Qwen3 vs Gemma: RMSNorm gain `w` instead of `1 + w`
    (`norm_scale_plus_one`), no sqrt(D) embedding scale (`embed_scale`),
    SwiGLU instead of GeGLU (`mlp_activation`), QK-norm, no post norms, and
    an output head that may be untied from the embedding
    (`tie_embeddings`).

Defaults are Gemma 3's; the presets at the bottom set every switch of their
family and give the published shapes and the tiny CPU shapes the tests use.
`family` only names the Hugging Face architecture a config round-trips to
(`hf_io.config_to_hf` refuses switches that architecture cannot express).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

# Attention kinds of a layer, in Hugging Face's `layer_types` spelling.
GLOBAL = 'full_attention'
LOCAL = 'sliding_attention'

Family = Literal['gemma', 'gemma2', 'gemma3', 'qwen3']
FAMILIES = ('gemma', 'gemma2', 'gemma3', 'qwen3')
_DTYPES = ('float32', 'bfloat16')
# The gate's nonlinearity of the gated MLP: GeGLU (Gemma), SwiGLU (Qwen3).
MLP_ACTIVATIONS = ('gelu_tanh', 'silu')


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Shapes and switches of the decoder (Gemma 1/2/3 or Qwen3).

  Attributes:
    family: which Hugging Face architecture this model round-trips to.
    vocab_size: V, rows of the embedding table (and of the output head).
    embed_dim: D, the residual width.
    num_layers: number of decoder blocks.
    num_heads: N, query heads.
    num_kv_heads: K, key/value heads (K = N: MHA, K = 1: MQA, else GQA).
    head_dim: H.
    mlp_dim: F, hidden width of the gated feed-forward.
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
    use_qk_norm: Gemma 3 and Qwen3 RMS-normalise queries and keys per head
      (before RoPE).
    norm_scale_plus_one: RMSNorm gain `1 + w` with `w` initialised to zeros
      (Gemma); False: gain `w` initialised to ones (Qwen3). Applies to every
      norm, QK-norm included.
    embed_scale: multiply token embeddings by sqrt(D) (Gemma; Qwen3 does
      not).
    mlp_activation: the gate's nonlinearity: 'gelu_tanh' (GeGLU, Gemma) or
      'silu' (SwiGLU, Qwen3).
    tie_embeddings: the output head is the embedding table (Gemma, Qwen3
      0.6B-4B); False: a separate `lm_head` `[V, D]` (Qwen3 8B and up).
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
  norm_scale_plus_one: bool = True
  embed_scale: bool = True
  mlp_activation: str = 'gelu_tanh'
  tie_embeddings: bool = True
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
    if self.family not in FAMILIES:
      raise ValueError(f'model.family={self.family!r}: expected one of '
                       f'{FAMILIES}')
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
    if self.mlp_activation not in MLP_ACTIVATIONS:
      raise ValueError(f'model.mlp_activation={self.mlp_activation!r}: '
                       f'expected one of {MLP_ACTIVATIONS}')
    for name in ('use_post_attn_norm', 'use_post_ffw_norm', 'use_qk_norm',
                 'norm_scale_plus_one', 'embed_scale', 'tie_embeddings'):
      # A string such as 'false' from a command line would read as True.
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f'model.{name}={getattr(self, name)!r}: must be '
                         'True or False')

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Parameter count (a tied head counted once, an untied one apart)."""
    d, n, k, h, f = (self.embed_dim, self.num_heads, self.num_kv_heads,
                     self.head_dim, self.mlp_dim)
    attn = d * h * (2 * n + 2 * k)
    norms = d * (2 + self.use_post_attn_norm + self.use_post_ffw_norm)
    norms += 2 * h * self.use_qk_norm
    per_layer = attn + 3 * d * f + norms
    embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return embeddings + self.num_layers * per_layer + d


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


def gemma3_270m(**overrides) -> ModelConfig:
  """Gemma 3 270M: a 262k vocabulary (170M of its 268M parameters are the
  embedding), 1 KV head, 5 local : 1 global layers."""
  return _preset(dict(
      family='gemma3', vocab_size=262_144, embed_dim=640, num_layers=18,
      num_heads=4, num_kv_heads=1, head_dim=256, mlp_dim=2048,
      layer_types=_alternating(18, 6), sliding_window=512,
      rope_base_global=1_000_000.0, rope_base_local=10_000.0,
      query_pre_attn_scalar=256.0), overrides)


# Qwen3's switches: plain-gain norms, no embedding scale, SwiGLU, QK-norm,
# no post norms, soft-caps or sliding layers, RoPE base 1e6 everywhere.
_QWEN3 = dict(
    family='qwen3', norm_scale_plus_one=False, embed_scale=False,
    mlp_activation='silu', use_qk_norm=True, use_post_attn_norm=False,
    use_post_ffw_norm=False, rope_base_global=1_000_000.0,
    rope_base_local=1_000_000.0)


def qwen3_0_6b(**overrides) -> ModelConfig:
  """Qwen3 0.6B (tied head; 596M parameters)."""
  return _preset(dict(
      _QWEN3, vocab_size=151_936, embed_dim=1024, num_layers=28,
      num_heads=16, num_kv_heads=8, head_dim=128, mlp_dim=3072), overrides)


def qwen3_4b(**overrides) -> ModelConfig:
  """Qwen3 4B (tied head; 4.02B parameters)."""
  return _preset(dict(
      _QWEN3, vocab_size=151_936, embed_dim=2560, num_layers=36,
      num_heads=32, num_kv_heads=8, head_dim=128, mlp_dim=9728), overrides)


def tiny(**overrides) -> ModelConfig:
  """A Gemma-3-style model of 788,288 parameters that trains on a CPU."""
  return _preset(dict(
      family='gemma3', vocab_size=384, embed_dim=128, num_layers=3,
      num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=512,
      layer_types=(LOCAL, LOCAL, GLOBAL), sliding_window=256), overrides)


def tiny_qwen3(**overrides) -> ModelConfig:
  """`tiny`'s shapes as a Qwen3 (tied head; 787,520 parameters)."""
  return _preset(dict(
      _QWEN3, vocab_size=384, embed_dim=128, num_layers=3, num_heads=4,
      num_kv_heads=2, head_dim=32, mlp_dim=512), overrides)


PRESETS = {
    'gemma_2b': gemma_2b,
    'gemma2_2b': gemma2_2b,
    'gemma3_1b': gemma3_1b,
    'gemma3_270m': gemma3_270m,
    'qwen3_0_6b': qwen3_0_6b,
    'qwen3_4b': qwen3_4b,
    'tiny': tiny,
    'tiny_qwen3': tiny_qwen3,
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
