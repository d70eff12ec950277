"""The training loop: a supervised warm start, then RAO's GRPO over trees.

`run` trains the phases it is given (SFT on the task's demonstration trees,
RL on the model's own sampled trees, or both in that order) and evaluates
at each phase's end. One global step counts SFT steps then RL steps
(`training.phases`). Every `checkpoint.every_steps` and at each phase's end
the train state, the data iterators' positions and the evaluations so far
are checkpointed; a run started on its workdir resumes from the newest
checkpoint that restores and continues exactly as if it had not stopped
(all randomness derives from (seed, step)). A workdir that holds another
run is refused (`runtime.workdir`).

This module only wires: rollouts live in `training.rollouts`, the update
over node sequences in `rl.sequence_update`, logs in `runtime.run_log`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import time
from typing import Any

from absl import logging
import numpy as np

from rao_jax import config as config_lib
from rao_jax.rl import credit as credit_lib
from rao_jax.rl import metrics as metrics_lib
from rao_jax.rl import packing
from rao_jax.rl import sequence_update
from rao_jax.rl import update
from rao_jax.runtime import checkpoint as checkpoint_lib
from rao_jax.runtime import hf_export
from rao_jax.runtime import multihost
from rao_jax.runtime import run_log as run_log_lib
from rao_jax.runtime import workdir as workdir_lib
from rao_jax.tasks import registry
from rao_jax.training import data as data_lib
from rao_jax.training import phases as phases_lib
from rao_jax.training import rollouts as rollouts_lib
from rao_jax.training import setup as setup_lib
from rao_jax.training import train_state as train_state_lib

# The last part of the packing shuffle's seed: no example index reaches it.
_PACKING_STREAM = 2**31 - 1


# ---------------------------------------------------------------------------
# Input: one endless shuffled iterator per phase.
# ---------------------------------------------------------------------------


def train_iterators(tasks: config_lib.TasksConfig, task: registry.Task,
                    phases: Sequence[phases_lib.Phase], data_dir: str,
                    record: dict[str, Any]):
  """Phase name -> its root-task iterator, at the position `record` (a
  checkpoint's) saved, so a resumed run sees the tasks it would have. The
  datasets the run reads (its phases' and `tasks.eval_levels`) are built
  first, once."""
  data_lib.prepare_once(task, [p.level for p in phases] +
                        list(tasks.eval_levels), data_dir)
  iterators = {p.name: data_lib.train_iterator(
      task, p.level, data_dir, seed=p.data_seed,
      kinds=tasks.task_kinds) for p in phases}
  for name, position in record.get('data', {}).items():
    if name in iterators:
      iterators[name].set_state(position)
  return iterators


# ---------------------------------------------------------------------------
# One trainer step: roll out, assign credit, update.
# ---------------------------------------------------------------------------


def train_step(phase: phases_lib.Phase, step: int, examples,
               state: train_state_lib.TrainState,
               rollouts: rollouts_lib.Rollouts, *,
               credit: credit_lib.CreditConfig, seed: int, s: setup_lib.Setup,
               should_stop: Callable[[], bool] | None = None
               ) -> tuple[train_state_lib.TrainState, dict[str, Any], list]:
  """Rolls out the step's trees and updates on them; returns the state,
  the step's metrics and its trees. RL's credit follows `credit`; the
  packing shuffle derives from (`seed`, `step`); `should_stop`, asked
  between optimiser updates, may end the step early (a preemption)."""
  started = time.perf_counter()
  if phase.name == phases_lib.SFT:
    trees, stats = rollouts.demonstrations(examples, step)
    sequences, node_credit = packing.demonstration_sequences(trees), None
  else:
    trees, stats = rollouts.sample_groups(examples, step, version=step - 1)
    node_credit = credit_lib.assign_credit(trees, credit)
    sequences = packing.sequences_from_trees(trees, node_credit)
  rollout_s = time.perf_counter() - started
  arrays, metrics = sequence_update.update_on_sequences(
      state.graphdef, state.arrays, sequences, phase.update,
      phase.learning_rate(step), mesh=s.mesh, rules=s.rules,
      rng=np.random.default_rng(
          rollouts_lib.seed_of(seed, step, _PACKING_STREAM)),
      should_stop=should_stop)
  state = state.replace(arrays=arrays, step=step)
  if phase.name == phases_lib.RL:
    rollouts.set_params(state.params())
  metrics.update(metrics_lib.tree_metrics(trees, node_credit))
  metrics.update(phase=phase.name, rollout_s=rollout_s,
                 update_s=time.perf_counter() - started - rollout_s,
                 slot_utilization=stats.slot_utilization,
                 sandbox_s=stats.code_s,
                 nonfinite_skipped=update.nonfinite_counts(
                     state.optimizer)[0])
  if metrics['nonfinite_skipped'] >= phase.optim.max_consecutive_nonfinite:
    raise FloatingPointError(
        f'step {step}: {metrics["nonfinite_skipped"]} updates in a row had '
        'non-finite gradients and were skipped; stopping. The last good '
        'checkpoint is intact.')
  return state, metrics, trees


# ---------------------------------------------------------------------------
# The run: restore, then the loop over every phase's steps.
# ---------------------------------------------------------------------------


def _checkpoint(ckpt: checkpoint_lib.Checkpointer, log: run_log_lib.RunLog,
                phase: phases_lib.Phase, state: train_state_lib.TrainState,
                evals: dict[str, float], iterators) -> None:
  """Saves the state's step (asynchronously): the train state, its phase
  (whose layout it restores into), the evaluations so far and the data
  iterators' positions; the logs are flushed with it. A state with a NaN
  or an infinity in its parameters is refused (FloatingPointError) rather
  than saved over the last finite one."""
  checkpoint_lib.check_finite(state.params(),
                              f'step {state.step} (not saved)')
  ckpt.save(state.step, state.checkpointed(), {
      'step': state.step, 'phase': phase.name, 'evals': evals,
      'data': {k: it.get_state() for k, it in iterators.items()}})
  log.flush()


def run(config: config_lib.RunConfig, workdir: str, *,
        phase_names: Sequence[str], start_over: bool = False
        ) -> dict[str, Any]:
  """Trains `phase_names` (SFT and/or RL) in `workdir`; returns the run's
  summary, or where a preemption stopped it."""
  s = setup_lib.setup(config)  # everything checked before anything is built
  workdir = workdir_lib.prepare(workdir, config, start_over=start_over)
  phases = phases_lib.phases(config, phase_names)
  ckpt = checkpoint_lib.Checkpointer(workdir / 'checkpoints',
                                     max_to_keep=config.checkpoint.max_to_keep)
  state, record = setup_lib.restore_state(config, s, ckpt, phases)
  workdir_lib.record(workdir, config, restored=state.step > 0)
  log = run_log_lib.RunLog(workdir, state.step, s.tokenizer)
  evals: dict[str, float] = dict(record.get('evals', {}))
  data_dir = setup_lib.data_dir(config.tasks, workdir)
  iterators = train_iterators(config.tasks, s.task, phases, data_dir, record)
  rollouts = setup_lib.rollouts(config, s, state.model)
  total_steps = phases[-1].last_step if phases else 0
  progress = run_log_lib.progress_bar(config.mode, config.log.progress_bar,
                                      state.step, total_steps)
  preemption = multihost.Preemption(config.checkpoint.preemption_patience_s)
  preempted = False
  for step in progress:
    phase = phases_lib.phase_at(phases, step)
    if step == phase.first_step and phase is not phases[0]:
      # A new phase starts with a fresh optimiser.
      state = train_state_lib.fresh(state.model, phase.optim, s.mesh, s.rules,
                                    step=state.step)
    examples = [next(iterators[phase.name])
                for _ in range(phase.roots_per_step)]
    state, metrics, trees = train_step(
        phase, step, examples, state, rollouts, credit=config.rl.credit,
        seed=config.seed, s=s, should_stop=preemption.mid_step)
    log.step(config.log, phase.name, step, metrics, trees, total_steps)
    progress.set_postfix(run_log_lib.progress_fields(phase.name, metrics,
                                                     evals))
    # Evaluation at each phase's end, saved in that step's checkpoint, so a
    # run killed after it resumes without repeating it.
    if step == phase.last_step:
      rollouts.set_params(state.params())
      evals.update(rollouts_lib.evaluate_levels(
          rollouts, config.tasks, data_dir, log, step, f'after_{phase.name}'))
    every = config.checkpoint.every_steps  # 0: none but at a preemption
    preempted = preemption.reached(step)  # every process, every step
    if preempted or every and (step % every == 0 or step == phase.last_step):
      _checkpoint(ckpt, log, phase, state, evals, iterators)
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
  exported = None
  if phases and config.checkpoint.export_hf:
    exported = str(hf_export.export(state.model, s.tokenizer,
                                    config.tokenizer, workdir / 'hf',
                                    step=state.step))
  summary = log.summary(config.mode, config.tasks, evals, total_steps,
                        exported, draw=config.log.plots)
  log.close()
  return summary
