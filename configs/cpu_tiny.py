r"""A tiny Gemma-3-style recursive agent trained on a CPU.

  python -m rao_jax.main --config=configs/cpu_tiny.py --workdir=runs/tiny

About 13 minutes on 2 CPU cores. SFT on the long-document task's reference
call trees over `moderate` documents (1-2.5 times the 256-token window; 150
steps), evaluation, RAO's GRPO on the model's own trees (10 steps),
evaluation again. Expected held-out root success on moderate documents:
0.667 for the recursive agent after SFT (single agent 0.026), 0.674 after
RL. `:smoke` runs every phase for a few steps in about a minute (the tests
use it); `:crafting` and `:multihop` train the other task families
(train on medium, evaluate easy/medium/hard), `:crafting,smoke` a few steps
of one; `:mixture` leaves whether to delegate to RL (the claims
experiments in benchmarks/claims/ use it). `:prose` trains on documents
whose records come in many phrasings (`documents_prose`, easy: 1-4 times
what one node reads); `:python` makes nodes act in code blocks run in a
sandbox (`rollout.actions='python'`), e.g. `:prose,python` beside
`:prose` compares the two action modes on the same tasks
(docs/python_actions.md); `:beyond` trains the recursive agent's leaves
to exactness for 16 windows (claim 2). How these settings were chosen:
docs/results.md.
"""

import dataclasses

import ml_collections

from rao_jax.model import config as model_config
from rao_jax.model import lora
from rao_jax.model import sharding
from rao_jax.rl import credit
from rao_jax.rl import losses
from rao_jax.rl import update
from rao_jax.sandbox import limits as sandbox_limits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The cpu_tiny config; `arg` names variants (`VARIANTS`), e.g. 'smoke'
  shrinks every phase, 'crafting' trains another task family."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.mode = 'train'
  config.distributed = False  # multi-host: jax.distributed.initialize()

  # Every field spelled out, so `--config.model.<field>=...` can override it.
  config.model = dataclasses.asdict(model_config.tiny())
  # The byte tokenizer and the raw protocol: every tag is one token.
  config.tokenizer = dict(kind='byte', path='', chat_template='none',
                          preamble=False)
  # A Hugging Face checkpoint directory to start from instead of random init.
  config.init_from_hf = ''

  # `moderate` documents, SFT and RL alike: a medium document tree (~200
  # nodes) is too slow to train on in minutes on 2 cores, and SFT on `easy`
  # never shows the two-digit totals of moderate's upper nodes. Numeric
  # questions only: label questions are right by chance 1/3-1/2 of the
  # time, and RL on a weak model learns to guess them at the root.
  config.tasks = dict(name='documents', train_level='moderate',
                      sft_level='',  # '' = train_level
                      task_kinds=('count', 'sum'),  # first words; () = all
                      eval_levels=('moderate',),
                      eval_agents=('recursive', 'single_agent'),
                      eval_split='test', num_eval=64,
                      data_dir='')  # '' = <workdir>/data

  # A 256-token window: a node sees its data inline up to two records (24
  # chars) and otherwise a handle, so "split or answer" is visible.
  config.sampler = dict(num_slots=64, max_len=256, decode_steps=8,
                        temperature=1.0, top_k=0)
  config.rollout = dict(
      budgets=dict(max_depth=8, max_children=4, max_steps=6, max_nodes=512,
                   max_tokens=1 << 16, max_new_tokens=96),
      # show_depth_budget=False: the paper's prompt, without the depth
      # budget (a spawn past it is refused in text).
      window=dict(inline_chars=24, head_chars=10, show_depth_budget=True),
      # Binary splits down to two records need log2(records / 2) levels: 5
      # for moderate documents, 7 for medium ones. An eval budget equal to
      # the training one is evaluated once.
      eval_max_depth=8)

  config.sft = dict(
      steps=150, roots_per_step=4, solver='recursive',
      # The paper's token mean ('sequence_mean' lowers root success here).
      aggregation='token_mean',
      # 288-token rows: a parent (~190 tokens) and a leaf (~100) share one;
      # at 256 a quarter of every batch was padding.
      pack_lengths=(144, 288), rows_per_batch=16,
      optim=dataclasses.asdict(update.OptimConfig(
          learning_rate=1.5e-3, warmup_steps=15, decay_steps=135,
          weight_decay=0.0)))
  config.rl = dict(
      steps=10, roots_per_step=4, group_size=8, num_iterations=1,
      # As SFT's; log-probs are computed in chunks that divide every length.
      rows_per_batch=16, pack_lengths=(144, 288),
      updates_per_pass=0,  # one optimiser update per minibatch
      # Nodes with advantage exactly 0 have a zero gradient: leave them out
      # (the divisors keep counting them, so the objective is the same).
      skip_zero_advantage=True,
      # Each node against the group's samples of its own sub-task whose
      # children returned the same answers: a parent that combined wrong
      # answers correctly is not blamed for them (docs/results.md).
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

  # Low-rank adapters (rank 0: every parameter trains); model/lora.py.
  config.lora = dataclasses.asdict(lora.LoraConfig())

  config.mesh = dict(data=1, fsdp=-1, tensor=1)
  config.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
  config.checkpoint = dict(every_steps=25, max_to_keep=3, export_hf=True,
                           preemption_patience_s=10.0)
  config.log = dict(every_steps=1, trees_every_steps=50, progress_bar=True,
                    plots=True)
  # `--config.mode=plan`: this machine's (fake) devices, 1 GiB each (CPU
  # devices report no memory of their own).
  config.plan = dict(topology='', hbm_gib=1.0, headroom=0.9, compile=True)

  variants = set(arg.split(',')) if arg else set()
  unknown = variants - set(VARIANTS)
  if unknown:
    raise ValueError(f'configs/cpu_tiny.py: unknown variants '
                     f'{sorted(unknown)} (known: {", ".join(VARIANTS)})')
  if 'crafting' in variants:
    _crafting(config)
  if 'multihop' in variants:
    _multihop(config)
  if 'mixture' in variants:
    _mixture(config)
  if 'beyond' in variants:
    _beyond(config)
  if 'prose' in variants:
    _prose(config)
  if 'python' in variants:
    _python(config)
  if 'smoke' in variants:
    _smoke(config)
  return config


# `:a,b` combines variants, e.g. `cpu_tiny.py:crafting,smoke`.
VARIANTS = ('smoke', 'crafting', 'multihop', 'mixture', 'prose', 'python',
            'beyond')


def _task_family(config: ml_collections.ConfigDict, name: str,
                 max_depth: int, eval_max_depth: int) -> None:
  """Another task family with the paper's generalisation split: train on
  medium, evaluate easy, medium and hard, a deeper budget in evaluation;
  no child bonus and the root-level baseline (the paper's settings outside
  document aggregation)."""
  config.tasks.name = name
  config.tasks.train_level = 'medium'
  config.tasks.task_kinds = ()
  config.tasks.eval_levels = ('easy', 'medium', 'hard')
  config.rollout.budgets.max_depth = max_depth
  config.rollout.eval_max_depth = eval_max_depth
  config.rl.credit.child_bonus = 0.0
  config.rl.credit.baseline = 'leave_one_out'


def _crafting(config: ml_collections.ConfigDict) -> None:
  """TextCraft-Synth-style crafting: depth 6 in training, 12 in evaluation
  (the paper's); children share the parent's inventory."""
  _task_family(config, 'crafting', max_depth=6, eval_max_depth=12)
  # Its nodes are short, so SFT steps are cheap; after 150 the policy
  # still miscopies item names.
  config.sft.steps = 400
  config.sft.optim.decay_steps = 385


def _multihop(config: ml_collections.ConfigDict) -> None:
  """DeepDive-style multi-hop lookups: depth 4 (the paper's search)."""
  _task_family(config, 'multihop', max_depth=4, eval_max_depth=4)


def _mixture(config: ml_collections.ConfigDict) -> None:
  """Whether to delegate, left to RL: SFT on a mixture of direct and
  recursive demonstrations (a coin per tree) over `mixed` documents, 2-32
  records (a quarter of what one node reads in its window to four times
  that), so that delegating is a coin flip whatever the length; RL on the
  same documents with the paper's root-level baseline (Eq. 3). The
  results baseline never compares a root that spawned with one that did
  not, so the decision would get no signal."""
  config.tasks.train_level = 'mixed'
  config.tasks.eval_levels = ('mixed',)
  config.sft.solver = 'mixture'
  # Half the trees are one-node direct answers: twice the roots a step
  # give SFT about as many recursive nodes as half the default's.
  config.sft.roots_per_step = 8
  config.rl.steps = 15
  config.rl.credit.baseline = 'leave_one_out'


def _beyond(config: ml_collections.ConfigDict) -> None:
  """Claim 2 at 16 windows: leaves the tiny model learns exactly. SFT on
  the recursive solver only (2-record leaves: 2-operand steps, learned in
  minutes) over `mixed` documents, long enough that per-node errors are
  rare (root exact ~ per-node exact ** nodes: 127 nodes at 16 windows
  need ~0.999 a node for 0.9); RL as `mixture`'s."""
  config.tasks.train_level = 'mixed'
  config.tasks.eval_levels = ('mixed',)
  config.sft.solver = 'recursive'
  config.sft.steps = 600
  config.sft.optim.decay_steps = 585
  config.rl.steps = 15
  config.rl.credit.baseline = 'leave_one_out'


def _prose(config: ml_collections.ConfigDict) -> None:
  """Documents whose records must be read (`documents_prose`): `easy`,
  8-30 records of ~20 characters, is 1-4 times what one node of the
  256-token window reads, so delegating on slices is how a node reads it
  all; numeric questions, as the default's."""
  config.tasks.name = 'documents_prose'
  config.tasks.train_level = 'easy'
  config.tasks.eval_levels = ('easy',)


def _python(config: ml_collections.ConfigDict) -> None:
  """Nodes act in Python (`agent.code_protocol`): each step a code block
  run in a sandbox worker, children spawned from code."""
  config.rollout.actions = 'python'
  # A block's output fits the 256-token window with room to answer (a
  # longer one is cut, the cut said); two warm workers, one per core.
  config.rollout.sandbox = dataclasses.asdict(sandbox_limits.Limits(
      num_workers=2, output_chars=160))


def _smoke(config: ml_collections.ConfigDict) -> None:
  """A few steps of every phase, in about a minute (the tests use it)."""
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
  # A deeper evaluation than training exercises the eval-depth pass.
  config.rollout.eval_max_depth = config.rollout.budgets.max_depth + 2
  config.checkpoint.every_steps = 1
  config.log.progress_bar = False
