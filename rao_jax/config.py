"""The run's configuration as frozen, validated dataclasses.

A config file (`configs/*.py`) builds an `ml_collections.ConfigDict`, which
`--config.x=y` flags override. `from_config_dict` turns it, once, at the
entry point, into a `RunConfig`: one frozen dataclass per section, each
checking its own fields in `__post_init__`, and `RunConfig` checking the
fields that relate sections. Errors name the field as the command line
spells it (`rl.group_size=1: ...`). Past this boundary no library function
sees a ConfigDict: each takes its own section or explicit arguments.

Checks that need the devices (the mesh divides the slots, the parameters
shard evenly) run in `training.setup`, still before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import ml_collections

from rao_jax.runtime import errors
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.model import config as model_config
from rao_jax.model import lora as lora_lib
from rao_jax.model import sharding
from rao_jax.rl import credit as credit_lib
from rao_jax.rl import losses
from rao_jax.rl import update
from rao_jax.sandbox import limits as limits_lib
from rao_jax.tasks import context as context_lib
from rao_jax.tasks import registry

MODES = ('train', 'sft', 'rl', 'eval', 'generate', 'export', 'plan')
TOKENIZERS = ('byte', 'hf')
# 'none': the raw protocol; 'checkpoint': the tokenizer directory's own
# template; 'gemma', 'qwen': the built-in ones (`agent.chat.BUILT_IN`).
CHAT_TEMPLATES = ('none', 'checkpoint', 'gemma', 'qwen')
SOLVERS = ('recursive', 'direct', 'mixture')
MAX_SEED = 2**31 - 1
ACTIONS = ('tags', 'python')  # `agent.chat.ACTIONS`


# Written `not value > 0` rather than `value <= 0`: NaN fails every
# comparison, and must fail the check too.


def _check_positive(section: str, **values: int | float) -> None:
  for name, value in values.items():
    if not value > 0:
      raise ValueError(f'{section}.{name}={value}: must be > 0')


def _check_non_negative(section: str, **values: int | float) -> None:
  for name, value in values.items():
    if not value >= 0:
      raise ValueError(f'{section}.{name}={value}: must be >= 0')


def _check_finite(prefix: str, fields: dict[str, Any]) -> None:
  """Every float among `fields` (nested in tuples too) is finite: no
  field of a run means anything at NaN or infinity (a NaN learning rate
  trains to NaN weights; an infinite temperature fails minutes later)."""
  for name, value in fields.items():
    for item in value if isinstance(value, tuple) else (value,):
      if isinstance(item, float) and not math.isfinite(item):
        raise ValueError(f'{prefix}{name}={item}: must be a finite '
                         'number')


def _check_pack_lengths(section: str, pack_lengths: tuple[int, ...],
                        rows_per_batch: int) -> None:
  if not pack_lengths or min(pack_lengths) <= 0:
    raise ValueError(f'{section}.pack_lengths={list(pack_lengths)}: needs '
                     'positive row lengths')
  _check_positive(section, rows_per_batch=rows_per_batch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
  """The run's tokenizer and how a node's turns are written with it.

  Attributes:
    kind: 'byte' (the protocol's tags as single tokens) or 'hf' (a
      directory holding `tokenizer.json`).
    path: that directory (with `tokenizer_config.json` and a chat template
      where the checkpoint has them).
    chat_template: 'none' (the raw protocol), 'checkpoint' (the
      directory's template), 'gemma' or 'qwen' (built in).
    preamble: open every node with the protocol explained
      (`agent.protocol.preamble`), for a pretrained model.
  """

  kind: str = 'byte'
  path: str = ''
  chat_template: str = 'none'
  preamble: bool = False

  def __post_init__(self):
    if self.kind not in TOKENIZERS:
      raise ValueError(f'tokenizer.kind={self.kind!r}: expected "byte" or '
                       '"hf"')
    if self.chat_template not in CHAT_TEMPLATES:
      raise ValueError(f'tokenizer.chat_template={self.chat_template!r}: '
                       f'expected one of {CHAT_TEMPLATES}')
    if self.kind == 'byte' and self.chat_template != 'none':
      raise ValueError(f'tokenizer.chat_template={self.chat_template!r} '
                       'needs tokenizer.kind="hf": the byte tokenizer has no '
                       'chat tokens')
    if not isinstance(self.preamble, bool):
      raise ValueError(f'tokenizer.preamble={self.preamble!r}: expected '
                       'True or False')
    # The path is checked by `RunConfig`: plan mode reads no tokenizer.


# The agents an evaluation can compare (`TasksConfig.eval_agents`).
EVAL_AGENTS = ('recursive', 'single_agent')


@dataclasses.dataclass(frozen=True, kw_only=True)
class TasksConfig:
  """The task family, its levels and the held-out evaluation.

  Attributes:
    name: a registered task (`rao_jax.tasks.registry`) or a module path.
    train_level: the level RL trains on.
    sft_level: the level SFT trains on ('' = train_level).
    task_kinds: keep only tasks whose first word is one of these (() = all).
    eval_levels: levels evaluated after each phase.
    eval_agents: the agents evaluated: 'recursive' (at the training depth
      budget and at `rollout.eval_max_depth`) and 'single_agent' (depth
      budget 0, the baseline).
    eval_split: the held-out split evaluated.
    num_eval: tasks evaluated per level.
    data_dir: where the datasets are built ('' = <workdir>/data).
  """

  name: str
  train_level: str
  sft_level: str = ''
  task_kinds: tuple[str, ...] = ()
  eval_levels: tuple[str, ...] = ()
  eval_agents: tuple[str, ...] = EVAL_AGENTS
  eval_split: str = 'test'
  num_eval: int = 64
  data_dir: str = ''

  def __post_init__(self):
    _check_positive('tasks', num_eval=self.num_eval)
    unknown = [a for a in self.eval_agents if a not in EVAL_AGENTS]
    if unknown or not self.eval_agents:
      raise ValueError(f'tasks.eval_agents={self.eval_agents!r}: expected '
                       f'one or more of {", ".join(EVAL_AGENTS)}')

  def resolve(self) -> registry.Task:
    """The registered task, its levels checked."""
    try:
      task = registry.get(self.name)
    except KeyError as e:
      raise ValueError(f'tasks.name={self.name!r}: {e}') from None
    for field in ('train_level', 'sft_level'):
      level = getattr(self, field)
      if field == 'sft_level' and not level:
        continue  # '': SFT on train_level
      if level not in task.levels:
        raise ValueError(f'tasks.{field}={level!r}: task {task.name!r} has '
                         f'levels {task.levels}')
    unknown = set(self.eval_levels) - set(task.levels)
    if unknown:
      raise ValueError(f'tasks.eval_levels: unknown levels {sorted(unknown)}')
    return task


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplerConfig:
  """The slot batch the rollouts decode on.

  Attributes:
    num_slots: sequences decoded together.
    max_len: tokens a node's sequence may hold (its context window).
    decode_steps: tokens decoded per call between scheduler rounds.
    temperature: sampling temperature of RL's trees.
    top_k: 0 for the full distribution.
  """

  num_slots: int
  max_len: int
  decode_steps: int = 8
  temperature: float = 1.0
  top_k: int = 0

  def __post_init__(self):
    _check_positive('sampler', num_slots=self.num_slots, max_len=self.max_len,
                    decode_steps=self.decode_steps,
                    temperature=self.temperature)
    _check_non_negative('sampler', top_k=self.top_k)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
  """Budgets and the node window of every rollout.

  Attributes:
    budgets: depth, children, steps, nodes, tokens (training and SFT).
    window: what a node's prompt shows (its `max_tokens` is
      `sampler.max_len`).
    eval_max_depth: the depth budget of the second, deeper evaluation.
    actions: how nodes act: 'tags' (the tag protocol) or 'python' (code
      blocks in a sandbox, `agent.code_protocol`).
    sandbox: the python mode's sandbox limits (`sandbox.Limits`).
  """

  budgets: scheduler_lib.Budgets
  window: context_lib.Window
  eval_max_depth: int
  actions: str = 'tags'
  sandbox: limits_lib.Limits = limits_lib.Limits()

  def __post_init__(self):
    _check_non_negative('rollout', eval_max_depth=self.eval_max_depth)
    if self.actions not in ACTIONS:
      raise ValueError(f'rollout.actions={self.actions!r}: one of '
                       f'{ACTIONS}')


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig:
  """The supervised warm start on the task's demonstration trees.

  Attributes:
    steps: trainer steps (0: no SFT).
    roots_per_step: demonstration trees a step.
    solver: 'recursive' (the reference solver), 'direct' (never spawns),
      or 'mixture' (each tree's solver drawn, one or the other with equal
      odds, from the run seed, the step and the tree's index: whether to
      delegate is then a coin flip that does not depend on the input,
      which leaves the decision to RL).
    aggregation: the loss aggregation (`losses.AGGREGATIONS`).
    pack_lengths, rows_per_batch: the packed minibatches.
    optim: SFT's optimiser.
  """

  steps: int
  roots_per_step: int
  solver: str = 'recursive'
  aggregation: str = 'token_mean'
  pack_lengths: tuple[int, ...]
  rows_per_batch: int
  optim: update.OptimConfig

  def __post_init__(self):
    _check_non_negative('sft', steps=self.steps)
    _check_positive('sft', roots_per_step=self.roots_per_step)
    if self.solver not in SOLVERS:
      raise ValueError(f'sft.solver={self.solver!r}: expected one of '
                       f'{SOLVERS}')
    if self.aggregation not in losses.AGGREGATIONS:
      raise ValueError(f'sft.aggregation={self.aggregation!r}: expected '
                       f'one of {losses.AGGREGATIONS}')
    _check_pack_lengths('sft', self.pack_lengths, self.rows_per_batch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig:
  """RAO's GRPO over the policy's own call trees.

  Attributes:
    steps: trainer steps (0: no RL).
    roots_per_step: root tasks a step, each rolled out `group_size` times.
    group_size: G, trees a group (the leave-one-out baselines need 2).
    num_iterations: passes over a step's minibatches.
    rows_per_batch, pack_lengths: the packed minibatches.
    updates_per_pass: optimiser updates a pass (0: one per minibatch).
    skip_zero_advantage: leave nodes whose advantage is exactly 0 out.
    credit: rewards and advantages (Eqs. 1, 3, 4).
    loss: the objective (Eq. 5).
  """

  steps: int
  roots_per_step: int
  group_size: int
  num_iterations: int = 1
  rows_per_batch: int
  pack_lengths: tuple[int, ...]
  updates_per_pass: int = 0
  skip_zero_advantage: bool = False
  credit: credit_lib.CreditConfig
  loss: losses.LossConfig

  def __post_init__(self):
    _check_non_negative('rl', steps=self.steps)
    _check_positive('rl', roots_per_step=self.roots_per_step,
                    num_iterations=self.num_iterations)
    _check_pack_lengths('rl', self.pack_lengths, self.rows_per_batch)
    if self.group_size < 2 and credit_lib.is_leave_one_out(
        self.credit.baseline):
      raise ValueError(f'rl.group_size={self.group_size}: the leave-one-out '
                       'baseline needs at least 2 trees a group')
    _check_positive('rl', group_size=self.group_size)
    if self.updates_per_pass < 0:
      raise ValueError(f'rl.updates_per_pass={self.updates_per_pass}: must '
                       'be >= 0 (0: one update per minibatch)')
    if self.loss.kl_coef > 0:
      # The loss takes reference log-probs, but the trainer keeps no frozen
      # reference policy yet: refuse here rather than at the first update.
      raise ValueError(f'rl.loss.kl_coef={self.loss.kl_coef}: the trainer '
                       'keeps no reference policy yet; only 0 (the paper\'s '
                       'setting) runs')


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateConfig:
  """The `generate` mode: a greedy continuation of `prompt`."""

  prompt: str
  max_new_tokens: int = 32
  max_len: int = 128

  def __post_init__(self):
    _check_positive('generate', max_new_tokens=self.max_new_tokens,
                    max_len=self.max_len)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
  """Sizes of the ('data', 'fsdp', 'tensor') mesh; one may be -1 (all the
  devices the others leave)."""

  data: int = 1
  fsdp: int = -1
  tensor: int = 1

  def sizes(self) -> dict[str, int]:
    return {axis: getattr(self, axis) for axis in sharding.MESH_AXES}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanConfig:
  """The slice `mode=plan` checks the run against (`rao_jax.plan`).

  Attributes:
    topology: a Cloud TPU slice ('v4-8', 'v4-32', ...; see
      `plan.targets.TOPOLOGIES`), or '' for this machine's own devices.
    hbm_gib: memory a device has, GiB (0: the target's own, 32 for a TPU
      v4 chip, or what this machine's devices report).
    headroom: the share of `hbm_gib` a run may plan to use; the rest is
      left to fragmentation and the runtime.
    compile: compile the train step and the sampler's programs for the
      target where its compiler is here (libtpu for a TPU slice), and use
      their own memory figures; False (or no compiler): estimates only.
  """

  topology: str = ''
  hbm_gib: float = 0.0
  headroom: float = 0.9
  compile: bool = True

  def __post_init__(self):
    _check_non_negative('plan', hbm_gib=self.hbm_gib)
    if not 0 < self.headroom <= 1:
      raise ValueError(f'plan.headroom={self.headroom}: must be in (0, 1]')
    if not isinstance(self.compile, bool):
      raise ValueError(f'plan.compile={self.compile!r}: must be True or '
                       'False')


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
  """Every `every_steps` trainer steps and at each phase's end (0: never),
  the newest `max_to_keep` kept; with `export_hf` a run that trained ends
  by writing the policy as a Hugging Face directory, `<workdir>/hf`. After
  SIGTERM a step still running `preemption_patience_s` later stops at its
  next minibatch boundary and is saved (`runtime.multihost.Preemption`)."""

  every_steps: int = 25
  max_to_keep: int = 3
  export_hf: bool = True
  preemption_patience_s: float = 10.0

  def __post_init__(self):
    _check_non_negative('checkpoint', every_steps=self.every_steps,
                        preemption_patience_s=self.preemption_patience_s)
    _check_positive('checkpoint', max_to_keep=self.max_to_keep)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogConfig:
  """Metrics every `every_steps`, trees every `trees_every_steps` (0:
  never), a progress bar on the console, the run's plots drawn into
  `plots/` at its end (`plots`; off for harnesses that run many short runs
  and draw their own: matplotlib takes about a second a run)."""

  every_steps: int = 1
  trees_every_steps: int = 50
  progress_bar: bool = True
  plots: bool = True

  def __post_init__(self):
    _check_positive('log', every_steps=self.every_steps)
    _check_non_negative('log', trees_every_steps=self.trees_every_steps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  """A whole run, section by section in data-flow order.

  Attributes:
    seed: every random choice derives from it and the step.
    mode: 'train' (SFT, eval, RL, eval), 'sft', 'rl', 'eval', 'generate',
      'export' (the newest checkpoint as a Hugging Face directory) or 'plan'
      (the memory plan on `plan`'s slice; nothing runs).
    distributed: multi-host (`jax.distributed.initialize()`).
    init_from_hf: a Hugging Face checkpoint directory to start from.
    optim: RL's optimiser (SFT's is `sft.optim`).
    sharding_rules: logical axis -> mesh axes.
    plan: the slice plan mode checks the run against.
    lora: low-rank adapters (`model/lora.py`); rank 0: full fine-tuning.
      With adapters only they are trained and held in the optimiser state.
  """

  seed: int = 0
  mode: str = 'train'
  distributed: bool = False
  init_from_hf: str = ''
  model: model_config.ModelConfig
  tokenizer: TokenizerConfig
  tasks: TasksConfig
  sampler: SamplerConfig
  rollout: RolloutConfig
  sft: SFTConfig
  rl: RLConfig
  optim: update.OptimConfig
  generate: GenerateConfig
  mesh: MeshConfig
  sharding_rules: tuple[tuple[str, Any], ...]
  checkpoint: CheckpointConfig
  log: LogConfig
  plan: PlanConfig = PlanConfig()
  lora: lora_lib.LoraConfig = lora_lib.LoraConfig()

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'config.mode={self.mode!r}: expected one of {MODES}')
    # Seeds are folded into uint32 keys and numpy's seed sequences, which
    # refuse negatives: checked here, before any file is written.
    if (not isinstance(self.seed, int) or isinstance(self.seed, bool) or
        not 0 <= self.seed <= MAX_SEED):
      raise ValueError(f'seed={self.seed!r}: must be an integer from 0 to '
                       f'{MAX_SEED}')
    if self.mode == 'plan':
      # A plan runs in one process wherever it is typed, never on the
      # slice it plans for: it joins no multi-host run.
      object.__setattr__(self, 'distributed', False)
    elif self.tokenizer.kind == 'hf' and not self.tokenizer.path:
      raise ValueError('tokenizer.path must name a directory with '
                       'tokenizer.json when tokenizer.kind="hf"')
    if self.mode != 'generate':
      task = self.tasks.resolve()
      if (self.rollout.actions == 'python' and
          task.code_recursive_solver is None):
        raise ValueError(
            f'rollout.actions="python": task {task.name!r} has no python-'
            'mode solvers (its environment tools are not offered to code)')
    if self.rl.loss.temperature != self.sampler.temperature:
      raise ValueError(
          f'rl.loss.temperature={self.rl.loss.temperature} differs from '
          f'sampler.temperature={self.sampler.temperature}: the trainer\'s '
          'log-probs must be of the distribution the sampler drew from')
    if self.sampler.num_slots < self.rl.group_size:
      raise ValueError(
          f'sampler.num_slots={self.sampler.num_slots} is fewer than one '
          f'group needs (rl.group_size={self.rl.group_size})')
    for section in ('sft', 'rl'):
      pack_lengths = getattr(self, section).pack_lengths
      if max(pack_lengths) < self.sampler.max_len:
        raise ValueError(
            f'{section}.pack_lengths={list(pack_lengths)}: the largest must '
            f'hold a whole node (sampler.max_len={self.sampler.max_len})')
      chunk = self.rl.loss.logprob_chunk  # SFT's log-probs use it too
      for length in pack_lengths:
        if length % min(chunk, length):
          raise ValueError(f'{section}.pack_lengths: {length} is not a '
                           f'multiple of rl.loss.logprob_chunk={chunk}')

  @property
  def sft_loss(self) -> losses.LossConfig:
    """SFT's objective: RL's loss settings with the supervised estimator,
    SFT's aggregation and temperature 1 (demonstrations are not sampled)."""
    return dataclasses.replace(self.rl.loss, estimator='sft',
                               temperature=1.0,
                               aggregation=self.sft.aggregation)

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON-able values, keyed as the config file spells them (the
    plan section left out)."""
    plain = dataclasses.asdict(self)
    plain['rollout']['window'].pop('max_tokens')  # sampler.max_len
    plain['rollout']['window'].pop('chat')  # bound by the rollout
    if self.rollout.window.show_depth_budget:
      # Recorded where it is off only: workdirs of runs from before the
      # field compare equal.
      plain['rollout']['window'].pop('show_depth_budget')
    if self.rollout.actions == 'tags':
      # The python mode's fields are recorded for its runs only, so the
      # workdirs of tag runs from before it compare equal.
      plain['rollout'].pop('actions')
      plain['rollout'].pop('sandbox')
    # Where a plan is made for changes nothing a run does or records.
    plain.pop('plan')
    return json.loads(json.dumps(plain))


# ----------------------------------------------------------------- parsing


def _section(cls, name: str, fields: dict[str, Any], **given: Any):
  """`cls(**fields, **given)` with errors that name the config section and
  field; `given` are fields built from nested sections or other sections."""
  known = {f.name for f in dataclasses.fields(cls)} - set(given)
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f'{name}: unknown fields {unknown}; known: '
                     f'{sorted(known)}')
  # Tuples, not lists, so every section stays hashable.
  fields = {k: tuple(v) if isinstance(v, list) else v
            for k, v in fields.items()}
  # Top-level fields are spelled bare ('seed'), others with their section.
  _check_finite('' if name == 'config' else f'{name}.', fields)
  try:
    return cls(**fields, **given)
  except TypeError as e:  # a required field is missing
    raise ValueError(f'{name}: {e}') from None
  except ValueError as e:
    message = str(e)
    # Library dataclasses name themselves ('Budgets.max_depth') or their
    # usual section ('optim.' for sft.optim): say where the value sits.
    message = message.replace(f'{cls.__name__}.', f'{name}.')
    short = name.rsplit('.', 1)[-1]
    if short != name and message.startswith(f'{short}.'):
      message = name + message[len(short):]
    if (name == 'config' or message.startswith(f'{name}.') or
        message.startswith(f'{name}=')):
      raise ValueError(message) from None  # it names the field already
    raise ValueError(f'{name}: {message}') from None


def _pop(fields: dict[str, Any], name: str, key: str) -> dict[str, Any]:
  if key not in fields:
    raise ValueError(f'{name}: missing section {key!r}')
  value = fields.pop(key)
  return dict(value)


def from_config_dict(config: ml_collections.ConfigDict) -> RunConfig:
  """The typed, validated run config of a config file's ConfigDict.

  Field references (`config.get_ref`) are resolved to their values. Raises
  `errors.ConfigError` (a ValueError) naming the first bad field; nothing
  is built or compiled.
  """
  try:
    return _from_config_dict(config)
  except errors.ConfigError:
    raise
  except ValueError as e:
    raise errors.ConfigError(str(e)) from None


def _from_config_dict(config: ml_collections.ConfigDict) -> RunConfig:
  raw = config.to_dict()
  sections = {f.name for f in dataclasses.fields(RunConfig)}
  unknown = sorted(set(raw) - sections)
  if unknown:
    raise ValueError(f'config: unknown fields {unknown}; known: '
                     f'{sorted(sections)}')
  sampler = _section(SamplerConfig, 'sampler', _pop(raw, 'config', 'sampler'))
  rollout = _pop(raw, 'config', 'rollout')
  rollout = _section(
      RolloutConfig, 'rollout', rollout,
      budgets=_section(scheduler_lib.Budgets, 'rollout.budgets',
                       _pop(rollout, 'rollout', 'budgets')),
      window=_section(context_lib.Window, 'rollout.window',
                      _pop(rollout, 'rollout', 'window'),
                      max_tokens=sampler.max_len, chat=None),
      # Optional: without it, the default limits.
      sandbox=_section(limits_lib.Limits, 'rollout.sandbox',
                       dict(rollout.pop('sandbox', {}))))
  sft = _pop(raw, 'config', 'sft')
  sft = _section(SFTConfig, 'sft', sft, optim=_section(
      update.OptimConfig, 'sft.optim', _pop(sft, 'sft', 'optim')))
  rl = _pop(raw, 'config', 'rl')
  rl = _section(
      RLConfig, 'rl', rl,
      credit=_section(credit_lib.CreditConfig, 'rl.credit',
                      _pop(rl, 'rl', 'credit')),
      loss=_section(losses.LossConfig, 'rl.loss', _pop(rl, 'rl', 'loss')))
  model = _pop(raw, 'config', 'model')
  _check_finite('model.', model)
  model = model_config.from_dict(model)
  return _section(
      RunConfig, 'config', raw, model=model, sampler=sampler,
      rollout=rollout, sft=sft, rl=rl,
      tokenizer=_section(TokenizerConfig, 'tokenizer',
                         _pop(raw, 'config', 'tokenizer')),
      tasks=_section(TasksConfig, 'tasks', _pop(raw, 'config', 'tasks')),
      optim=_section(update.OptimConfig, 'optim', _pop(raw, 'config', 'optim')),
      generate=_section(GenerateConfig, 'generate',
                        _pop(raw, 'config', 'generate')),
      mesh=_section(MeshConfig, 'mesh', _pop(raw, 'config', 'mesh')),
      sharding_rules=sharding.normalize_rules(raw.pop('sharding_rules', ())),
      checkpoint=_section(CheckpointConfig, 'checkpoint',
                          _pop(raw, 'config', 'checkpoint')),
      log=_section(LogConfig, 'log', _pop(raw, 'config', 'log')),
      # Optional: a config without it plans for this machine's devices.
      plan=_section(PlanConfig, 'plan', dict(raw.pop('plan', {}))),
      # Optional too: without it the run trains every parameter.
      lora=_section(lora_lib.LoraConfig, 'lora', dict(raw.pop('lora', {}))))


# ------------------------------------------------------ inputs on disk


def check_inputs(config: RunConfig) -> None:
  """The files the config names are there, checked without reading a
  weight or compiling anything (before the workdir records the run): the
  tokenizer directory, `init_from_hf` and `tasks.data_dir`. A plan reads
  none of them.

  Raises:
    errors.MissingInput: naming the field, the path and what it needs.
  """
  if config.mode == 'plan':
    return
  tokenizer = config.tokenizer
  if tokenizer.kind == 'hf':
    _check_dir('tokenizer.path', tokenizer.path, ('tokenizer.json',),
               'a directory holding a Hugging Face tokenizer.json')
  if config.init_from_hf:
    _check_dir('init_from_hf', config.init_from_hf, ('config.json',),
               'a Hugging Face checkpoint directory with config.json and '
               '*.safetensors')
    if not any(name.endswith('.safetensors')
               for name in os.listdir(config.init_from_hf)):
      raise errors.MissingInput(
          f'init_from_hf={config.init_from_hf!r}: no *.safetensors there '
          '(expected a Hugging Face checkpoint directory with config.json '
          'and *.safetensors)')
  data_dir = config.tasks.data_dir
  if data_dir and '://' not in data_dir and os.path.exists(data_dir) and (
      not os.path.isdir(data_dir)):
    raise errors.MissingInput(f'tasks.data_dir={data_dir!r}: is a file '
                              '(expected a directory, or a new path)')


def _check_dir(field: str, path: str, files: tuple[str, ...],
               expected: str) -> None:
  """`path` is a local directory holding `files`, else a refusal naming
  `field`."""
  if '://' in path:
    return  # remote: read where it is used
  if not os.path.isdir(path):
    raise errors.MissingInput(f'{field}={path!r}: no such directory '
                              f'(expected {expected})')
  for name in files:
    if not os.path.isfile(os.path.join(path, name)):
      raise errors.MissingInput(f'{field}={path!r}: no {name} there '
                                f'(expected {expected})')
