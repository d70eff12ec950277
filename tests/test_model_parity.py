"""Logit parity with Hugging Face `transformers` for Gemma 1, 2 and 3.

Each test builds a tiny random model in torch, perturbs every weight (so a
missing `1 +` in RMSNorm or a zero-initialised norm cannot hide), saves it,
loads it with `load_hf`, and compares logits on a padded batch. The reverse
direction writes with `save_hf` and loads with `transformers`.
"""

import json
import os

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from rao_jax import model as model_lib

_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=96,
               num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16)
_SEQ_LEN = 12


def _hf_model(family: str) -> transformers.PreTrainedModel:
  torch.manual_seed(0)
  if family == 'gemma':
    config = transformers.GemmaConfig(**_COMMON)
    hf = transformers.GemmaForCausalLM(config)
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


@pytest.mark.parametrize('family', ['gemma', 'gemma2', 'gemma3'])
def test_load_hf_matches_transformers(family, tmp_path):
  hf = _hf_model(family)
  hf.save_pretrained(tmp_path)
  ours = model_lib.load_hf(str(tmp_path))
  assert ours.config.family == family
  tokens, mask, positions = _batch()
  ref = _hf_logits(hf, tokens, mask, positions)
  got = _our_logits(ours, tokens, mask, positions)
  real = mask.astype(bool)
  assert np.abs(got - ref)[real].max() <= 1e-4


@pytest.mark.parametrize('family', ['gemma', 'gemma2', 'gemma3'])
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
  real = mask.astype(bool)
  assert np.abs(got - ref)[real].max() <= 1e-4
  # And our own loader reads the sharded layout back.
  again = _our_logits(model_lib.load_hf(str(tmp_path / 'out')), tokens, mask,
                      positions)
  assert np.abs(again - ref)[real].max() <= 1e-4


def test_config_round_trip_through_hf_json():
  for preset in ('gemma_2b', 'gemma2_2b', 'gemma3_1b', 'tiny'):
    cfg = model_lib.config.PRESETS[preset]()
    back = model_lib.config_from_hf(
        json.loads(json.dumps(model_lib.config_to_hf(cfg))))
    assert back == cfg, preset


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
