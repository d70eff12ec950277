r"""A tiny Gemma-3-style recursive agent trained on a CPU.

Run (about 15 minutes on 2 busy CPU cores):

  python -m rao_jax.main --config=configs/cpu_tiny.py --workdir=runs/tiny

It supervises the ~0.8M-parameter model on the long-document task's
reference call trees (SFT, 120 steps), evaluates, runs RAO's GRPO on its own
sampled call trees (RL, 10 steps), evaluates again, and prints root success
per level for the recursive agent and the single agent (depth budget 0).
Measured: after SFT the model writes well-formed call trees but not the
slice arithmetic; easy-level root success (partial credit) is ~0.11 and RL
does not improve it in 36 steps (see README, "Measured"). The workdir holds
checkpoints (rerun the same command to resume), TensorBoard events,
metrics.jsonl, sampled call trees under trees/ and summary.json.

Variants: `configs/cpu_tiny.py:smoke` runs a few steps of everything in
about a minute (the tests use it). Override any field:
`--config.rl.steps=40 --config.rollout.budgets.max_depth=2`.

The model follows ../shared/FINDINGS.md: 3 layers, width 128, 4 heads; a
byte vocabulary with the protocol tags as single tokens (384 entries).
"""

import dataclasses

import ml_collections

from rao_jax.model import config as model_config
from rao_jax.model import sharding
from rao_jax.rl import credit
from rao_jax.rl import losses
from rao_jax.rl import update


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The cpu_tiny config; `arg='smoke'` shrinks every phase."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.mode = 'train'
  config.distributed = False  # multi-host: jax.distributed.initialize()

  # Every field spelled out, so `--config.model.<field>=...` can override it.
  config.model = dataclasses.asdict(model_config.tiny())
  config.tokenizer = dict(kind='byte', path='')
  # A Hugging Face checkpoint directory to start from instead of random init.
  config.init_from_hf = ''

  # The paper trains on medium; on 2 CPU cores a medium document tree (about
  # 180 nodes of ~190 tokens) is too slow to train on in minutes, so the
  # tiny run trains on easy documents and evaluates on easy and medium.
  config.tasks = dict(name='documents', train_level='easy', sft_level='',
                      # Root tasks by first word ('' = all).
                      task_kinds=(),
                      eval_levels=('easy', 'medium'),
                      eval_split='test', num_eval=16,
                      data_dir='')  # '' = <workdir>/data

  config.sampler = dict(num_slots=64, max_len=512, decode_steps=8,
                        temperature=1.0, top_k=0)
  config.rollout = dict(
      budgets=dict(max_depth=8, max_children=4, max_steps=6, max_nodes=512,
                   max_tokens=1 << 16, max_new_tokens=96),
      window=dict(inline_chars=64, head_chars=24),
      # Binary splits down to two records need log2(records / 2) levels:
      # 7 for medium documents, 9 for hard ones.
      eval_max_depth=10)

  config.sft = dict(
      steps=120, roots_per_step=4, solver='recursive',
      optim=dataclasses.asdict(update.OptimConfig(
          learning_rate=1.5e-3, warmup_steps=20, decay_steps=100,
          weight_decay=0.0)))
  config.rl = dict(
      steps=10, roots_per_step=4, group_size=8, num_iterations=1,
      rows_per_batch=16, pack_lengths=(128, 256, 512),
      credit=dataclasses.asdict(credit.CreditConfig(child_bonus=0.4)),
      loss=dataclasses.asdict(losses.LossConfig()))
  config.optim = dataclasses.asdict(update.OptimConfig(
      learning_rate=2e-4, weight_decay=0.0))

  config.generate = dict(prompt='<task>sum 3 4</task>', max_new_tokens=32,
                         max_len=128)

  config.mesh = dict(data=1, fsdp=-1, tensor=1)
  config.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
  config.checkpoint = dict(every_steps=25, max_to_keep=3)
  config.log = dict(every_steps=1, trees_every_steps=50, progress_bar=True)

  if arg == 'smoke':
    config.sft.steps = 3
    config.sft.roots_per_step = 2
    config.rl.steps = 2
    config.rl.roots_per_step = 1
    config.rl.group_size = 4
    config.sampler.num_slots = 8
    config.tasks.num_eval = 2
    config.tasks.train_level = 'easy'
    config.tasks.eval_levels = ('easy',)
    config.checkpoint.every_steps = 1
    config.log.progress_bar = False
  elif arg:
    raise ValueError(f'configs/cpu_tiny.py: unknown variant {arg!r} '
                     '(known: smoke)')
  return config
