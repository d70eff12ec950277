"""The training phases of a run: SFT, then RL, as two values of one record.

One global step counts SFT steps then RL steps: with 150 SFT steps, RL's
first step is step 151. Each phase brings its own optimiser (a fresh one at
its first step), objective, packing, learning-rate schedule (counted in the
phase's own trainer steps) and data stream.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools

import optax

from rao_jax import config as config_lib
from rao_jax.rl import sequence_update
from rao_jax.rl import update

SFT, RL = 'sft', 'rl'


@dataclasses.dataclass(frozen=True, kw_only=True)
class Phase:
  """One phase of training.

  Attributes:
    name: SFT ('sft') or RL ('rl').
    first_step: its first global step.
    steps: its trainer steps.
    optim: its optimiser.
    update: how a step's node sequences become optimiser updates.
    roots_per_step: root tasks drawn a step (RL rolls each out G times).
    level: the task level it trains on.
    data_seed: the seed of its data stream's shuffle.
  """

  name: str
  first_step: int
  steps: int
  optim: update.OptimConfig
  update: sequence_update.UpdateSettings
  roots_per_step: int
  level: str
  data_seed: int

  @property
  def last_step(self) -> int:
    return self.first_step + self.steps - 1

  # Built once per phase: optax schedules are plain functions of the step.
  @functools.cached_property
  def _schedule(self) -> optax.Schedule:
    return update.learning_rate_schedule(self.optim)

  def learning_rate(self, step: int) -> float:
    """The rate at global `step`: the schedule at the phase's own step."""
    return float(self._schedule(step - self.first_step))


def phases(config: config_lib.RunConfig,
           names: Sequence[str]) -> tuple[Phase, ...]:
  """The phases of `names` (SFT and/or RL) that have steps, in order."""
  unknown = set(names) - {SFT, RL}
  if unknown:
    raise ValueError(f'unknown phases {sorted(unknown)}: expected {SFT!r} '
                     f'and/or {RL!r}')
  result = []
  if SFT in names and config.sft.steps:
    result.append(Phase(
        name=SFT, first_step=1, steps=config.sft.steps,
        optim=config.sft.optim,
        # Demonstrations are certain: one pass, every node trains.
        update=sequence_update.UpdateSettings(
            loss=config.sft_loss, pack_lengths=config.sft.pack_lengths,
            rows_per_batch=config.sft.rows_per_batch),
        roots_per_step=config.sft.roots_per_step,
        level=config.tasks.sft_level or config.tasks.train_level,
        data_seed=config.seed))
  if RL in names and config.rl.steps:
    rl = config.rl
    result.append(Phase(
        name=RL, first_step=1 + sum(p.steps for p in result), steps=rl.steps,
        optim=config.optim,
        update=sequence_update.UpdateSettings(
            loss=rl.loss, pack_lengths=rl.pack_lengths,
            rows_per_batch=rl.rows_per_batch, passes=rl.num_iterations,
            updates_per_pass=rl.updates_per_pass,
            skip_zero_advantage=rl.skip_zero_advantage),
        roots_per_step=rl.roots_per_step, level=config.tasks.train_level,
        # Another stream than SFT's, so RL does not replay its tasks.
        data_seed=config.seed + 1))
  return tuple(result)


def phase_at(all_phases: tuple[Phase, ...], step: int) -> Phase:
  """The phase global `step` belongs to."""
  for phase in all_phases:
    if phase.first_step <= step <= phase.last_step:
      return phase
  raise ValueError(f'step {step} is in no phase of {all_phases}')
