"""Hugging Face Gemma and Qwen3 checkpoints in the `transformers` layout.

Covers `GemmaForCausalLM`, `Gemma2ForCausalLM`, `Gemma3ForCausalLM` (and
the language model of `Gemma3ForConditionalGeneration`) and
`Qwen3ForCausalLM`; any other architecture is refused by name.
A checkpoint directory holds `config.json` and one `model.safetensors` or
several shards with a `model.safetensors.index.json`. Linear weights are
stored `(out, in)`; a tied output head is not stored, an untied one is
`lm_head.weight` [V, D] (`tie_word_embeddings: false`).
`load_hf` reads one tensor at a time (memory-mapped), converts it to this
model's layout and hands each device only its own slice, so a host never
holds the whole model. `save_hf` writes the inverse, which `transformers`
loads with `AutoModelForCausalLM.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import os
from typing import Any

from flax import nnx
import jax
import numpy as np
import safetensors
import safetensors.numpy

from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.model import params as params_lib
from rao_jax.model import sharding

_ARCHITECTURES = {
    'gemma': ('GemmaForCausalLM', 'gemma'),
    'gemma2': ('Gemma2ForCausalLM', 'gemma2'),
    'gemma3': ('Gemma3ForCausalLM', 'gemma3_text'),
    'qwen3': ('Qwen3ForCausalLM', 'qwen3'),
}
_FAMILY_OF_MODEL_TYPE = {
    'gemma': 'gemma', 'gemma2': 'gemma2', 'gemma3_text': 'gemma3',
    'gemma3': 'gemma3', 'qwen3': 'qwen3',
}
# Architectures whose decoder this model is; e.g. a sequence-classification
# head or a base model without a head is refused.
_SUPPORTED_ARCHITECTURES = (
    'GemmaForCausalLM', 'Gemma2ForCausalLM', 'Gemma3ForCausalLM',
    'Gemma3ForConditionalGeneration', 'Qwen3ForCausalLM')
# What `tie_word_embeddings` means when config.json leaves it out: the
# default of each family's `transformers` config class.
_TIED_BY_DEFAULT = {'gemma': True, 'gemma2': True, 'gemma3': True,
                    'qwen3': False}
_INDEX_FILE = 'model.safetensors.index.json'
_SINGLE_FILE = 'model.safetensors'


class CheckpointError(ValueError):
  """A checkpoint's tensors do not match what its config describes."""


# ---------------------------------------------------------------------------
# config.json <-> ModelConfig
# ---------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], **overrides) -> config_lib.ModelConfig:
  """Reads a `transformers` Gemma/Gemma2/Gemma3/Qwen3 text config dict.

  Raises:
    CheckpointError: naming the `architectures`, `model_type` or other
      field that this decoder cannot express.
  """
  architectures = hf.get('architectures') or []
  unknown = [a for a in architectures if a not in _SUPPORTED_ARCHITECTURES]
  if unknown:
    raise CheckpointError(f'config.json: architectures={architectures} is '
                          f'not supported; expected one of '
                          f'{list(_SUPPORTED_ARCHITECTURES)}')
  if 'text_config' in hf:  # a multimodal Gemma 3: use its language model
    hf = {'model_type': 'gemma3_text', **hf['text_config']}
  model_type = hf.get('model_type')
  if model_type not in _FAMILY_OF_MODEL_TYPE:
    raise CheckpointError(f'config.json: model_type={model_type!r} is not '
                          'supported; expected one of '
                          f'{sorted(_FAMILY_OF_MODEL_TYPE)}')
  family = _FAMILY_OF_MODEL_TYPE[model_type]
  key = 'hidden_activation' if hf.get('hidden_activation') else 'hidden_act'
  expected = ('silu',) if family == 'qwen3' else ('gelu_pytorch_tanh', 'gelu')
  if hf.get(key) not in (None,) + expected:
    raise CheckpointError(f'config.json: {key}={hf[key]!r} is not supported '
                          f'for {model_type} (expected {expected[0]!r})')
  for name in ('use_bidirectional_attention', 'attention_bias',
               'use_sliding_window'):
    # No decoder here has bidirectional attention, biases, or Qwen3's
    # sliding window.
    if hf.get(name):
      raise CheckpointError(f'config.json: {name}=true is not supported')
  num_layers = hf['num_hidden_layers']
  head_dim = hf.get('head_dim') or hf['hidden_size'] // hf['num_attention_heads']
  fields = dict(
      family=family,
      vocab_size=hf['vocab_size'],
      embed_dim=hf['hidden_size'],
      num_layers=num_layers,
      num_heads=hf['num_attention_heads'],
      num_kv_heads=hf.get('num_key_value_heads', hf['num_attention_heads']),
      head_dim=head_dim,
      mlp_dim=hf['intermediate_size'],
      norm_eps=hf.get('rms_norm_eps', 1e-6),
  )
  global_rope, local_rope = _rope_from_hf(hf, family)
  fields.update(rope_base_global=global_rope[0], rope_scale_global=global_rope[1],
                rope_base_local=local_rope[0],
                tie_embeddings=bool(hf.get('tie_word_embeddings',
                                           _TIED_BY_DEFAULT[family])))
  if family == 'qwen3':
    layer_types = hf.get('layer_types') or [config_lib.GLOBAL] * num_layers
    if set(layer_types) != {config_lib.GLOBAL}:
      raise CheckpointError(f'config.json: layer_types={layer_types} is not '
                            'supported for qwen3 (full_attention only)')
    fields.update(query_pre_attn_scalar=float(head_dim),
                  norm_scale_plus_one=False, embed_scale=False,
                  mlp_activation='silu', use_post_attn_norm=False,
                  use_post_ffw_norm=False, use_qk_norm=True)
  elif family == 'gemma':
    fields.update(query_pre_attn_scalar=float(head_dim),
                  use_post_attn_norm=False, use_post_ffw_norm=False,
                  use_qk_norm=False)
  else:
    period = 2 if family == 'gemma2' else hf.get('sliding_window_pattern', 6)
    layer_types = hf.get('layer_types') or config_lib._alternating(  # pylint: disable=protected-access
        num_layers, period)
    fields.update(
        layer_types=tuple(layer_types),
        sliding_window=hf.get('sliding_window'),
        query_pre_attn_scalar=float(hf.get('query_pre_attn_scalar', 256)),
        # transformers' Gemma 3 attention ignores attn_logit_softcapping (the
        # released models have none), so a Gemma 3 config.json never sets it.
        attn_logit_softcap=(None if family == 'gemma3' else
                            hf.get('attn_logit_softcapping')),
        final_logit_softcap=hf.get('final_logit_softcapping'),
        use_qk_norm=family == 'gemma3')
  fields.update(overrides)
  return config_lib.ModelConfig(**fields)


def _rope_from_hf(hf: dict[str, Any],
                  family: str) -> tuple[tuple[float, float], tuple[float, float]]:
  """(base, linear scale) for global and local layers, old or new layout."""
  params = hf.get('rope_parameters')
  if params and 'full_attention' in params:  # per layer type (Gemma 3)
    by_type = params
  else:
    flat = dict(params or {})
    flat.setdefault('rope_theta', hf.get('rope_theta', 10_000.0))
    if hf.get('rope_scaling'):
      flat.update(hf['rope_scaling'])
    by_type = {'full_attention': flat}
    if family == 'gemma3':
      by_type['sliding_attention'] = {
          'rope_type': 'default',
          'rope_theta': hf.get('rope_local_base_freq', 10_000.0)}
    else:
      by_type['sliding_attention'] = dict(flat)

  def parse(kind: str) -> tuple[float, float]:
    rope = by_type.get(kind) or {}
    rope_type = rope.get('rope_type', rope.get('type', 'default'))
    if rope_type == 'default':
      return float(rope.get('rope_theta', 10_000.0)), 1.0
    if rope_type == 'linear':
      return float(rope.get('rope_theta', 10_000.0)), float(rope['factor'])
    raise CheckpointError(f'config.json: rope_type={rope_type!r} for {kind} '
                          'layers is not supported (default or linear)')

  return parse('full_attention'), parse('sliding_attention')


def config_to_hf(cfg: config_lib.ModelConfig) -> dict[str, Any]:
  """The `config.json` dict for `cfg`; refuses what its family cannot express."""
  architecture, model_type = _ARCHITECTURES[cfg.family]
  qwen3 = cfg.family == 'qwen3'
  hf: dict[str, Any] = {
      'architectures': [architecture],
      'model_type': model_type,
      'vocab_size': cfg.vocab_size,
      'hidden_size': cfg.embed_dim,
      'intermediate_size': cfg.mlp_dim,
      'num_hidden_layers': cfg.num_layers,
      'num_attention_heads': cfg.num_heads,
      'num_key_value_heads': cfg.num_kv_heads,
      'head_dim': cfg.head_dim,
      # Qwen3's config names the activation `hidden_act`, Gemma's
      # `hidden_activation`.
      ('hidden_act' if qwen3 else 'hidden_activation'):
          'silu' if qwen3 else 'gelu_pytorch_tanh',
      'rms_norm_eps': cfg.norm_eps,
      'max_position_embeddings': _MAX_POSITIONS.get(cfg.family, 8192),
      'tie_word_embeddings': cfg.tie_embeddings,
      'attention_bias': False,
      'dtype': cfg.param_dtype,
      'pad_token_id': 0, 'eos_token_id': 1, 'bos_token_id': 2,
  }

  def rope(base: float, scale: float) -> dict[str, Any]:
    if scale == 1.0:
      return {'rope_type': 'default', 'rope_theta': base}
    return {'rope_type': 'linear', 'rope_theta': base, 'factor': scale}

  unsupported = _family_mismatches(cfg)
  if cfg.family in ('gemma', 'qwen3'):
    if cfg.query_pre_attn_scalar != cfg.head_dim:
      unsupported.append('query_pre_attn_scalar != head_dim')
    if (cfg.use_post_attn_norm or cfg.use_post_ffw_norm or
        cfg.attn_logit_softcap or cfg.final_logit_softcap or
        config_lib.LOCAL in cfg.layer_types):
      unsupported.append('post norms, soft-caps or sliding layers')
    if cfg.use_qk_norm != qwen3:
      unsupported.append(f'model.use_qk_norm={cfg.use_qk_norm} (QK-norm is '
                         'on exactly in Gemma 3 and Qwen3)')
    if qwen3:
      hf.update(layer_types=list(cfg.layer_types), use_sliding_window=False,
                sliding_window=None, max_window_layers=cfg.num_layers)
  else:
    if not (cfg.use_post_attn_norm and cfg.use_post_ffw_norm):
      unsupported.append('Gemma 2/3 always post-norm attention and MLP')
    if cfg.use_qk_norm != (cfg.family == 'gemma3'):
      unsupported.append(f'model.use_qk_norm={cfg.use_qk_norm} (QK-norm is '
                         'on exactly in Gemma 3 and Qwen3)')
    if cfg.family == 'gemma3' and cfg.attn_logit_softcap is not None:
      unsupported.append('Gemma 3 has no attention-logit soft-cap')
    hf.update(
        layer_types=list(cfg.layer_types),
        sliding_window=cfg.sliding_window or 4096,
        # transformers' config validation wants an int here.
        query_pre_attn_scalar=(int(cfg.query_pre_attn_scalar)
                               if cfg.query_pre_attn_scalar.is_integer()
                               else cfg.query_pre_attn_scalar),
        attn_logit_softcapping=cfg.attn_logit_softcap,
        final_logit_softcapping=cfg.final_logit_softcap)
  if cfg.family != 'gemma3' and (
      cfg.rope_base_local != cfg.rope_base_global or
      cfg.rope_scale_global != 1.0):
    unsupported.append('per-layer RoPE bases/scaling need Gemma 3')
  if unsupported:
    raise ValueError(f'model.family={cfg.family!r} cannot express this config '
                     f'in Hugging Face format: {"; ".join(unsupported)}')
  if cfg.family == 'gemma3':
    hf['rope_parameters'] = {
        'full_attention': rope(cfg.rope_base_global, cfg.rope_scale_global),
        'sliding_attention': rope(cfg.rope_base_local, 1.0)}
  else:
    hf['rope_parameters'] = rope(cfg.rope_base_global, 1.0)
  return hf


_MAX_POSITIONS = {'gemma3': 131_072, 'qwen3': 40_960}


def _family_mismatches(cfg: config_lib.ModelConfig) -> list[str]:
  """The Gemma/Qwen3 switches of `cfg` that its family's checkpoints lack."""
  qwen3 = cfg.family == 'qwen3'
  # Each family's value of each switch; either ties or unties its head.
  expected = dict(norm_scale_plus_one=not qwen3, embed_scale=not qwen3,
                  mlp_activation='silu' if qwen3 else 'gelu_tanh')
  return [f'model.{name}={getattr(cfg, name)!r} (expected {value!r})'
          for name, value in expected.items() if getattr(cfg, name) != value]


# ---------------------------------------------------------------------------
# Tensor layout: which HF tensor fills which parameter, and how.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TensorMap:
  path: tuple  # parameter path in the nnx state
  hf_name: str  # name without the model prefix (see `in_model`)
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  # For a stacked parameter (the MLP's gating_einsum), the index along its
  # first axis that this tensor fills; None: the tensor is the whole
  # parameter.
  part: int | None = None
  # False for `lm_head.weight`, which sits beside the model prefix
  # ('model.', 'model.language_model.'), not under it.
  in_model: bool = True

  def full_name(self, prefix: str) -> str:
    return prefix + self.hf_name if self.in_model else self.hf_name


def _identity(x: np.ndarray) -> np.ndarray:
  return x


def _tensor_maps(cfg: config_lib.ModelConfig) -> list[_TensorMap]:
  d, n, k, h, f = (cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads,
                   cfg.head_dim, cfg.mlp_dim)

  def heads_in(heads):  # HF [heads*H, D]  <->  ours [D, heads, H]
    return (lambda w: w.T.reshape(d, heads, h),
            lambda w: w.reshape(d, heads * h).T)

  maps = [_TensorMap(('embedder', 'table'), 'embed_tokens.weight',
                     (cfg.vocab_size, d), _identity, _identity)]
  norm_names = {'pre_attn_norm': 'input_layernorm'}
  if cfg.family in ('gemma', 'qwen3'):
    # Without post norms, HF's `post_attention_layernorm` is the MLP's
    # pre-norm.
    norm_names['pre_ffw_norm'] = 'post_attention_layernorm'
  else:
    norm_names.update(post_attn_norm='post_attention_layernorm',
                      pre_ffw_norm='pre_feedforward_layernorm',
                      post_ffw_norm='post_feedforward_layernorm')
  for i in range(cfg.num_layers):
    hf = f'layers.{i}.'
    ours = ('blocks', i)
    for our_name, hf_name in norm_names.items():
      maps.append(_TensorMap(ours + (our_name, 'scale'), hf + hf_name + '.weight',
                             (d,), _identity, _identity))
    for proj, heads in (('q_proj', n), ('k_proj', k), ('v_proj', k)):
      maps.append(_TensorMap(ours + ('attn', proj),
                             f'{hf}self_attn.{proj}.weight', (heads * h, d),
                             *heads_in(heads)))
    maps.append(_TensorMap(
        ours + ('attn', 'o_proj'), f'{hf}self_attn.o_proj.weight', (d, n * h),
        lambda w: w.T.reshape(n, h, d), lambda w: w.reshape(n * h, d).T))
    if cfg.use_qk_norm:
      for norm in ('q_norm', 'k_norm'):
        maps.append(_TensorMap(ours + ('attn', norm, 'scale'),
                               f'{hf}self_attn.{norm}.weight', (h,), _identity,
                               _identity))
    # gating_einsum [2, F, D] stacks HF's gate and up (each [F, D]); the
    # down projection is [D, F] on both sides.
    for part, proj in enumerate(('gate_proj', 'up_proj')):
      maps.append(_TensorMap(ours + ('mlp', 'gating_einsum'),
                             f'{hf}mlp.{proj}.weight', (f, d), _identity,
                             _identity, part=part))
    maps.append(_TensorMap(ours + ('mlp', 'down_proj'),
                           f'{hf}mlp.down_proj.weight', (d, f), _identity,
                           _identity))
  maps.append(_TensorMap(('final_norm', 'scale'), 'norm.weight', (d,),
                         _identity, _identity))
  if not cfg.tie_embeddings:  # [V, D] on both sides
    maps.append(_TensorMap(('lm_head',), 'lm_head.weight',
                           (cfg.vocab_size, d), _identity, _identity,
                           in_model=False))
  return maps


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


class _SafetensorsDir:
  """Name -> file lookup over a (possibly sharded) safetensors checkpoint."""

  def __init__(self, path: str):
    index_path = os.path.join(path, _INDEX_FILE)
    if os.path.exists(index_path):
      with open(index_path) as f:
        weight_map = json.load(f)['weight_map']
    else:
      files = sorted(p for p in os.listdir(path) if p.endswith('.safetensors'))
      if not files:
        raise CheckpointError(f'{path}: no *.safetensors files')
      weight_map = {}
      for name in files:
        with safetensors.safe_open(os.path.join(path, name), 'numpy') as f:
          weight_map.update({key: name for key in f.keys()})
    self.path = path
    self.weight_map = weight_map

  def prefix(self) -> str:
    """The model prefix: 'model.', 'model.language_model.', ..."""
    for key in sorted(self.weight_map, key=len):
      if key.endswith('embed_tokens.weight'):
        return key[:-len('embed_tokens.weight')]
    raise CheckpointError(f'{self.path}: no embed_tokens.weight tensor')

  def read(self, name: str) -> np.ndarray:
    filename = os.path.join(self.path, self.weight_map[name])
    with safetensors.safe_open(filename, 'numpy') as f:
      return f.get_tensor(name)


def load_hf(
    path: str,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: sharding.Rules = sharding.DEFAULT_RULES,
    **config_overrides,
) -> gemma.Transformer:
  """Loads a Hugging Face Gemma/Gemma2/Gemma3/Qwen3 text checkpoint directory.

  Args:
    path: directory with config.json and safetensors file(s).
    mesh: device mesh; defaults to all devices on the `fsdp` axis.
    rules: logical-axis rules mapping parameters to the mesh.
    **config_overrides: ModelConfig fields to override, e.g. `dtype`,
      `param_dtype` (tensors are cast to `param_dtype`).

  Returns:
    The model, each parameter placed directly on its shards.

  Raises:
    CheckpointError: naming the tensor that is missing, mis-shaped or
      unexpected.
  """
  with open(os.path.join(path, 'config.json')) as f:
    cfg = config_from_hf(json.load(f), **config_overrides)
  if mesh is None:
    mesh = sharding.make_mesh({'fsdp': -1})
  graphdef, abstract_state = params_lib.abstract_model(cfg, mesh, rules)
  files = _SafetensorsDir(path)
  prefix = files.prefix()
  flat = dict(nnx.to_flat_state(abstract_state))
  maps = _tensor_maps(cfg)
  expected = {m.full_name(prefix) for m in maps}
  # A tied head may be stored anyway; anything else unknown is an error.
  stray = sorted(k for k in files.weight_map
                 if k.startswith(prefix) and k not in expected)
  stray = [k for k in stray if not k.endswith('lm_head.weight')]
  if stray:
    raise CheckpointError(f'{path}: unexpected tensors for this config: '
                          f'{stray[:5]}{" ..." if len(stray) > 5 else ""}')
  stacks = {}  # path -> parts of a stacked parameter read so far
  for m in maps:
    name = m.full_name(prefix)
    if name not in files.weight_map:
      raise CheckpointError(f'{path}: tensor {name!r} is missing')
    tensor = files.read(name)
    if tuple(tensor.shape) != m.hf_shape:
      raise CheckpointError(
          f'{path}: tensor {name!r} has shape {tuple(tensor.shape)}, '
          f'config.json implies {m.hf_shape}')
    var = flat[m.path]
    value = m.to_ours(tensor).astype(var.dtype)
    if m.part is not None:
      parts = stacks.setdefault(m.path, [None] * var.shape[0])
      parts[m.part] = value
      if any(p is None for p in parts):
        continue
      value = np.stack(stacks.pop(m.path))
    var.set_value(jax.make_array_from_callback(
        value.shape, var.sharding, lambda index, v=value: v[index]))
  missing = [p for p, v in flat.items()
             if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
  assert not missing, f'parameters with no tensor map: {missing}'
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def save_hf(model: gemma.Transformer, path: str, *,
            max_shard_bytes: int = 4 << 30) -> None:
  """Writes `model` as a `transformers` checkpoint directory.

  Tensors are gathered one at a time; files over `max_shard_bytes` are split
  into `model-0000k-of-0000n.safetensors` with an index, as `transformers`
  does. With several processes every one must call it (the gathers are
  collective) and process 0 writes.
  """
  cfg = model.config
  hf_config = config_to_hf(cfg)
  writes = jax.process_index() == 0
  if writes:
    os.makedirs(path, exist_ok=True)
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  shards: list[dict[str, np.ndarray]] = [{}]
  shard_bytes = 0
  for m in _tensor_maps(cfg):
    value = sharding.host_array(flat[m.path].get_value())
    if not writes:
      continue  # gathered for the collective only
    if m.part is not None:
      value = value[m.part]
    tensor = np.ascontiguousarray(m.to_hf(value))
    if shards[-1] and shard_bytes + tensor.nbytes > max_shard_bytes:
      shards.append({})
      shard_bytes = 0
    shards[-1][m.full_name('model.')] = tensor
    shard_bytes += tensor.nbytes
  metadata = {'format': 'pt'}
  if not writes:
    return
  if len(shards) == 1:
    safetensors.numpy.save_file(shards[0], os.path.join(path, _SINGLE_FILE),
                                metadata=metadata)
  else:
    weight_map = {}
    total = 0
    for i, tensors in enumerate(shards):
      name = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
      safetensors.numpy.save_file(tensors, os.path.join(path, name),
                                  metadata=metadata)
      weight_map.update({key: name for key in tensors})
      total += sum(t.nbytes for t in tensors.values())
    with open(os.path.join(path, _INDEX_FILE), 'w') as f:
      json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map},
                f, indent=2)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(hf_config, f, indent=2)
