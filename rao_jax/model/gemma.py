"""The decoder of Gemma 1, 2, 3 and Qwen3 text models in flax.nnx.

One pre-norm decoder; `config.ModelConfig` switches between the families:
post norms (Gemma 2/3), QK-norm (Gemma 3, Qwen3), soft-caps and sliding
window layers (Gemma 2/3), RMSNorm gain `1 + w` (Gemma) or `w` (Qwen3),
sqrt(D) embedding scale (Gemma), GeGLU (Gemma) or SwiGLU (Qwen3) MLP, and
a tied or separate output head (`Transformer.logits`).

Einsum letters, as in google-deepmind/gemma:
  B batch, T query length, S key length (= cache length when decoding),
  D model width, N query heads, K key/value heads, G = N // K query heads
  per KV head, H head dim, F feed-forward width, V vocab.

Parameters name logical axes only (`vocab`, `embed`, `heads`, `kv_heads`,
`head_dim`, `mlp`, `norm`, and `fused` for the axis that stacks fused
projections); `sharding.py` maps them to the mesh. An untied output head
`lm_head` [V, D] is laid out as the embedding table, ('vocab', 'embed').

The forward pass takes token ids, their positions and segment ids
(0 = padding). Without a cache, a token attends to earlier tokens of its own
segment, so several sequences can be packed into one row. With a cache, each
batch row holds one sequence whose cache index equals its position: a call
writes its (non-padding) tokens' keys and values at their positions and
attends to every cache index up to the query's position.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import flax.struct
from flax import nnx
import jax
import jax.numpy as jnp

from rao_jax.model import config as config_lib
from rao_jax.model import sharding

# Finite stand-in for -inf: a fully masked row (a padding query) then gets a
# uniform softmax instead of NaNs.
_MASK_VALUE = -2.3819763e38


@flax.struct.dataclass
class LayerCache:
  """Keys and values of one layer for every batch row."""
  # [B, K, S, H]: KV heads ahead of positions, so attention's batched dots
  # (batch dims B, K) read the cache in place; a [B, S, K, H] cache was
  # transposed in full by XLA on every decode step.
  k: jax.Array  # [B, K, S, H]
  v: jax.Array  # [B, K, S, H]


Cache = tuple[LayerCache, ...]

# Logical axes of a cache tensor; the sampler shards its slots with them.
CACHE_AXES = (sharding.BATCH, sharding.KV_HEADS, sharding.CACHE_LEN, 'head_dim')


def init_cache(config: config_lib.ModelConfig, batch_size: int, max_len: int,
               dtype: jnp.dtype | None = None) -> Cache:
  """A zeroed KV cache of `max_len` positions for `batch_size` rows."""
  dtype = config.compute_dtype if dtype is None else dtype
  shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)

  def zeros():
    return sharding.shard(jnp.zeros(shape, dtype), CACHE_AXES)

  return tuple(LayerCache(k=zeros(), v=zeros())
               for _ in range(config.num_layers))


def _param(rngs: nnx.Rngs, init, shape: Sequence[int], dtype: jnp.dtype,
           names: tuple[str, ...]) -> nnx.Param:
  # Sharding is applied by `params.create_model` (or a loader), not eagerly
  # here, so the model can also be built plainly without a mesh.
  return nnx.Param(init(rngs.params(), tuple(shape), dtype),
                   out_sharding=names, eager_sharding=False)


def _fan_in_init(in_axes: tuple[int, ...], out_axes: tuple[int, ...],
                 batch_axes: tuple[int, ...] = ()):
  return nnx.initializers.variance_scaling(
      1.0, 'fan_in', 'truncated_normal', in_axis=in_axes, out_axis=out_axes,
      batch_axis=batch_axes)


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
  """`cap * tanh(x / cap)`; identity when cap is None."""
  if cap is None:
    return x
  return jnp.tanh(x / cap) * cap


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, base: float,
               scale: float = 1.0) -> jax.Array:
  """Rotary embedding, half-split layout (as Gemma and `transformers` use)."""
  head_dim = x_BTNH.shape[-1]
  fraction = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  inv_freq_h = 1.0 / (base**fraction) / scale
  angle_BTh = positions_BT.astype(jnp.float32)[..., None] * inv_freq_h[None, None]
  sin_BT1h = jnp.sin(angle_BTh)[:, :, None, :]
  cos_BT1h = jnp.cos(angle_BTh)[:, :, None, :]
  # RoPE in fp32: bf16 angles lose the low bits of large positions.
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate(
      [x1 * cos_BT1h - x2 * sin_BT1h, x2 * cos_BT1h + x1 * sin_BT1h], axis=-1)
  return out.astype(x_BTNH.dtype)


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis.

  Gemma's gain is `1 + scale` with scale starting at zero; with
  `plus_one=False` (Qwen3) the gain is `scale` itself, starting at one.
  """

  def __init__(self, dim: int, *, eps: float, param_dtype: jnp.dtype,
               plus_one: bool = True):
    self.eps = eps
    self.plus_one = plus_one
    init = jnp.zeros if plus_one else jnp.ones
    self.scale = nnx.Param(init((dim,), param_dtype),
                           out_sharding=('norm',), eager_sharding=False)

  def __call__(self, x: jax.Array) -> jax.Array:
    # Normalise in fp32 whatever the compute dtype.
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    gain = self.scale[...].astype(jnp.float32)
    if self.plus_one:
      gain = 1.0 + gain
    return (y * gain.reshape((1,) * (y.ndim - 1) + gain.shape)).astype(x.dtype)


def _norm(config: config_lib.ModelConfig, dim: int) -> RMSNorm:
  return RMSNorm(dim, eps=config.norm_eps, param_dtype=config.weight_dtype,
                 plus_one=config.norm_scale_plus_one)


class Embedder(nnx.Module):
  """Token embedding (scaled by sqrt(D) for Gemma); the tied output head."""

  def __init__(self, config: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    init = nnx.initializers.normal(stddev=config.embed_dim**-0.5)
    self.table = _param(rngs, init, (config.vocab_size, config.embed_dim),
                        config.weight_dtype, ('vocab', 'embed'))  # [V, D]

  def encode(self, tokens_BT: jax.Array) -> jax.Array:
    dtype = self.config.compute_dtype
    x_BTD = jnp.take(self.table[...], tokens_BT, axis=0).astype(dtype)
    if not self.config.embed_scale:
      return x_BTD
    # The normaliser is rounded to the compute dtype first, as Gemma does.
    return x_BTD * jnp.asarray(math.sqrt(self.config.embed_dim), dtype)

  def decode(self, x_BTD: jax.Array) -> jax.Array:
    table_VD = self.table[...].astype(x_BTD.dtype)
    return jnp.einsum('BTD,VD->BTV', x_BTD, table_VD)


class Attention(nnx.Module):
  """Grouped-query attention with RoPE, optional QK-norm, soft-cap, window."""

  def __init__(self, config: config_lib.ModelConfig, layer_type: str, *,
               rngs: nnx.Rngs):
    self.config = config
    self.is_local = layer_type == config_lib.LOCAL
    d, n, k, h = (config.embed_dim, config.num_heads, config.num_kv_heads,
                  config.head_dim)
    dtype = config.weight_dtype
    in_init = _fan_in_init((0,), (1, 2))
    self.q_proj = _param(rngs, in_init, (d, n, h), dtype,
                         ('embed', 'heads', 'head_dim'))  # [D, N, H]
    self.k_proj = _param(rngs, in_init, (d, k, h), dtype,
                         ('embed', 'kv_heads', 'head_dim'))  # [D, K, H]
    self.v_proj = _param(rngs, in_init, (d, k, h), dtype,
                         ('embed', 'kv_heads', 'head_dim'))  # [D, K, H]
    self.o_proj = _param(rngs, _fan_in_init((0, 1), (2,)), (n, h, d), dtype,
                         ('heads', 'head_dim', 'embed'))  # [N, H, D]
    if config.use_qk_norm:
      self.q_norm = _norm(config, h)
      self.k_norm = _norm(config, h)
    # Low-rank adapters (`lora.add_adapters`); None: the plain projection.
    # nnx.data: attributes that may later hold a module (an adapter).
    self.q_lora = nnx.data(None)
    self.k_lora = nnx.data(None)
    self.v_lora = nnx.data(None)
    self.o_lora = nnx.data(None)

  def __call__(
      self,
      x_BTD: jax.Array,
      positions_BT: jax.Array,
      segment_ids_BT: jax.Array,
      cache: LayerCache | None,
  ) -> tuple[jax.Array, LayerCache | None]:
    cfg = self.config
    dtype = cfg.compute_dtype
    q_BTNH = jnp.einsum('BTD,DNH->BTNH', x_BTD, self.q_proj[...].astype(dtype))
    k_BTKH = jnp.einsum('BTD,DKH->BTKH', x_BTD, self.k_proj[...].astype(dtype))
    v_BTKH = jnp.einsum('BTD,DKH->BTKH', x_BTD, self.v_proj[...].astype(dtype))
    q_BTNH = _adapted(self.q_lora, x_BTD, q_BTNH)
    k_BTKH = _adapted(self.k_lora, x_BTD, k_BTKH)
    v_BTKH = _adapted(self.v_lora, x_BTD, v_BTKH)
    if cfg.use_qk_norm:
      q_BTNH = self.q_norm(q_BTNH)
      k_BTKH = self.k_norm(k_BTKH)
    if self.is_local:
      base, scale = cfg.rope_base_local, 1.0
    else:
      base, scale = cfg.rope_base_global, cfg.rope_scale_global
    q_BTNH = apply_rope(q_BTNH, positions_BT, base, scale)
    k_BTKH = apply_rope(k_BTKH, positions_BT, base, scale)
    q_BTNH = q_BTNH * jnp.asarray(cfg.query_pre_attn_scalar**-0.5, dtype)

    if cache is None:
      keys_BKSH = jnp.swapaxes(k_BTKH, 1, 2)
      values_BKSH = jnp.swapaxes(v_BTKH, 1, 2)
      mask_BTS = _segment_mask(positions_BT, segment_ids_BT)
      key_pos_BS = positions_BT
    else:
      cache = _write_cache(cache, k_BTKH, v_BTKH, positions_BT,
                           segment_ids_BT)
      keys_BKSH, values_BKSH = cache.k, cache.v
      # Cache index == position: every index up to the query's position holds
      # this row's own sequence (a reused row is overwritten from 0 up).
      key_pos_BS = jnp.broadcast_to(
          jnp.arange(keys_BKSH.shape[2], dtype=positions_BT.dtype),
          (keys_BKSH.shape[0], keys_BKSH.shape[2]))
      mask_BTS = key_pos_BS[:, None, :] <= positions_BT[:, :, None]
    if self.is_local:
      distance_BTS = positions_BT[:, :, None] - key_pos_BS[:, None, :]
      mask_BTS &= distance_BTS < cfg.sliding_window

    b, t, n, h = q_BTNH.shape
    q_BTKGH = q_BTNH.reshape(b, t, cfg.num_kv_heads, n // cfg.num_kv_heads, h)
    out_BTKGH = _attend(q_BTKGH, keys_BKSH, values_BKSH, mask_BTS,
                        cfg.attn_logit_softcap)
    out_BTNH = out_BTKGH.reshape(b, t, n, h)
    # One [N*H, D] matmul: given [N, H, D], XLA on CPU transposed the whole
    # weight on every decode step (to match the attention output's layout)
    # instead of the small activation.
    o_FD = self.o_proj[...].astype(dtype).reshape(n * h, -1)
    out_BTF = out_BTNH.reshape(b, t, n * h)
    out_BTD = jnp.einsum('BTF,FD->BTD', out_BTF, o_FD)
    return _adapted(self.o_lora, out_BTF, out_BTD), cache


def _adapted(adapter, x_BTI: jax.Array, y_BTO: jax.Array) -> jax.Array:
  """`y` plus the low-rank adapter's update from the projection's input
  (flattened to [B, T, in]); `y` unchanged without an adapter."""
  if adapter is None:
    return y_BTO
  b, t = x_BTI.shape[:2]
  delta = adapter(x_BTI.reshape(b, t, -1)).astype(y_BTO.dtype)
  return y_BTO + delta.reshape(y_BTO.shape)


def _attend(q_BTKGH: jax.Array, keys_BKSH: jax.Array, values_BKSH: jax.Array,
            mask_BTS: jax.Array, cap: float | None) -> jax.Array:
  """Grouped-query attention of T queries over S keys; fp32 softmax."""
  logits_BKGTS = jnp.einsum('BTKGH,BKSH->BKGTS', q_BTKGH, keys_BKSH,
                            preferred_element_type=jnp.float32)
  logits_BKGTS = softcap(logits_BKGTS, cap)
  logits_BKGTS = jnp.where(mask_BTS[:, None, None], logits_BKGTS, _MASK_VALUE)
  # Softmax in fp32.
  probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(q_BTKGH.dtype)
  # Output in the batched dot's natural order (batch dims B, K first), then
  # transposed (a bitcast when T == 1): asked for BTKGH directly, XLA on CPU
  # emitted a dot with a [B, K, H, G] output that ran ~2.4x slower per
  # decode step.
  out_BKGTH = jnp.einsum('BKGTS,BKSH->BKGTH', probs_BKGTS, values_BKSH)
  return jnp.transpose(out_BKGTH, (0, 3, 1, 2, 4))


def _segment_mask(positions_BT: jax.Array,
                  segment_ids_BT: jax.Array) -> jax.Array:
  """Causal attention within a segment; padding (segment 0) sees nothing."""
  t = positions_BT.shape[1]
  same_segment_BTS = segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
  key_real_B1S = (segment_ids_BT != 0)[:, None, :]
  causal_TS = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
  return same_segment_BTS & key_real_B1S & causal_TS[None]


def _write_cache(cache: LayerCache, k_BTKH: jax.Array, v_BTKH: jax.Array,
                 positions_BT: jax.Array,
                 segment_ids_BT: jax.Array) -> LayerCache:
  """Writes keys/values at their positions; padding tokens are not written."""
  max_len = cache.k.shape[2]
  # Padding is sent out of range, where the scatter drops it.
  index_BT = jnp.where(segment_ids_BT != 0, positions_BT, max_len)
  rows_B1 = jnp.arange(index_BT.shape[0])[:, None]
  # Advanced indices around a slice: the indexed view is [B, T, K, H].
  k = cache.k.at[rows_B1, :, index_BT].set(k_BTKH.astype(cache.k.dtype),
                                           mode='drop')
  v = cache.v.at[rows_B1, :, index_BT].set(v_BTKH.astype(cache.v.dtype),
                                           mode='drop')
  return LayerCache(k=sharding.shard(k, CACHE_AXES),
                    v=sharding.shard(v, CACHE_AXES))


class FeedForward(nnx.Module):
  """Gated MLP: down(act(gate(x)) * up(x)), act gelu_tanh (GeGLU, Gemma) or
  silu (SwiGLU, Qwen3).

  Gate and up projections are one parameter, `gating_einsum` [2, F, D], laid
  out as google-deepmind/gemma's (transposed) gating einsum and as
  `transformers` stores each half: one dot reads both. The down projection
  is [D, F] (out, in). Both contract the minor (D or F) axis: at batch 1 on
  CPU these matrix-vector products ran ~20% faster than separate gate/up
  [D, F] and a down [F, D] weight (130M config, measured in one process).
  """

  def __init__(self, config: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    d, f, dtype = config.embed_dim, config.mlp_dim, config.weight_dtype
    self.gating_einsum = _param(
        rngs, _fan_in_init((2,), (1,), batch_axes=(0,)), (2, f, d), dtype,
        ('fused', 'mlp', 'embed'))  # [2, F, D]: gate, up
    self.down_proj = _param(rngs, _fan_in_init((1,), (0,)), (d, f), dtype,
                            ('embed', 'mlp'))  # [D, F]
    # Low-rank adapters (`lora.add_adapters`): D -> [2F] and F -> D.
    self.gating_lora = nnx.data(None)
    self.down_lora = nnx.data(None)

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    dtype = self.config.compute_dtype
    gating_CFD = self.gating_einsum[...].astype(dtype)
    c, f, d = gating_CFD.shape
    if sharding.current_parts('mlp') == 1:
      # One [B*T, D] x [2F, D] dot (E = 2F) on a free reshape of the
      # weight. Given
      # `BTD,CFD->BTCF` XLA on CPU copied the whole weight every call, and
      # given `->CBTF` it transposed the activations (tiny config, 64 rows:
      # the MLP ~15% slower).
      b, t, _ = x_BTD.shape
      gating_BTCF = jnp.einsum('BD,ED->BE', x_BTD.reshape(b * t, d),
                               gating_CFD.reshape(c * f, d)).reshape(
                                   b, t, c, f)
      gate_BTF, up_BTF = gating_BTCF[:, :, 0], gating_BTCF[:, :, 1]
    else:
      # F split over the mesh: merging it into [2F] would make GSPMD gather
      # the weight, so the fused axis leads the output instead.
      gating_CBTF = jnp.einsum('BTD,CFD->CBTF', x_BTD, gating_CFD)
      gate_BTF, up_BTF = gating_CBTF[0], gating_CBTF[1]
    if self.gating_lora is not None:
      # The adapter's [2F] output is laid out as the weight's (gate, up).
      delta_BTCF = self.gating_lora(x_BTD).astype(dtype).reshape(
          x_BTD.shape[:2] + (c, f))
      gate_BTF = gate_BTF + delta_BTCF[:, :, 0]
      up_BTF = up_BTF + delta_BTCF[:, :, 1]
    if self.config.mlp_activation == 'silu':
      hidden_BTF = jax.nn.silu(gate_BTF) * up_BTF
    else:
      hidden_BTF = jax.nn.gelu(gate_BTF, approximate=True) * up_BTF
    hidden_BTF = sharding.shard(
        hidden_BTF, (sharding.BATCH, sharding.LENGTH, sharding.MLP))
    out_BTD = jnp.einsum('BTF,DF->BTD', hidden_BTF,
                         self.down_proj[...].astype(dtype))
    return _adapted(self.down_lora, hidden_BTF, out_BTD)


class Block(nnx.Module):
  """Pre-norm attention and MLP, each optionally post-normed (Gemma 2/3)."""

  def __init__(self, config: config_lib.ModelConfig, layer_type: str, *,
               rngs: nnx.Rngs):
    norm = lambda: _norm(config, config.embed_dim)
    self.pre_attn_norm = norm()
    self.attn = Attention(config, layer_type, rngs=rngs)
    self.post_attn_norm = norm() if config.use_post_attn_norm else None
    self.pre_ffw_norm = norm()
    self.mlp = FeedForward(config, rngs=rngs)
    self.post_ffw_norm = norm() if config.use_post_ffw_norm else None

  def __call__(self, x_BTD, positions_BT, segment_ids_BT, cache):
    h_BTD, cache = self.attn(self.pre_attn_norm(x_BTD), positions_BT,
                             segment_ids_BT, cache)
    if self.post_attn_norm is not None:
      h_BTD = self.post_attn_norm(h_BTD)
    x_BTD = x_BTD + h_BTD
    h_BTD = self.mlp(self.pre_ffw_norm(x_BTD))
    if self.post_ffw_norm is not None:
      h_BTD = self.post_ffw_norm(h_BTD)
    x_BTD = x_BTD + h_BTD
    return sharding.shard(x_BTD, _ACT_BTD), cache


_ACT_BTD = (sharding.BATCH, sharding.LENGTH, sharding.EMBED)


class Transformer(nnx.Module):
  """The decoder: embed, blocks, final norm, (soft-capped) logits.

  The output head is the embedding table when `config.tie_embeddings`, else
  its own parameter `lm_head` [V, D]; `logits` is the one way to apply it.
  """

  def __init__(self, config: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embedder = Embedder(config, rngs=rngs)
    self.blocks = nnx.List(
        [Block(config, kind, rngs=rngs) for kind in config.layer_types])
    self.final_norm = _norm(config, config.embed_dim)
    # Laid out as the table ([V, D], ('vocab', 'embed')): the same rules
    # shard it, and both heads contract D, their minor axis.
    self.lm_head = None if config.tie_embeddings else _param(
        rngs, nnx.initializers.normal(stddev=config.embed_dim**-0.5),
        (config.vocab_size, config.embed_dim), config.weight_dtype,
        ('vocab', 'embed'))  # [V, D]

  def hidden_states(
      self,
      tokens_BT: jax.Array,
      positions_BT: jax.Array,
      segment_ids_BT: jax.Array | None = None,
      cache: Cache | None = None,
  ) -> tuple[jax.Array, Cache | None]:
    """Final-normed hidden states `[B, T, D]` and the updated cache."""
    if segment_ids_BT is None:
      segment_ids_BT = jnp.ones_like(tokens_BT)
    x_BTD = sharding.shard(self.embedder.encode(tokens_BT), _ACT_BTD)
    new_cache = []
    for i, block in enumerate(self.blocks):
      layer_cache = None if cache is None else cache[i]
      x_BTD, layer_cache = block(x_BTD, positions_BT, segment_ids_BT,
                                 layer_cache)
      new_cache.append(layer_cache)
    x_BTD = self.final_norm(x_BTD)
    return x_BTD, (None if cache is None else tuple(new_cache))

  def logits(self, x_BTD: jax.Array) -> jax.Array:
    """Output logits `[B, T, V]` in fp32 from hidden states `[B, T, D]`."""
    if self.lm_head is None:
      logits_BTV = self.embedder.decode(x_BTD)
    else:
      head_VD = self.lm_head[...].astype(x_BTD.dtype)
      logits_BTV = jnp.einsum('BTD,VD->BTV', x_BTD, head_VD)
    logits_BTV = logits_BTV.astype(jnp.float32)
    logits_BTV = softcap(logits_BTV, self.config.final_logit_softcap)
    return sharding.shard(
        logits_BTV, (sharding.BATCH, sharding.LENGTH, sharding.VOCAB))

  def __call__(
      self,
      tokens_BT: jax.Array,
      positions_BT: jax.Array,
      segment_ids_BT: jax.Array | None = None,
      cache: Cache | None = None,
  ) -> tuple[jax.Array, Cache | None]:
    """Logits `[B, T, V]` (fp32) and the updated cache (None without one).

    Args:
      tokens_BT: token ids.
      positions_BT: position of each token within its sequence.
      segment_ids_BT: sequence id of each token, 0 for padding; defaults to
        one sequence per row.
      cache: per-layer KV cache from `init_cache`; when given, each row is one
        sequence and its tokens are written at their positions.
    """
    x_BTD, cache = self.hidden_states(tokens_BT, positions_BT, segment_ids_BT,
                                      cache)
    return self.logits(x_BTD), cache
