r"""A tiny Gemma-3-style recursive agent trained on a CPU.

Run (about 13 minutes on 2 CPU cores):

  python -m rao_jax.main --config=configs/cpu_tiny.py --workdir=runs/tiny

It supervises the ~0.8M-parameter model on the long-document task's
reference call trees over `moderate` documents (longer than the 256-token
window; SFT, 150 steps), evaluates, runs RAO's GRPO on its own call trees
over the same level (RL, 10 steps), evaluates again, and prints held-out
root success for the recursive agent and the single agent (depth budget 0).
Measured (README, "Measured"): after SFT the recursive agent scores 0.667
(partial credit) on moderate documents against 0.026 for the single agent;
after RL, each node against the samples of its sub-task whose children
returned the same answers, 0.674 (0.685 with seeds 1 and 2; on all 256
test tasks 0.655 to 0.665). The workdir holds
checkpoints (rerun the same command to resume), TensorBoard events,
metrics.jsonl, sampled call trees under trees/ and summary.json.

Variants: `configs/cpu_tiny.py:smoke` runs a few steps of everything in
about a minute (the tests use it). Override any field:
`--config.rl.steps=40 "--config.tasks.eval_levels=('easy','moderate')"`.

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

  # The paper trains on medium; on 2 CPU cores a medium document tree (~200
  # nodes) is too slow to train on in minutes. The tiny run trains on
  # `moderate` documents (26-60 records: 1-2.5 times the 256-token window),
  # SFT and RL alike, and evaluates on moderate's held-out test split. SFT on
  # the shorter `easy` documents is cheaper per step but never shows the
  # two-digit totals that moderate's upper nodes add, and the tiny model does
  # not extrapolate them (README, "Measured"). Numeric questions only: a
  # label question ('most', 'more') is right by chance 1/3-1/2 of the time,
  # and RL on a weak model learns to guess it at the root instead of
  # delegating.
  config.tasks = dict(name='documents', train_level='moderate',
                      sft_level='',  # '' = train_level
                      task_kinds=('count', 'sum'),  # first words; () = all
                      eval_levels=('moderate',),
                      eval_split='test', num_eval=64,
                      data_dir='')  # '' = <workdir>/data

  # A 256-token window: a node sees its data inline up to two records (24
  # chars) and otherwise a handle, so "split or answer" is visible.
  config.sampler = dict(num_slots=64, max_len=256, decode_steps=8,
                        temperature=1.0, top_k=0)
  config.rollout = dict(
      budgets=dict(max_depth=8, max_children=4, max_steps=6, max_nodes=512,
                   max_tokens=1 << 16, max_new_tokens=96),
      window=dict(inline_chars=24, head_chars=10),
      # Binary splits down to two records need log2(records / 2) levels: 5
      # for moderate documents, 7 for medium ones. An eval budget equal to
      # the training one is evaluated once.
      eval_max_depth=8)

  config.sft = dict(
      steps=150, roots_per_step=4, solver='recursive',
      # The paper's token mean; 'sequence_mean' weighs every node the same,
      # however many tokens it writes.
      aggregation='token_mean',
      optim=dataclasses.asdict(update.OptimConfig(
          learning_rate=1.5e-3, warmup_steps=15, decay_steps=135,
          weight_decay=0.0)))
  config.rl = dict(
      steps=10, roots_per_step=4, group_size=8, num_iterations=1,
      # 288-token rows: a parent (~190 tokens) and a leaf (~100) share one;
      # at 256 a quarter of every batch was padding. Log-probs are computed
      # in chunks that divide every row length.
      rows_per_batch=16, pack_lengths=(144, 288),
      # Optimiser updates a pass over the step's minibatches, gradients
      # accumulated within each (0: one update per minibatch).
      updates_per_pass=0,
      # Leave nodes with advantage exactly 0 out of the update: their
      # gradient is 0, and under the per-sub-task baseline they are most
      # deep nodes. Divisors keep counting them (train._update).
      skip_zero_advantage=True,
      # Each node against the group's other samples of its own sub-task
      # (task, data, format) whose children returned the same answers: a
      # sub-task every sample answers alike gets no advantage, and a parent
      # that combined a child's wrong answer correctly is not blamed for it,
      # so what trains is the nodes whose own choices differed (here mostly
      # leaves, 1-3% of the tokens). With the paper's root-level baseline a
      # weak model's node advantages are nearly all positive; against all
      # nodes at its depth, easy sub-tasks are pushed up and hard ones down
      # whatever was sampled, and Adam at 5e-5 turns that noise into damage
      # (README, "Measured").
      credit=dataclasses.asdict(credit.CreditConfig(
          child_bonus=0.4, baseline='leave_one_out_results')),
      loss=dataclasses.asdict(losses.LossConfig(logprob_chunk=144)))
  # The trainer's log-probs follow the sampler's temperature (a reference:
  # `--config.sampler.temperature=T` sets both).
  config.rl.loss.temperature = config.sampler.get_ref('temperature')
  config.optim = dataclasses.asdict(update.OptimConfig(
      learning_rate=5e-5, weight_decay=0.0))

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
    # After 3 SFT steps every tree fails alike and every advantage is 0:
    # skipping would leave the RL update unexercised.
    config.rl.skip_zero_advantage = False
    config.sampler.num_slots = 8
    config.tasks.num_eval = 2
    config.tasks.train_level = 'easy'
    config.tasks.eval_levels = ('easy',)
    config.rollout.eval_max_depth = 10  # exercises the eval-depth pass
    config.checkpoint.every_steps = 1
    config.log.progress_bar = False
  elif arg:
    raise ValueError(f'configs/cpu_tiny.py: unknown variant {arg!r} '
                     '(known: smoke)')
  return config
