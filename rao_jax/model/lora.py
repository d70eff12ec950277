"""Low-rank adapters (LoRA) on the decoder's projections, and their merge.

`add_adapters` gives chosen projections of every block an adapter, flax's
`nnx.LoRA` (`x @ A @ B`, A `[in, r]` variance-scaled, B `[r, out]` zeros, so
a fresh adapter changes nothing) scaled by `alpha / rank`. Its parameters
are `nnx.LoRAParam`, a subclass of `nnx.Param`: an optimiser built with
`wrt=trained(model)` trains and holds moments
for the adapters alone, and the base weights stay bit-identical.
`merged` folds every adapter into its weight (`W + scale * A @ B` in the
weight's layout) and drops it: a plain model for `hf_io.save_hf`.

Why flax's module and not qwix (the LoRA of tunix): qwix adds adapters by
intercepting `nnx.Linear`/`nnx.Einsum` calls, and this decoder's
projections are parameters used in reshaped einsums (`[D, N, H]`, a fused
`[2, F, D]` gate and up), which it does not see. `nnx.LoRA` is the adapter
alone; where to add its output is this module's one decision.

Targets: 'q', 'k', 'v', 'o' (attention) and 'gate_up', 'down' (MLP).
"""

from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp

from rao_jax.model import gemma

TARGETS = ('q', 'k', 'v', 'o', 'gate_up', 'down')


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraConfig:
  """The `lora` section.

  Attributes:
    rank: r, the adapters' inner width (0: no adapters, full fine-tuning).
    alpha: the update is scaled by alpha / rank.
    targets: which projections of every block get an adapter (`TARGETS`).
  """

  rank: int = 0
  alpha: float = 16.0
  targets: tuple[str, ...] = ('q', 'k', 'v', 'o', 'gate_up', 'down')

  def __post_init__(self):
    object.__setattr__(self, 'targets', tuple(self.targets))
    if self.rank < 0:
      raise ValueError(f'lora.rank={self.rank}: must be >= 0')
    if self.alpha <= 0:
      raise ValueError(f'lora.alpha={self.alpha}: must be > 0')
    unknown = sorted(set(self.targets) - set(TARGETS))
    if unknown or (self.rank and not self.targets):
      raise ValueError(f'lora.targets={list(self.targets)}: expected a '
                       f'non-empty subset of {TARGETS}')

  @property
  def enabled(self) -> bool:
    return self.rank > 0


class Adapter(nnx.Module):
  """`scale * x @ A @ B`, A `[in, r]` and B `[r, out]` (`nnx.LoRA`)."""

  def __init__(self, in_features: int, out_features: int, rank: int,
               scale: float, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    self.scale = scale
    # fp32 master weights; computed in the model's compute dtype.
    self.lora = nnx.LoRA(in_features, rank, out_features, dtype=dtype,
                         param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.lora(x) * jnp.asarray(self.scale, x.dtype)

  def delta(self) -> jax.Array:
    """`scale * A @ B`, `[in, out]` in fp32."""
    return self.scale * (self.lora.lora_a[...] @ self.lora.lora_b[...])


def _shapes(cfg) -> dict[str, tuple[str, str, int, int]]:
  """target -> (module, attribute, in, out)."""
  d, n, k, h, f = (cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads,
                   cfg.head_dim, cfg.mlp_dim)
  return {'q': ('attn', 'q_lora', d, n * h), 'k': ('attn', 'k_lora', d, k * h),
          'v': ('attn', 'v_lora', d, k * h), 'o': ('attn', 'o_lora', n * h, d),
          'gate_up': ('mlp', 'gating_lora', d, 2 * f),
          'down': ('mlp', 'down_lora', f, d)}


def add_adapters(model: gemma.Transformer, config: LoraConfig,
                 seed: int = 0) -> gemma.Transformer:
  """Gives `config.targets` of every block a fresh adapter, in place.

  A fresh adapter's B is zero, so the model computes exactly what it did.
  Returns the model.
  """
  if not config.enabled:
    return model
  cfg = model.config
  rngs = nnx.Rngs(seed)
  shapes = _shapes(cfg)
  for block in model.blocks:
    for target in config.targets:
      module, name, fan_in, fan_out = shapes[target]
      setattr(getattr(block, module), name, nnx.data(Adapter(
          fan_in, fan_out, config.rank, config.alpha / config.rank,
          dtype=cfg.compute_dtype, rngs=rngs)))
  return model


def _fold(target: str, weight: jax.Array, delta_IO: jax.Array) -> jax.Array:
  """`weight` (this model's layout) plus an adapter's `[in, out]` update."""
  if target in ('q', 'k', 'v'):  # [D, heads, H]
    return weight + delta_IO.reshape(weight.shape).astype(weight.dtype)
  if target == 'o':  # [N, H, D]
    return weight + delta_IO.reshape(weight.shape).astype(weight.dtype)
  if target == 'gate_up':  # [2, F, D]; the adapter's out is (gate, up)
    c, f, d = weight.shape
    return weight + jnp.transpose(delta_IO.reshape(d, c, f),
                                  (1, 2, 0)).astype(weight.dtype)
  return weight + delta_IO.T.astype(weight.dtype)  # down: [D, F] (out, in)


_WEIGHT_OF = {'q': 'q_proj', 'k': 'k_proj', 'v': 'v_proj', 'o': 'o_proj',
              'gate_up': 'gating_einsum', 'down': 'down_proj'}


def merged(model: gemma.Transformer) -> gemma.Transformer:
  """The model with every adapter folded into its weight and removed.

  In place: the adapted model is gone after the call (export is its last
  use). Returns the model, plain again (`hf_io.save_hf` writes it).
  """
  shapes = _shapes(model.config)
  for block in model.blocks:
    for target, (module, name, _, _) in shapes.items():
      parent = getattr(block, module)
      adapter = getattr(parent, name)
      if adapter is None:
        continue
      weight = getattr(parent, _WEIGHT_OF[target])
      weight[...] = _fold(target, weight[...], adapter.delta())
      setattr(parent, name, nnx.data(None))
  return model


def trained(model: gemma.Transformer) -> type[nnx.Param]:
  """What an optimiser of `model` trains (its `wrt`): the adapters'
  `nnx.LoRAParam` when it has any, else every `nnx.Param`."""
  return nnx.LoRAParam if num_adapter_params(model) else nnx.Param


def num_adapter_params(model: gemma.Transformer) -> int:
  """Trained parameters of the adapters (0 without any)."""
  state = nnx.state(model, nnx.LoRAParam)
  return sum(x.size for x in jax.tree.leaves(state))
