"""Gemma 3 270M (the packaged GGUF): parity with transformers, and the
sampler/trainer log-prob mismatch in fp32 and bf16.

  python -m rao_jax.model.gguf_io --out=/tmp/gemma3-270m
  python benchmarks/gemma3_270m_numerics.py --hf_dir=/tmp/gemma3-270m

Parity: rao_jax's logits on the converted directory against transformers'
own GGUF loader on the same file (max |diff| / max |logit|, argmax
agreement), and greedy continuations of 32 tokens from both. Mismatch: the
sampler draws 32 tokens at temperature 1 from each prompt, then the
trainer's `losses.token_logprobs` scores the same sequences; the mean
|difference| over the sampled tokens is the trainer's `logprob_mismatch`
on a fresh batch. bf16 is bf16 compute with fp32 parameters, sampler and
trainer alike. The last line is JSON.
"""

import argparse
import json
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from rao_jax import sampler as sampler_lib
from rao_jax.model import gguf_io
from rao_jax.model import hf_io
from rao_jax.model import sharding
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.rl import losses

_PROMPTS = ('The capital of France is',
            'def fibonacci(n):\n    """Return the n-th Fibonacci number.',
            'Zwei plus zwei ist', 'A list of prime numbers: 2, 3, 5,')
_NEW = 32


def _decode(model, rows, temperature):
  """Each row's turn (tokens, model log-probs) from the slot sampler."""
  sampler = sampler_lib.SlotSampler(model, num_slots=len(rows), max_len=128)
  slots = sampler.admit([
      sampler_lib.Request(r, jax.random.key(i), _NEW, temperature=temperature)
      for i, r in enumerate(rows)])
  turns = {}
  while len(turns) < len(slots):
    turns.update({t.slot: t for t in sampler.decode(8)})
  return [turns[s] for s in slots]


def _mismatch(model, rows) -> float:
  """Mean |sampler - trainer| log-prob over sampled tokens."""
  turns = _decode(model, rows, 1.0)
  diffs = []
  for row, turn in zip(rows, turns):
    seq = np.asarray([row + turn.tokens.tolist()], np.int32)
    length = 128
    tokens = np.zeros((1, length), np.int32)
    tokens[:, :seq.shape[1]] = seq
    segments = (np.arange(length) < seq.shape[1]).astype(np.int32)[None]
    positions = np.arange(length, dtype=np.int32)[None]
    logp, _ = losses.token_logprobs(model, jnp.asarray(tokens),
                                    jnp.asarray(positions),
                                    jnp.asarray(segments), chunk=64)
    trainer = np.asarray(logp)[0, len(row):seq.shape[1]]
    # At temperature 1 with no filter the sampler's log-probs are the
    # model's softmax: what the trainer recomputes.
    diffs.append(np.abs(trainer - turn.sampler_logprobs))
  return float(np.mean(np.concatenate(diffs)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--hf_dir', required=True)
  parser.add_argument('--gguf', default='')
  args = parser.parse_args()
  path = args.gguf or gguf_io.packaged_gguf()
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path),
      dtype=torch.float32).eval()
  tok = tokenizer_lib.HFTokenizer(args.hf_dir)
  rows = [[tok.bos_id] + tok.encode(p) for p in _PROMPTS]
  mesh = sharding.make_mesh({'fsdp': 1}, jax.devices()[:1])
  ours = hf_io.load_hf(args.hf_dir, mesh=mesh)
  relative, agree = [], []
  for row in rows:
    with torch.no_grad():
      want = reference(torch.tensor([row])).logits.numpy()[0]
    got = np.asarray(ours(jnp.asarray([row]),
                          jnp.arange(len(row))[None])[0])[0]
    relative.append(float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    agree.append(float(np.mean(got.argmax(-1) == want.argmax(-1))))
  greedy_equal = []
  for row, turn in zip(rows, _decode(ours, rows, 0.0)):
    with torch.no_grad():
      out = reference.generate(torch.tensor([row]), do_sample=False,
                               max_new_tokens=_NEW, min_new_tokens=_NEW)
    greedy_equal.append(out[0, len(row):].tolist() == turn.tokens.tolist())
  del reference
  result = dict(max_relative_logit_error=max(relative),
                argmax_agreement=min(agree),
                greedy_32_equal=f'{sum(greedy_equal)}/{len(rows)}',
                logprob_mismatch_fp32=_mismatch(ours, rows))
  del ours
  bf16 = hf_io.load_hf(args.hf_dir, mesh=mesh, dtype='bfloat16',
                       param_dtype='float32')
  result['logprob_mismatch_bf16'] = _mismatch(bf16, rows)
  for key, value in result.items():
    print(f'{key}: {value}')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
