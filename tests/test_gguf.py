"""The packaged Gemma 3 270M GGUF, converted by `gguf_io`, against
`transformers`' own GGUF loader on the same file.

Slow: the real 268M-parameter checkpoint, converted once for the suite
(the `gemma3_270m` fixture), then held by both libraries at once.
"""

import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from rao_jax import sampler as sampler_lib
from rao_jax import testing
from rao_jax.model import hf_io
from rao_jax.model import lora
from rao_jax.model import sharding
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.rl import update

pytestmark = pytest.mark.slow

_PROMPTS = ('The capital of France is',
            'def fibonacci(n):\n    """Return the n-th Fibonacci number.',
            'Zwei plus zwei ist')
_NEW_TOKENS = 32


@pytest.fixture(scope='module', autouse=True)
def optimized_programs():
  """XLA's optimisations on for this module's programs (tests/conftest.py
  turns them off): the real model's steps outlast their compiling (this
  module: 185 s optimised, 201 s not, on 2 cores)."""
  quick = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', quick)


@pytest.fixture(scope='module')
def converted(gemma3_270m):
  """(GGUF path, converted directory): the suite's one conversion."""
  return gemma3_270m


@pytest.fixture(scope='module')
def reference(converted):
  """`transformers`' model, dequantised by its own GGUF loader."""
  gguf_path, _ = converted
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path),
      dtype=torch.float32)
  return model.eval()


@pytest.fixture(scope='module')
def ours(converted):
  # One device: under the tests' 8-device FSDP mesh every call would gather
  # the weights on each fake device (8 copies of 1 GB on one host).
  mesh = sharding.make_mesh({'fsdp': 1}, jax.devices()[:1])
  return hf_io.load_hf(converted[1], mesh=mesh)


@pytest.fixture(scope='module')
def token_rows(converted):
  """Each prompt's ids from the converted tokenizer, after <bos>."""
  tok = tokenizer_lib.HFTokenizer(converted[1])
  return [[tok.bos_id] + tok.encode(p) for p in _PROMPTS]


def test_tokenizer_matches_transformers_gguf_tokenizer(converted, token_rows):
  gguf_path, out = converted
  reference_tok = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
  assert [reference_tok.encode(p) for p in _PROMPTS] == token_rows
  with open(os.path.join(out, 'config.json')) as f:
    hf = json.load(f)
  tok = tokenizer_lib.HFTokenizer(out)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (
      hf['pad_token_id'], hf['eos_token_id'], hf['bos_token_id'])
  assert tok.vocab_size == hf['vocab_size'] == 262_144


def test_config_matches_transformers(converted, reference):
  cfg = hf_io.config_from_hf(reference.config.to_dict())
  with open(os.path.join(converted[1], 'config.json')) as f:
    got = hf_io.config_from_hf(json.load(f))
  # transformers keeps the file's fp32 rounding of 1e-6; we write 1e-6.
  assert got.norm_eps == pytest.approx(cfg.norm_eps, rel=1e-7)
  assert got == cfg.replace(norm_eps=got.norm_eps)


def test_logits_match_transformers(ours, reference, token_rows):
  for row in token_rows:
    tokens = np.asarray([row], np.int32)
    with torch.no_grad():
      want = reference(torch.from_numpy(tokens).long()).logits.numpy()[0]
    positions = np.arange(tokens.shape[1], dtype=np.int32)[None]
    got, _ = ours(jnp.asarray(tokens), jnp.asarray(positions))
    got = np.asarray(got)[0]
    relative = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert relative <= 1e-4, relative
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_greedy_continuations_match_transformers(ours, reference, token_rows):
  sampler = sampler_lib.SlotSampler(ours, num_slots=4, max_len=128)
  requests = [sampler_lib.Request(row, jax.random.key(i), _NEW_TOKENS)
              for i, row in enumerate(token_rows)]
  slots = sampler.admit(requests)
  turns = {}
  while len(turns) < len(slots) or sampler.num_running:
    turns.update({t.slot: t for t in sampler.decode(8)})
  for slot, row in zip(slots, token_rows):
    with torch.no_grad():
      out = reference.generate(torch.tensor([row]), do_sample=False,
                               max_new_tokens=_NEW_TOKENS, min_new_tokens=
                               _NEW_TOKENS)
    want = out[0, len(row):].tolist()
    assert turns[slot].tokens.tolist() == want


def test_lora_sft_on_the_real_checkpoint(converted, token_rows, tmp_path):
  # Adapters alone train: the SFT loss falls, every base weight stays
  # bit-identical, and the merged export is a plain checkpoint that
  # transformers loads and that computes what the adapted model does.
  mesh = sharding.make_mesh({'fsdp': 1}, jax.devices()[:1])
  model = lora.add_adapters(hf_io.load_hf(converted[1], mesh=mesh),
                            lora.LoraConfig(rank=8, alpha=16.0))
  base = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.LoRAParam)))
  optimizer = nnx.Optimizer(model, update.make_optimizer(update.OptimConfig(
      learning_rate=1e-3, weight_decay=0.0)), wrt=lora.trained(model))
  model, seen = testing.sft_losses(model, optimizer, token_rows, bucket=64,
                                   logprob_chunk=32, learning_rate=1e-3,
                                   steps=4)
  assert seen[-1] < seen[0], seen
  after = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.LoRAParam)))
  jax.tree.map(np.testing.assert_array_equal, after, base)

  tokens = np.asarray([token_rows[0]], np.int32)
  positions = np.arange(tokens.shape[1], dtype=np.int32)[None]
  adapted = np.asarray(model(jnp.asarray(tokens), jnp.asarray(positions))[0])
  hf_io.save_hf(lora.merged(model), str(tmp_path))
  exported = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), dtype=torch.float32).eval()
  with torch.no_grad():
    got = exported(torch.from_numpy(tokens).long()).logits.numpy()
  relative = np.max(np.abs(got - adapted)) / np.max(np.abs(adapted))
  assert relative <= 1e-4, relative
