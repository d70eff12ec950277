"""The outer loop: supervised warm start, RAO's GRPO over call trees, eval.

Modes (`config.mode`):
  train     SFT on the task's demonstration trees, evaluate, RL, evaluate
            (the README's main command).
  sft, rl   one phase; `rl` starts from `init_from_hf` or from init.
  eval      success per task level, recursive and single-agent.
  generate  greedy continuation of a prompt (a smoke run of the model).
  plan      the memory plan on `config.plan`'s slice (`rao_jax.plan`).

One global step counts SFT steps then RL steps (`phases`). Every
`checkpoint.every_steps` and at each phase's end the train state, the data
iterators' positions and the evaluations so far are checkpointed; a run
started on its workdir resumes from the newest checkpoint that restores and
continues exactly as if it had not stopped (all randomness derives from
(seed, step)). A workdir that holds another run is refused (`workdir`).

This module only wires: rollouts live in `rollouts`, the update over node
sequences in `rl.sequence_update`, logs in `run_log`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import numpy as np

from rao_jax import checkpoint as checkpoint_lib
from rao_jax import config as config_lib
from rao_jax import data as data_lib
from rao_jax import export as export_lib
from rao_jax import generate as generate_lib
from rao_jax import multihost
from rao_jax import phases as phases_lib
from rao_jax import plan as plan_lib
from rao_jax import policy_tokenizer
from rao_jax import rollouts as rollouts_lib
from rao_jax import run_log as run_log_lib
from rao_jax import train_state as train_state_lib
from rao_jax import workdir as workdir_lib
from rao_jax.agent import chat as chat_lib
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.rl import credit as credit_lib
from rao_jax.rl import metrics as metrics_lib
from rao_jax.rl import packing
from rao_jax.rl import sequence_update
from rao_jax.rl import update
from rao_jax.tasks import registry

# The last part of the packing shuffle's seed: no example index reaches it.
_PACKING_STREAM = 2**31 - 1


# ---------------------------------------------------------------------------
# Config and mesh: everything checked before anything is built.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run needs beyond its config: the mesh and what it checks."""

  mesh: jax.sharding.Mesh
  rules: tuple
  tokenizer: tokenizer_lib.Tokenizer
  chat: chat_lib.ChatFormat  # over `tokenizer`, checked against the model
  task: registry.Task | None  # None in generate mode


def setup(config: config_lib.RunConfig) -> Setup:
  """The mesh over this host's devices, and the checks that need it."""
  mesh = sharding.make_mesh(config.mesh.sizes())
  params_lib.check_shardable(config.model, mesh, config.sharding_rules)
  tokenizer = policy_tokenizer.build(config.tokenizer, config.model.vocab_size)
  chat = policy_tokenizer.check_run(tokenizer, config)  # before any weight
  task = None if config.mode == 'generate' else config.tasks.resolve()
  data_parallel = mesh.shape['data'] * mesh.shape['fsdp']
  for field, value in (('sampler.num_slots', config.sampler.num_slots),
                       ('sft.rows_per_batch', config.sft.rows_per_batch),
                       ('rl.rows_per_batch', config.rl.rows_per_batch)):
    if value % data_parallel:
      raise ValueError(f'{field}={value} does not divide over the data x '
                       f'fsdp mesh axes ({data_parallel})')
  logging.info('mesh %s, model %.2fM parameters', dict(mesh.shape),
               config.model.num_params() / 1e6)
  return Setup(mesh, config.sharding_rules, tokenizer, chat, task)


# ---------------------------------------------------------------------------
# Input: one endless shuffled iterator per phase.
# ---------------------------------------------------------------------------


def train_iterators(config: config_lib.RunConfig, task: registry.Task,
                    phases, data_dir: str, record: dict[str, Any]):
  """Phase name -> its root-task iterator, at the position `record` (a
  checkpoint's) saved, so a resumed run sees the tasks it would have. The
  datasets the run reads are built first, once."""
  data_lib.prepare_once(task, [p.level for p in phases] +
                        list(config.tasks.eval_levels), data_dir)
  iterators = {p.name: data_lib.train_iterator(
      task, p.level, data_dir, seed=p.data_seed,
      kinds=config.tasks.task_kinds) for p in phases}
  for name, position in record.get('data', {}).items():
    if name in iterators:
      iterators[name].set_state(position)
  return iterators


# ---------------------------------------------------------------------------
# One trainer step: roll out, assign credit, update.
# ---------------------------------------------------------------------------


def train_step(phase: phases_lib.Phase, step: int, examples, graphdef, state,
               rollouts: rollouts_lib.Rollouts, config: config_lib.RunConfig,
               s: Setup):
  """Rolls out the step's trees and updates on them; returns the state,
  the step's metrics and its trees."""
  started = time.perf_counter()
  if phase.name == phases_lib.SFT:
    trees, stats = rollouts.demonstrations(examples, step)
    sequences, node_credit = packing.demonstration_sequences(trees), None
  else:
    trees, stats = rollouts.sample_groups(examples, step, version=step - 1)
    node_credit = credit_lib.assign_credit(trees, config.rl.credit)
    sequences = packing.sequences_from_trees(trees, node_credit)
  rollout_s = time.perf_counter() - started
  state, metrics = sequence_update.update_on_sequences(
      graphdef, state, sequences, phase.update, phase.learning_rate(step),
      mesh=s.mesh, rules=s.rules, rng=np.random.default_rng(
          rollouts_lib.seed_of(config.seed, step, _PACKING_STREAM)))
  if phase.name == phases_lib.RL:
    rollouts.set_params(nnx.state(nnx.merge(graphdef, state)[0]))
  metrics.update(metrics_lib.tree_metrics(trees, node_credit))
  metrics.update(phase=phase.name, rollout_s=rollout_s,
                 update_s=time.perf_counter() - started - rollout_s,
                 slot_utilization=stats.slot_utilization,
                 sandbox_s=stats.code_s,
                 nonfinite_skipped=update.nonfinite_counts(
                     nnx.merge(graphdef, state)[1])[0])
  if metrics['nonfinite_skipped'] >= phase.optim.max_consecutive_nonfinite:
    raise FloatingPointError(
        f'step {step}: {metrics["nonfinite_skipped"]} updates in a row had '
        'non-finite gradients and were skipped; stopping. The last good '
        'checkpoint is intact.')
  return state, metrics, trees


# ---------------------------------------------------------------------------
# The run: data, export and checkpoints, then the whole loop.
# ---------------------------------------------------------------------------


def _data_dir(config: config_lib.RunConfig, workdir) -> str:
  """`tasks.data_dir`, else `<workdir>/data`; for a remote workdir, a local
  directory per process (the files are generated from their seed, so every
  process builds the same ones, where the array_record reader can read
  them)."""
  if config.tasks.data_dir:
    return config.tasks.data_dir
  if '://' in str(workdir):
    return os.path.expanduser(
        f'~/.cache/rao_jax/data/process_{jax.process_index()}')
  return str(workdir / 'data')


def _export(config: config_lib.RunConfig, graphdef, state, s: Setup,
            workdir) -> str | None:
  """The policy as a Hugging Face directory `<workdir>/hf` (mode `export`,
  or the end of training under `checkpoint.export_hf`); its path."""
  if config.mode != 'export' and not config.checkpoint.export_hf:
    return None
  model = nnx.merge(graphdef, state)[0]
  return str(export_lib.export(model, s.tokenizer, config.tokenizer,
                               workdir / 'hf'))


def _checkpoint(ckpt: checkpoint_lib.Checkpointer, log: run_log_lib.RunLog,
                step: int, phase: phases_lib.Phase, state,
                evals: dict[str, float], iterators) -> None:
  """Saves the step (asynchronously): the train state, its phase (whose
  layout it restores into), the evaluations so far and the data
  iterators' positions; the logs are flushed with it."""
  ckpt.save(step, state, {
      'step': step, 'phase': phase.name, 'evals': evals,
      'data': {k: it.get_state() for k, it in iterators.items()}})
  log.flush()


def run(config: config_lib.RunConfig, workdir: str, *,
        start_over: bool = False) -> dict[str, Any]:
  """Runs `config.mode` in `workdir`; returns the run's summary."""
  if config.mode == 'plan':  # shapes only, on the target's devices
    return plan_lib.run(config)
  # ---- Config, mesh and workdir: all checked before anything is built.
  s = setup(config)
  workdir = workdir_lib.prepare(workdir, config, start_over=start_over)

  # ---- Model and optimiser.
  model = train_state_lib.initial_model(config, s.mesh, s.rules)
  if config.mode == 'generate':
    return generate_lib.generate(config, model, s.tokenizer, s.mesh, s.rules,
                                 workdir)
  phases = phases_lib.phases(config)
  graphdef, state = train_state_lib.fresh(
      model, phases[0].optim if phases else config.optim, s.mesh, s.rules)

  # ---- Restore.
  ckpt = checkpoint_lib.Checkpointer(workdir / 'checkpoints',
                                     max_to_keep=config.checkpoint.max_to_keep)
  start_step, graphdef, state, record = train_state_lib.restore(
      ckpt, config, phases, graphdef, state, s.mesh, s.rules)
  workdir_lib.record(workdir, config, restored=start_step > 0)
  if config.mode == 'export':
    return {'mode': 'export', 'step': start_step,
            'export': str(_export(config, graphdef, state, s, workdir))}
  log = run_log_lib.RunLog(workdir, start_step, s.tokenizer)
  evals: dict[str, float] = dict(record.get('evals', {}))

  # ---- Input: one iterator per phase, positions restored.
  data_dir = _data_dir(config, workdir)
  iterators = train_iterators(config, s.task, phases, data_dir, record)
  rollouts = rollouts_lib.Rollouts(config, s.task, s.chat,
                                   nnx.merge(graphdef, state)[0], s.mesh,
                                   s.rules)

  # ---- Loop.
  total_steps = phases[-1].last_step if phases else 0
  progress = run_log_lib.progress_bar(config, start_step, total_steps)
  preemption, preempted = multihost.Preemption(), False
  for step in progress:
    phase = phases_lib.phase_at(phases, step)
    if step == phase.first_step and phase is not phases[0]:
      # A new phase starts with a fresh optimiser.
      graphdef, state = train_state_lib.fresh(
          nnx.merge(graphdef, state)[0], phase.optim, s.mesh, s.rules)
    examples = [next(iterators[phase.name])
                for _ in range(phase.roots_per_step)]
    state, metrics, trees = train_step(phase, step, examples, graphdef, state,
                                       rollouts, config, s)
    log.step(config.log, phase.name, step, metrics, trees, total_steps)
    progress.set_postfix(run_log_lib.progress_fields(phase.name, metrics,
                                                     evals))
    # ---- Evaluation at each phase's end, saved in that step's checkpoint,
    # so a run killed after it resumes without repeating it.
    if step == phase.last_step:
      rollouts.set_params(nnx.state(nnx.merge(graphdef, state)[0]))
      evals.update(rollouts_lib.evaluate_levels(rollouts, data_dir, log, step,
                                                f'after_{phase.name}'))
    every = config.checkpoint.every_steps  # 0: none but at a preemption
    preempted = preemption.reached(step)  # every process, every step
    if preempted or every and (step % every == 0 or step == phase.last_step):
      _checkpoint(ckpt, log, step, phase, state, evals, iterators)
    if preempted:
      logging.warning('preempted: saved step %d; rerun the command to '
                      'resume', step)
      break
  progress.close()
  preemption.close()
  ckpt.close()  # waits for the last save
  if preempted:  # no summary: the run is not over
    log.close()
    return {'mode': config.mode, 'preempted_at_step': step}
  if config.mode == 'eval':
    evals.update(rollouts_lib.evaluate_levels(rollouts, data_dir, log,
                                              start_step, 'eval'))
  exported = _export(config, graphdef, state, s, workdir) if phases else None
  summary = log.summary(config, evals, total_steps, exported)
  log.close()
  return summary
