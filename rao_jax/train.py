"""The outer loop: supervised warm start, RAO's GRPO over call trees, eval.

Modes (`config.mode`):
  train     SFT on the task's demonstration trees, evaluate, RL, evaluate
            (the README's main command).
  sft, rl   one phase; `rl` starts from `init_from_hf` or from init.
  eval      success per task level, recursive and single-agent.
  generate  greedy continuation of a prompt (a smoke run of the model).

One global step counts SFT steps then RL steps. Every `checkpoint.every_steps`
the train state (parameters, optimiser), the data iterator's position and
the evaluations so far are checkpointed; a run started on a workdir with a
checkpoint resumes from the newest one that restores and continues exactly
as if it had not stopped (all randomness derives from (seed, step)).

Every config value is checked before anything compiles, and errors name
the field (`rl.group_size`, `rollout.max_depth`, `tasks.name`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import ml_collections
import numpy as np
import tensorboardX
import tqdm

from rao_jax import checkpoint as checkpoint_lib
from rao_jax import data as data_lib
from rao_jax import model as model_lib
from rao_jax.agent import engine as engine_lib
from rao_jax.agent import protocol
from rao_jax.agent import sampler_engine
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.model import config as model_config
from rao_jax.model import gemma
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.rl import credit as credit_lib
from rao_jax.rl import losses
from rao_jax.rl import metrics as metrics_lib
from rao_jax.rl import packing
from rao_jax.rl import update
from rao_jax.sampler import sampling
from rao_jax.sampler import slots as slots_lib
from rao_jax.tasks import context as context_lib
from rao_jax.tasks import registry

MODES = ('train', 'sft', 'rl', 'eval', 'generate')


# ---------------------------------------------------------------------------
# Config: typed, validated sections.
# ---------------------------------------------------------------------------


def _typed(cls, section: str, fields: ml_collections.ConfigDict | dict):
  """`cls(**fields)` with errors that name the config section and field."""
  fields = fields.to_dict() if hasattr(fields, 'to_dict') else dict(fields)
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f'{section}: unknown fields {unknown}; known: '
                     f'{sorted(known)}')
  try:
    return cls(**fields)
  except ValueError as e:
    # Library dataclasses name themselves ('Budgets.max_depth'); say where
    # the value sits in the config instead.
    message = str(e).replace(f'{cls.__name__}.', f'{section}.')
    raise ValueError(f'{section}: {message}') from None


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything a run needs that follows from its config alone."""

  model: model_config.ModelConfig
  mesh: jax.sharding.Mesh
  rules: tuple
  tokenizer: tokenizer_lib.Tokenizer
  task: registry.Task | None
  budgets: scheduler_lib.Budgets
  window: context_lib.Window
  credit: credit_lib.CreditConfig
  loss: losses.LossConfig
  sft_loss: losses.LossConfig
  optim: update.OptimConfig
  sft_optim: update.OptimConfig


def build_tokenizer(config: ml_collections.ConfigDict,
                    vocab_size: int) -> tokenizer_lib.Tokenizer:
  """The tokenizer named by `config.tokenizer`; checks it fits the vocab.

  The byte tokenizer carries the protocol's tags as single tokens.
  """
  if config.kind == 'byte':
    tok = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  elif config.kind == 'hf':
    if not config.path:
      raise ValueError('tokenizer.path must name a directory with '
                       'tokenizer.json when tokenizer.kind="hf"')
    tok = tokenizer_lib.HFTokenizer(config.path)
  else:
    raise ValueError(f'tokenizer.kind={config.kind!r}: expected "byte" or '
                     '"hf"')
  if tok.vocab_size > vocab_size:
    raise ValueError(f'model.vocab_size={vocab_size} is smaller than the '
                     f'tokenizer\'s vocabulary ({tok.vocab_size})')
  return tok


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Validates the whole config; nothing is allocated or compiled."""
  if config.mode not in MODES:
    raise ValueError(f'config.mode={config.mode!r}: expected one of {MODES}')
  model_cfg = model_config.from_dict(config.model.to_dict())
  mesh = sharding.make_mesh(config.mesh.to_dict())
  rules = sharding.normalize_rules(config.sharding_rules)
  params_lib.check_shardable(model_cfg, mesh, rules)
  tokenizer = build_tokenizer(config.tokenizer, model_cfg.vocab_size)
  task = None
  if config.mode != 'generate':
    try:
      task = registry.get(config.tasks.name)
    except KeyError as e:
      raise ValueError(f'tasks.name={config.tasks.name!r}: {e}') from None
    for field in ('train_level', 'sft_level'):
      if field == 'sft_level' and not config.tasks.sft_level:
        continue  # '': SFT on train_level
      if config.tasks[field] not in task.levels:
        raise ValueError(f'tasks.{field}={config.tasks[field]!r}: task '
                         f'{task.name!r} has levels {task.levels}')
    unknown = set(config.tasks.eval_levels) - set(task.levels)
    if unknown:
      raise ValueError(f'tasks.eval_levels: unknown levels {sorted(unknown)}')
  budgets = _typed(scheduler_lib.Budgets, 'rollout.budgets',
                   config.rollout.budgets)
  window = _typed(context_lib.Window, 'rollout.window', dict(
      max_tokens=config.sampler.max_len, **config.rollout.window))
  credit = _typed(credit_lib.CreditConfig, 'rl.credit', config.rl.credit)
  loss = _typed(losses.LossConfig, 'rl.loss', config.rl.loss)
  if config.sft.aggregation not in losses.AGGREGATIONS:
    raise ValueError(f'sft.aggregation={config.sft.aggregation!r}: expected '
                     f'one of {losses.AGGREGATIONS}')
  if loss.temperature != config.sampler.temperature:
    raise ValueError(
        f'rl.loss.temperature={loss.temperature} differs from '
        f'sampler.temperature={config.sampler.temperature}: the trainer\'s '
        'log-probs must be of the distribution the sampler drew from')
  # Demonstrations are not sampled: SFT trains the untempered policy.
  sft_loss = dataclasses.replace(loss, estimator='sft', temperature=1.0,
                                 aggregation=config.sft.aggregation)
  optim = _typed(update.OptimConfig, 'optim', config.optim)
  sft_optim = _typed(update.OptimConfig, 'sft.optim', config.sft.optim)

  # Cross-field checks.
  data_parallel = mesh.shape['data'] * mesh.shape['fsdp']
  for name, value in (('sft.steps', config.sft.steps),
                      ('rl.steps', config.rl.steps),
                      ('checkpoint.every_steps', config.checkpoint.every_steps)):
    if value < 0:
      raise ValueError(f'{name}={value}: must be >= 0')
  for name, value in (('rl.roots_per_step', config.rl.roots_per_step),
                      ('sft.roots_per_step', config.sft.roots_per_step),
                      ('rl.num_iterations', config.rl.num_iterations),
                      ('rl.rows_per_batch', config.rl.rows_per_batch)):
    if value <= 0:
      raise ValueError(f'{name}={value}: must be > 0')
  if config.rl.group_size < 2 and credit.baseline.startswith('leave_one_out'):
    raise ValueError(f'rl.group_size={config.rl.group_size}: the '
                     'leave-one-out baseline needs at least 2 trees a group')
  if config.rl.group_size < 1:
    raise ValueError(f'rl.group_size={config.rl.group_size}: must be >= 1')
  if config.rl.updates_per_pass < 0:
    raise ValueError(f'rl.updates_per_pass={config.rl.updates_per_pass}: '
                     'must be >= 0 (0: one update per minibatch)')
  if loss.kl_coef > 0:
    # The loss takes reference log-probs, but the trainer keeps no frozen
    # reference policy yet: refuse here rather than at the first update.
    raise ValueError(f'rl.loss.kl_coef={loss.kl_coef}: the trainer keeps no '
                     'reference policy yet; only 0 (the paper\'s setting) '
                     'runs')
  if config.sampler.num_slots < config.rl.group_size:
    raise ValueError(
        f'sampler.num_slots={config.sampler.num_slots} is fewer than one '
        f'group needs (rl.group_size={config.rl.group_size})')
  if config.sampler.num_slots % data_parallel:
    raise ValueError(f'sampler.num_slots={config.sampler.num_slots} does not '
                     f'divide over the data x fsdp mesh axes ({data_parallel})')
  if config.rl.rows_per_batch % data_parallel:
    raise ValueError(f'rl.rows_per_batch={config.rl.rows_per_batch} does not '
                     f'divide over the data x fsdp mesh axes ({data_parallel})')
  if max(config.rl.pack_lengths) < config.sampler.max_len:
    raise ValueError(
        f'rl.pack_lengths={list(config.rl.pack_lengths)}: the largest must '
        f'hold a whole node (sampler.max_len={config.sampler.max_len})')
  for length in config.rl.pack_lengths:
    if length % min(loss.logprob_chunk, length):
      raise ValueError(f'rl.pack_lengths: {length} is not a multiple of '
                       f'rl.loss.logprob_chunk={loss.logprob_chunk}')
  if config.rollout.eval_max_depth < 0:
    raise ValueError(f'rollout.eval_max_depth={config.rollout.eval_max_depth}'
                     ': must be >= 0')
  return Setup(model=model_cfg, mesh=mesh, rules=rules, tokenizer=tokenizer,
               task=task, budgets=budgets, window=window, credit=credit,
               loss=loss, sft_loss=sft_loss, optim=optim, sft_optim=sft_optim)


# ---------------------------------------------------------------------------
# Rollouts: demonstrations, sampled trees, evaluation.
# ---------------------------------------------------------------------------


# The last part of the packing shuffle's seed: no example index reaches it.
_PACKING_STREAM = 2**31 - 1


def _seed(*parts: int) -> int:
  """A 31-bit seed derived from integers (run seed, step, index, ...)."""
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] >> 1)


class Rollouts:
  """Runs call trees for one run: scripted demos, sampled trees, evals."""

  def __init__(self, s: Setup, config: ml_collections.ConfigDict,
               model: gemma.Transformer):
    self.s = s
    self.config = config
    stop_ids = [s.tokenizer.token_id(t) for t in protocol.STOP_TAGS]
    sampler_args = dict(num_slots=config.sampler.num_slots,
                        max_len=config.sampler.max_len, mesh=s.mesh,
                        rules=s.rules)
    method = sampling.Temperature(config.sampler.temperature)
    if config.sampler.top_k:
      method = sampling.TopK(config.sampler.top_k, config.sampler.temperature)
    self.sampler = slots_lib.SlotSampler(model, method=method, **sampler_args)
    self.greedy = slots_lib.SlotSampler(model, method=sampling.Greedy(),
                                        **sampler_args)
    self._engine = functools.partial(
        sampler_engine.SamplerEngine, stop_ids=stop_ids,
        decode_steps=config.sampler.decode_steps)

  def set_params(self, params: nnx.State) -> None:
    self.sampler.set_params(params)
    self.greedy.set_params(params)

  def _scheduler(self, engine, budgets=None, version=0):
    return scheduler_lib.FrontierScheduler(
        engine, self.s.tokenizer, budgets or self.s.budgets,
        policy_version=version, inline_chars=self.s.window.inline_chars,
        head_chars=self.s.window.head_chars)

  def demonstrations(self, examples, step: int, solver: str):
    """The reference solver's call trees for `examples`."""
    task = self.s.task
    policy = (task.recursive_solver if solver == 'recursive' else
              task.direct_solver)(self.s.window)
    engine = engine_lib.ScriptedEngine(
        policy, self.s.tokenizer, protocol.STOP_TAGS,
        num_slots=self.config.sampler.num_slots,
        max_len=self.config.sampler.max_len,
        decode_steps=self.config.sampler.decode_steps)
    envs = [task.make_env(ex) for ex in examples]
    seeds = [_seed(self.config.seed, step, i) for i in range(len(envs))]
    return self._scheduler(engine).run(envs, seeds)

  def sample_groups(self, examples, step: int, version: int):
    """`group_size` sampled trees per example; groups by example."""
    group_size = self.config.rl.group_size
    envs, seeds, groups = [], [], []
    for i, example in enumerate(examples):
      for g in range(group_size):
        envs.append(self.s.task.make_env(example))
        seeds.append(_seed(self.config.seed, step, i, g))
        groups.append(i)
    return self._scheduler(self._engine(self.sampler), version=version).run(
        envs, seeds, groups)

  def evaluate(self, examples, max_depth: int, seed: int):
    """Greedy trees for held-out examples with depth budget `max_depth`."""
    budgets = dataclasses.replace(self.s.budgets, max_depth=max_depth)
    envs = [self.s.task.make_env(ex) for ex in examples]
    seeds = [_seed(seed, i) for i in range(len(envs))]
    return self._scheduler(self._engine(self.greedy), budgets=budgets).run(
        envs, seeds)


# ---------------------------------------------------------------------------
# Logging: console progress, TensorBoard, metrics and trees as JSON lines.
# ---------------------------------------------------------------------------


class Logger:
  """Writes metrics to TensorBoard and `metrics.jsonl`, trees to `trees/`."""

  def __init__(self, workdir: str, resume_step: int):
    self.workdir = workdir
    self.metrics_path = os.path.join(workdir, 'metrics.jsonl')
    # A resumed run rewrites what the killed one logged past its checkpoint.
    if os.path.exists(self.metrics_path):
      with open(self.metrics_path) as f:
        kept = [line for line in f
                if line.strip() and json.loads(line)['step'] <= resume_step]
      with open(self.metrics_path, 'w') as f:
        f.writelines(kept)
    self.writer = tensorboardX.SummaryWriter(os.path.join(workdir, 'tb'))
    os.makedirs(os.path.join(workdir, 'trees'), exist_ok=True)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    record = {'step': step, **{k: _plain(v) for k, v in metrics.items()}}
    with open(self.metrics_path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in record.items():
      if isinstance(value, (int, float)) and name != 'step':
        self.writer.add_scalar(name, value, step)
    self.writer.flush()

  def trees(self, name: str, trees) -> None:
    tree_lib.save(trees, os.path.join(self.workdir, 'trees', name + '.jsonl'))

  def close(self) -> None:
    self.writer.close()


def _plain(value):
  if isinstance(value, (np.ndarray, jax.Array)):
    value = value.item() if value.size == 1 else value.tolist()
  if isinstance(value, np.generic):
    value = value.item()
  return value


# ---------------------------------------------------------------------------
# Steps.
# ---------------------------------------------------------------------------


def _update(graphdef, state, sequences, config, loss_cfg, s: Setup,
            learning_rate: float, step: int):
  """Packs sequences (rows shuffled by a seed of `step`, so a resumed run
  packs alike) and runs the update passes, every update at `learning_rate`;
  returns state, metrics.

  SFT makes one update per packed minibatch. RL splits each pass's
  minibatches into `rl.updates_per_pass` updates (0: one per minibatch),
  accumulating gradients within each: with one update a pass, every tree of
  a group is in the same update, so the leave-one-out advantages of
  identical nodes cancel instead of pushing them back and forth.

  With `rl.skip_zero_advantage`, RL leaves out the sequences whose weighted
  advantage is exactly 0 (sub-tasks every peer answered alike): their
  policy-gradient terms are 0, so they would only cost compute. Every
  divisor is scaled by (divisor of all sequences) / (divisor of the trained
  ones), so the objective stays the aggregate over the whole batch: with one
  update a pass, the update is the one without skipping, up to float error.
  """
  loss_tokens = np.array([np.sum(q.loss_mask) for q in sequences])
  keep = _trains(sequences, config, loss_cfg)
  trained = [q for q, k in zip(sequences, keep) if k]
  shares = {'trained_sequence_share': float(np.mean(keep)),
            'trained_token_share': float(np.sum(loss_tokens[keep]) /
                                         max(np.sum(loss_tokens), 1))}
  if not trained:  # every advantage 0: nothing moves the policy
    return state, dict(shares, loss=0.0, minibatches=0, updates=0,
                       learning_rate=learning_rate)
  # 1.0 exactly when nothing is skipped.
  scale = (losses.denominator_of_counts(loss_tokens, loss_cfg) /
           losses.denominator_of_counts(loss_tokens[keep], loss_cfg))
  batches, stats = packing.pack(
      trained, buckets=config.rl.pack_lengths,
      rows_per_batch=config.rl.rows_per_batch,
      rng=np.random.default_rng(_seed(config.seed, step, _PACKING_STREAM)))
  row_sharding = sharding.named_sharding(s.mesh, (sharding.BATCH, None),
                                         s.rules)
  sft = loss_cfg.estimator == 'sft'
  passes = 1 if sft else config.rl.num_iterations
  num_updates = len(batches)
  if not sft and config.rl.updates_per_pass:
    num_updates = min(config.rl.updates_per_pass, len(batches))
  updates = np.array_split(np.arange(len(batches)), num_updates)
  # Each update's loss divisor, the same in every pass (None: a lone
  # minibatch's own).
  denominators = [
      losses.loss_denominator([batches[i] for i in members], loss_cfg) *
      scale if len(members) > 1 or scale != 1.0 else None
      for members in updates]
  put = lambda batch: {k: jax.device_put(v, row_sharding)
                       for k, v in batch.items()}
  first_mismatch, update_metrics = None, []
  with sharding.use_mesh(s.mesh, s.rules):
    for _ in range(passes):
      for members, denominator in zip(updates, denominators):
        if len(members) == 1:
          state, metrics = update.train_step(
              graphdef, state, put(batches[members[0]]), loss_cfg,
              learning_rate, denominator=denominator)
          minibatch_metrics, applied = [metrics], {}
        else:
          grads = update.zero_grads(graphdef, state)
          minibatch_metrics = []
          for i in members:
            grads, metrics = update.accumulate_grads(
                graphdef, state, put(batches[i]), loss_cfg, denominator,
                grads)
            minibatch_metrics.append(metrics)
          state, applied = update.apply_grads(graphdef, state, grads,
                                              learning_rate)
        if first_mismatch is None:
          # The first minibatch sees the sampler's own policy: any ratio
          # away from 1 there is sampler/trainer mismatch, not staleness.
          first_mismatch = float(minibatch_metrics[0]['logprob_mismatch'])
        merged = {k: float(np.mean([m[k] for m in minibatch_metrics]))
                  for k in minibatch_metrics[0]}
        # Each minibatch's loss is its share of the update's.
        merged['loss'] = float(np.sum([m['loss'] for m in minibatch_metrics]))
        merged.update({k: float(v) for k, v in applied.items()})
        update_metrics.append(merged)
  metrics = {k: float(np.mean([m[k] for m in update_metrics]))
             for k in update_metrics[0]}
  metrics.update(shares, first_minibatch_logprob_mismatch=first_mismatch,
                 minibatches=len(batches) * passes,
                 updates=len(update_metrics),
                 padding_fraction=stats.padding_fraction,
                 pack_row_length=stats.row_length)
  return state, metrics


def _trains(sequences, config, loss_cfg) -> np.ndarray:
  """[len(sequences)] bool: the sequences the update trains on; see
  `_update`. Only RL skips, only under `rl.skip_zero_advantage`, and not
  with a KL term, which moves every token whatever its advantage."""
  if (loss_cfg.estimator == 'sft' or not config.rl.skip_zero_advantage or
      loss_cfg.kl_coef > 0):
    return np.ones(len(sequences), bool)
  return np.array([q.advantage * q.weight != 0.0 for q in sequences], bool)


def _evaluate_all(rollouts: Rollouts, s: Setup, config, data_dir: str,
                  logger, step: int, tag: str) -> dict[str, float]:
  """Root success per eval level: recursive at the train and eval depth
  budgets, and the single agent (depth budget 0)."""
  results = {}
  budgets = {'recursive': s.budgets.max_depth,
             'recursive_eval_depth': config.rollout.eval_max_depth,
             'single_agent': 0}
  if config.rollout.eval_max_depth == s.budgets.max_depth:
    del budgets['recursive_eval_depth']  # the same greedy trees again
  for level in config.tasks.eval_levels:
    examples = data_lib.eval_examples(
        s.task, level, data_dir, split=config.tasks.eval_split,
        num_examples=config.tasks.num_eval, kinds=config.tasks.task_kinds)
    for name, depth in budgets.items():
      trees, _ = rollouts.evaluate(examples, depth, seed=config.seed + 1)
      tree_metrics = metrics_lib.tree_metrics(trees)
      results[f'{tag}/{level}/{name}/root_success'] = tree_metrics[
          'root_success']
      results[f'{tag}/{level}/{name}/nodes_per_tree'] = tree_metrics[
          'nodes_per_tree']
      for key, value in tree_metrics.items():
        if key.startswith('success/depth'):
          results[f'{tag}/{level}/{name}/{key}'] = value
      if name == 'recursive':
        logger.trees(f'{tag}_{level}', trees[:8])
  logger.write(step, results)
  return results


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------


def _initial_model(config, s: Setup) -> gemma.Transformer:
  """From `init_from_hf`, else randomly initialised; sharded either way."""
  if config.init_from_hf:
    return model_lib.load_hf(config.init_from_hf, mesh=s.mesh, rules=s.rules,
                             dtype=s.model.dtype,
                             param_dtype=s.model.param_dtype)
  return params_lib.create_model(s.model, s.mesh, s.rules, seed=config.seed)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.mode` in `workdir`; returns the run's summary."""
  # ---- Config: everything is validated before anything compiles.
  s = setup(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  logging.info('mesh %s, model %.2fM parameters', dict(s.mesh.shape),
               s.model.num_params() / 1e6)
  if config.mode == 'generate':
    return _generate(config, s, workdir)
  data_dir = config.tasks.data_dir or os.path.join(workdir, 'data')

  # ---- Model and optimiser, created (or loaded) directly sharded.
  model = _initial_model(config, s)
  sft_steps = config.sft.steps if config.mode in ('train', 'sft') else 0
  rl_steps = config.rl.steps if config.mode in ('train', 'rl') else 0
  total_steps = sft_steps + rl_steps

  def make_state(phase_optim, model):
    with sharding.use_mesh(s.mesh, s.rules):
      optimizer = nnx.Optimizer(model, update.make_optimizer(phase_optim),
                                wrt=nnx.Param)
    return update.split_train_state(model, optimizer)

  phase_of = lambda step: 'sft' if step <= sft_steps else 'rl'
  schedules = {'sft': update.learning_rate_schedule(s.sft_optim),
               'rl': update.learning_rate_schedule(s.optim)}

  def learning_rate_at(step):
    """The schedule of the step's phase, at the step counted from the
    phase's start (0-based)."""
    phase = phase_of(step)
    return float(schedules[phase](
        step - 1 - (sft_steps if phase == 'rl' else 0)))
  graphdef, state = make_state(s.sft_optim if sft_steps else s.optim, model)

  # ---- Restore. With one optimiser kind the phases' states have the same
  # structure (only hyper-parameters, which live in the graphdef, differ);
  # with AdamW for SFT and SGD for RL each step restores into its phase's.
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                     max_to_keep=config.checkpoint.max_to_keep)
  start_step, record = 0, {}
  initial_target = checkpoint_lib.abstract_like(state)

  @functools.cache
  def rl_layout():
    """RL's graphdef and abstract state after an SFT phase, built only when
    a restore needs them (a second optimiser state is not free)."""
    rl_graphdef, rl_state = make_state(s.optim, model)
    return rl_graphdef, checkpoint_lib.abstract_like(rl_state)

  def target(step):
    if (sft_steps and phase_of(step) == 'rl' and
        s.sft_optim.optimizer != s.optim.optimizer):
      return rl_layout()[1]
    return initial_target

  restored = ckpt.restore_latest(target)
  if restored is not None:
    start_step, state, record = restored.step, restored.state, restored.record
    if sft_steps and phase_of(start_step) == 'rl':
      graphdef = rl_layout()[0]  # mid-RL: the RL optimiser's settings
    logging.info('resumed from step %d (newer ones skipped: %s)', start_step,
                 restored.skipped)
  logger = Logger(workdir, start_step)
  evals: dict[str, float] = dict(record.get('evals', {}))

  # ---- Input: one iterator per phase, positions restored.
  task = s.task
  iterators = {
      'sft': data_lib.train_iterator(
          task, config.tasks.sft_level or config.tasks.train_level,
          data_dir, seed=config.seed, kinds=config.tasks.task_kinds),
      'rl': data_lib.train_iterator(task, config.tasks.train_level, data_dir,
                                    seed=config.seed + 1,
                                    kinds=config.tasks.task_kinds),
  }
  for name, position in record.get('data', {}).items():
    iterators[name].set_state(position)

  rollouts = Rollouts(s, config, nnx.merge(graphdef, state)[0])
  summary: dict[str, Any] = {'mode': config.mode}

  def save(step, state):
    ckpt.save(step, state, {
        'step': step, 'evals': evals,
        'data': {k: it.get_state() for k, it in iterators.items()}})

  # ---- Loop.
  progress = tqdm.tqdm(range(start_step + 1, total_steps + 1),
                       initial=start_step, total=total_steps,
                       desc=config.mode, dynamic_ncols=True,
                       disable=not config.log.progress_bar)
  for step in progress:
    phase = phase_of(step)
    if phase == 'rl' and step == sft_steps + 1 and sft_steps:
      # SFT is over: RL starts with a fresh optimiser.
      graphdef, state = make_state(s.optim, nnx.merge(graphdef, state)[0])
    started = time.perf_counter()
    if phase == 'sft':
      examples = [next(iterators['sft'])
                  for _ in range(config.sft.roots_per_step)]
      trees, stats = rollouts.demonstrations(examples, step,
                                             config.sft.solver)
      sequences = [packing.TrainSequence(
          np.asarray(n.tokens), np.asarray(n.loss_mask),
          np.zeros(len(n.tokens), np.float32))
                   for t in trees for n in t.nodes]
      rollout_s = time.perf_counter() - started
      state, metrics = _update(graphdef, state, sequences, config, s.sft_loss,
                               s, learning_rate_at(step), step)
      metrics.update(metrics_lib.tree_metrics(trees))
    else:
      version = step - 1
      examples = [next(iterators['rl'])
                  for _ in range(config.rl.roots_per_step)]
      trees, stats = rollouts.sample_groups(examples, step, version)
      node_credit = credit_lib.assign_credit(trees, s.credit)
      rollout_s = time.perf_counter() - started
      state, metrics = _update(
          graphdef, state, packing.sequences_from_trees(trees, node_credit),
          config, s.loss, s, learning_rate_at(step), step)
      rollouts.set_params(nnx.state(nnx.merge(graphdef, state)[0]))
      metrics.update(metrics_lib.tree_metrics(trees, node_credit))
    metrics.update(phase=phase, rollout_s=rollout_s,
                   update_s=time.perf_counter() - started - rollout_s,
                   slot_utilization=stats.slot_utilization,
                   nonfinite_skipped=update.nonfinite_counts(
                       nnx.merge(graphdef, state)[1])[0])
    _check_finite(metrics, config, step)
    if step % config.log.every_steps == 0 or step == total_steps:
      logger.write(step, metrics)
      if config.log.trees_every_steps and (
          step % config.log.trees_every_steps == 0):
        logger.trees(f'{phase}_{step:06d}', trees[:8])
    progress.set_postfix(phase=phase, loss=f'{metrics["loss"]:.3f}',
                         success=f'{metrics["root_success"]:.2f}')
    # Evaluations at the end of each phase go into that step's checkpoint,
    # so a run killed after one resumes without repeating it.
    phase_ends = step == total_steps or step == sft_steps
    if phase_ends:
      rollouts.set_params(nnx.state(nnx.merge(graphdef, state)[0]))
      evals.update(_evaluate_all(rollouts, s, config, data_dir, logger, step,
                                 f'after_{phase}'))
    if config.checkpoint.every_steps and (
        step % config.checkpoint.every_steps == 0 or phase_ends):
      save(step, state)
  progress.close()

  if config.mode == 'eval':
    evals.update(_evaluate_all(rollouts, s, config, data_dir, logger,
                               start_step, 'eval'))
  ckpt.close()
  logger.close()
  summary['evals'] = evals
  summary['steps'] = total_steps
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  _print_summary(config, evals)
  return summary


def _check_finite(metrics, config, step):
  if metrics['nonfinite_skipped'] >= config.optim.max_consecutive_nonfinite:
    raise FloatingPointError(
        f'step {step}: {metrics["nonfinite_skipped"]} updates in a row had '
        'non-finite gradients and were skipped; stopping. The last good '
        'checkpoint is intact.')


def _print_summary(config, evals: dict[str, float]) -> None:
  print('\nroot success (held-out split '
        f'{config.tasks.eval_split!r}, {config.tasks.num_eval} tasks a level)')
  tags = sorted({k.split('/')[0] for k in evals})
  for tag in tags:
    for level in config.tasks.eval_levels:
      cells = [f'{name}={evals[key]:.3f}'
               for name in ('recursive', 'recursive_eval_depth',
                            'single_agent')
               if (key := f'{tag}/{level}/{name}/root_success') in evals]
      print(f'  {tag:10s} {level:8s} ' + '  '.join(cells))


# ---------------------------------------------------------------------------
# generate: a smoke run of the model.
# ---------------------------------------------------------------------------


def _generate(config, s: Setup, workdir: str) -> dict[str, Any]:
  gen = config.generate
  model = _initial_model(config, s)
  rows = s.mesh.shape['data'] * s.mesh.shape['fsdp']
  sampler = slots_lib.SlotSampler(model, num_slots=rows, max_len=gen.max_len,
                                  mesh=s.mesh, rules=s.rules)
  prompt = [s.tokenizer.bos_id] + s.tokenizer.encode(gen.prompt)
  if len(prompt) + gen.max_new_tokens > gen.max_len:
    raise ValueError(f'generate.max_len={gen.max_len} cannot hold the prompt '
                     f'({len(prompt)} tokens) and generate.max_new_tokens='
                     f'{gen.max_new_tokens}')
  start = time.perf_counter()
  sampler.admit([slots_lib.Request(prompt, jax.random.key(config.seed),
                                   gen.max_new_tokens, [s.tokenizer.eos_id])
                 for _ in range(rows)])
  turns = []
  while sampler.num_running:
    turns += sampler.decode(16)
  total_s = time.perf_counter() - start
  new_ids = [int(t) for t in sorted(turns, key=lambda t: t.slot)[0].tokens]
  summary = {
      'mode': 'generate', 'devices': len(s.mesh.devices.flat),
      'mesh': dict(s.mesh.shape), 'num_params': s.model.num_params(),
      'prompt': gen.prompt, 'new_token_ids': new_ids,
      'continuation': s.tokenizer.decode(new_ids), 'total_s': total_s,
      'compiles': sampler.num_compiles(),
  }
  with open(os.path.join(workdir, 'generate.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(f'{s.model.num_params() / 1e6:.2f}M-parameter model on '
        f'{summary["devices"]} device(s), mesh {summary["mesh"]}')
  print(f'greedy continuation of {gen.prompt!r} ({len(new_ids)} tokens in '
        f'{total_s:.1f} s including compilation): {summary["continuation"]!r}')
  return summary
