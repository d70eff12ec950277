"""Logit parity with Hugging Face `transformers` for Gemma 1, 2, 3 and Qwen3.

Each test builds a tiny random model in torch, perturbs every weight (so a
missing or extra `1 +` in RMSNorm cannot hide), saves it,
loads it with `load_hf`, and compares logits on a padded batch. The reverse
direction writes with `save_hf` and loads with `transformers`.
"""

import json
import os
import re

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from rao_jax import model as model_lib
from rao_jax import testing

_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=96,
               num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16)
_SEQ_LEN = 12
# Qwen3 with its output head tied to the embedding (0.6B-4B) and untied.
_FAMILIES = ['gemma', 'gemma2', 'gemma3', 'qwen3', 'qwen3_untied']


def _hf_model(family: str) -> transformers.PreTrainedModel:
  torch.manual_seed(0)
  if family == 'gemma':
    config = transformers.GemmaConfig(**_COMMON)
    hf = transformers.GemmaForCausalLM(config)
  elif family.startswith('qwen3'):
    config = transformers.Qwen3Config(
        **_COMMON, tie_word_embeddings=family == 'qwen3',
        rope_parameters={'rope_type': 'default', 'rope_theta': 1e6})
    hf = transformers.Qwen3ForCausalLM(config)
  elif family == 'gemma2':
    config = transformers.Gemma2Config(
        **_COMMON, sliding_window=4, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
        layer_types=['sliding_attention', 'full_attention',
                     'sliding_attention'])
    hf = transformers.Gemma2ForCausalLM(config)
  else:
    config = transformers.Gemma3TextConfig(
        **_COMMON, sliding_window=4, query_pre_attn_scalar=24,
        final_logit_softcapping=3.0,
        layer_types=['sliding_attention', 'sliding_attention',
                     'full_attention'],
        rope_parameters={
            'full_attention': {'rope_type': 'linear', 'rope_theta': 1e6,
                               'factor': 4.0},
            'sliding_attention': {'rope_type': 'default',
                                  'rope_theta': 1e4}})
    hf = transformers.Gemma3ForCausalLM(config)
  with torch.no_grad():
    for p in hf.parameters():
      p.add_(torch.randn_like(p) * 0.2)
  return hf.eval()


def _batch():
  """Two rows; the second is right-padded after 7 tokens."""
  rng = np.random.RandomState(1)
  tokens = rng.randint(3, 256, size=(2, _SEQ_LEN))
  mask = np.ones((2, _SEQ_LEN), np.int32)
  mask[1, 7:] = 0
  positions = np.tile(np.arange(_SEQ_LEN), (2, 1))
  return tokens, mask, positions


def _hf_logits(hf, tokens, mask, positions) -> np.ndarray:
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(tokens),
             attention_mask=torch.tensor(mask),
             position_ids=torch.tensor(positions))
  return out.logits.float().numpy()


@nnx.jit
def _forward(model, tokens, positions, segment_ids):
  return model(tokens, positions, segment_ids)[0]


def _our_logits(ours, tokens, mask, positions) -> np.ndarray:
  return np.asarray(_forward(ours, jnp.asarray(tokens),
                             jnp.asarray(positions), jnp.asarray(mask)))


def _max_diff(got, ref, mask) -> float:
  """Max |logit difference| over the real (non-padding) tokens."""
  diff = float(np.abs(got - ref)[mask.astype(bool)].max())
  print(f'max |logit diff| {diff:.2e}')  # shown with -s: the parity numbers
  return diff


@pytest.mark.parametrize('family', _FAMILIES)
def test_load_hf_matches_transformers(family, tmp_path):
  hf = _hf_model(family)
  hf.save_pretrained(tmp_path)
  ours = model_lib.load_hf(str(tmp_path))
  assert ours.config.family == family.removesuffix('_untied')
  assert ours.config.tie_embeddings == (family != 'qwen3_untied')
  tokens, mask, positions = _batch()
  ref = _hf_logits(hf, tokens, mask, positions)
  got = _our_logits(ours, tokens, mask, positions)
  assert _max_diff(got, ref, mask) <= 1e-4


@pytest.mark.parametrize('family', _FAMILIES)
def test_save_hf_loads_in_transformers(family, tmp_path):
  hf = _hf_model(family)
  hf.save_pretrained(tmp_path / 'src')
  ours = model_lib.load_hf(str(tmp_path / 'src'))
  # A tiny shard limit forces the sharded layout with an index file.
  model_lib.save_hf(ours, str(tmp_path / 'out'), max_shard_bytes=64 << 10)
  assert os.path.exists(tmp_path / 'out' / 'model.safetensors.index.json')
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / 'out').eval()
  tokens, mask, positions = _batch()
  ref = _hf_logits(hf, tokens, mask, positions)
  got = _hf_logits(reloaded, tokens, mask, positions)
  assert _max_diff(got, ref, mask) <= 1e-4
  # And our own loader reads the sharded layout back.
  again = _our_logits(model_lib.load_hf(str(tmp_path / 'out')), tokens, mask,
                      positions)
  assert _max_diff(again, ref, mask) <= 1e-4


def test_qwen3_saved_from_scratch_loads_in_transformers(tmp_path):
  # rao_jax's own (perturbed) weights, untied, through save_hf: transformers
  # must compute the same logits as rao_jax.
  ours = testing.tiny_model(preset='tiny_qwen3', tie_embeddings=False,
                            vocab_size=256)
  model_lib.save_hf(ours, str(tmp_path))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
  assert type(reloaded).__name__ == 'Qwen3ForCausalLM'
  tokens, mask, positions = _batch()
  ref = _our_logits(ours, tokens, mask, positions)
  got = _hf_logits(reloaded.eval(), tokens, mask, positions)
  assert _max_diff(got, ref, mask) <= 1e-4


@pytest.mark.parametrize('preset', sorted(model_lib.config.PRESETS))
@pytest.mark.parametrize('tied', [True, False])
def test_config_round_trip_through_hf_json(preset, tied):
  cfg = model_lib.config.PRESETS[preset](tie_embeddings=tied)
  back = model_lib.config_from_hf(
      json.loads(json.dumps(model_lib.config_to_hf(cfg))))
  assert back == cfg


@pytest.mark.parametrize('overrides, field', [
    (dict(norm_scale_plus_one=True), 'model.norm_scale_plus_one=True'),
    (dict(embed_scale=True), 'model.embed_scale=True'),
    (dict(mlp_activation='gelu_tanh'), "model.mlp_activation='gelu_tanh'"),
    (dict(use_qk_norm=False), 'model.use_qk_norm=False'),
    (dict(use_post_ffw_norm=True), 'post norms'),
])
def test_config_to_hf_refuses_what_qwen3_cannot_express(overrides, field):
  with pytest.raises(ValueError, match=re.escape(field)):
    model_lib.config_to_hf(model_lib.config.tiny_qwen3(**overrides))
  # A Gemma with Qwen3's SwiGLU is refused the same way.
  with pytest.raises(ValueError, match=r"model\.mlp_activation='silu'"):
    model_lib.config_to_hf(model_lib.config.tiny(mlp_activation='silu'))


@pytest.mark.parametrize('change, field', [
    (dict(architectures=['Qwen3ForSequenceClassification']), 'architectures'),
    (dict(architectures=['Qwen3MoeForCausalLM'], model_type='qwen3_moe'),
     'architectures'),
    (dict(architectures=None, model_type='qwen2'), "model_type='qwen2'"),
    (dict(attention_bias=True), 'attention_bias'),
    (dict(use_sliding_window=True), 'use_sliding_window'),
    (dict(hidden_act='gelu'), "hidden_act='gelu'"),
])
def test_unsupported_checkpoint_is_refused_by_name(change, field, tmp_path):
  _hf_model('qwen3').save_pretrained(tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  config.update(change)
  (tmp_path / 'config.json').write_text(json.dumps(config))
  with pytest.raises(model_lib.CheckpointError, match=re.escape(field)):
    model_lib.load_hf(str(tmp_path))


def test_missing_untied_head_is_named(tmp_path):
  hf = _hf_model('qwen3_untied')
  state = {k: v for k, v in hf.state_dict().items() if k != 'lm_head.weight'}
  hf.save_pretrained(tmp_path, state_dict=state)
  with pytest.raises(model_lib.CheckpointError,
                     match=r"'lm_head\.weight' is missing"):
    model_lib.load_hf(str(tmp_path))


def test_missing_tensor_is_named(tmp_path):
  hf = _hf_model('gemma3')
  state = {k: v for k, v in hf.state_dict().items()
           if 'layers.1.mlp.up_proj' not in k}
  hf.save_pretrained(tmp_path, state_dict=state)
  with pytest.raises(model_lib.CheckpointError,
                     match=r'model\.layers\.1\.mlp\.up_proj\.weight'):
    model_lib.load_hf(str(tmp_path))


def test_misshaped_tensor_is_named(tmp_path):
  hf = _hf_model('gemma2')
  hf.save_pretrained(tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  config['intermediate_size'] = 80  # the stored MLP weights are 96 wide
  (tmp_path / 'config.json').write_text(json.dumps(config))
  with pytest.raises(model_lib.CheckpointError,
                     match=r'mlp\.gate_proj\.weight.*\(96, 64\)'):
    model_lib.load_hf(str(tmp_path))


def test_load_hf_bf16_params(tmp_path):
  hf = _hf_model('gemma3')
  hf.to(torch.bfloat16).save_pretrained(tmp_path)
  ours = model_lib.load_hf(str(tmp_path), param_dtype='bfloat16',
                           dtype='bfloat16')
  assert ours.embedder.table[...].dtype == jnp.bfloat16
  tokens, mask, positions = _batch()
  ref = _hf_logits(hf.float(), tokens, mask, positions)
  got = _our_logits(ours, tokens, mask, positions)
  real = mask.astype(bool)
  # bf16 end to end: same function, coarse rounding.
  assert np.abs(got - ref)[real].max() < 0.2
  assert (got.argmax(-1) == ref.argmax(-1))[real].mean() > 0.8
