"""One trainer step's optimisation over its node sequences.

A step hands over every node of its trees as a `packing.TrainSequence`
(SFT: the demonstrations' nodes; RL: the sampled nodes with advantages and
depth weights). This module decides which sequences train, packs them into
minibatches, groups minibatches into optimiser updates and runs the passes:

  skip        under `skip_zero_advantage`, RL leaves out the sequences whose
              weighted advantage is exactly 0 (sub-tasks every peer answered
              alike): their policy-gradient terms are 0, so they would only
              cost compute. Every divisor is scaled by (divisor of all
              sequences) / (divisor of the trained ones), so the objective
              stays the aggregate over the whole batch: with one update a
              pass, the update is the one without skipping, up to float
              error.
  pack        first-fit decreasing into `[rows_per_batch, bucket]` arrays,
              rows shuffled by the caller's generator (seeded by the step,
              so a resumed run packs alike).
  accumulate  `updates_per_pass` updates a pass (0: one per minibatch), each
              minibatch's gradient divided by the divisor of all the
              minibatches of its update, so an accumulated update equals one
              over a minibatch holding them all. With one update a pass,
              every tree of a group is in the same update, and the
              leave-one-out advantages of identical nodes cancel instead of
              pushing them back and forth.
  passes      `passes` sweeps over the same minibatches (PPO's epochs); the
              first minibatch of the first pass sees the sampler's own
              policy, so its log-prob mismatch measures sampler/trainer
              disagreement, not staleness.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
from typing import Any

from flax import nnx
import jax
import numpy as np

from rao_jax.model import sharding
from rao_jax.rl import losses
from rao_jax.rl import packing
from rao_jax.rl import update


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpdateSettings:
  """How a phase turns a step's sequences into optimiser updates.

  Attributes:
    loss: the objective.
    pack_lengths: row lengths of the packed minibatches (buckets).
    rows_per_batch: rows of each minibatch.
    passes: sweeps over the step's minibatches.
    updates_per_pass: optimiser updates per sweep, gradients accumulated
      within each (0: one update per minibatch).
    skip_zero_advantage: leave sequences whose weighted advantage is exactly
      0 out (never with a KL term, which moves every token).
  """

  loss: losses.LossConfig
  pack_lengths: tuple[int, ...]
  rows_per_batch: int
  passes: int = 1
  updates_per_pass: int = 0
  skip_zero_advantage: bool = False


def trained_mask(sequences: Sequence[packing.TrainSequence],
                 settings: UpdateSettings) -> np.ndarray:
  """[len(sequences)] bool: the sequences the update trains on."""
  if not settings.skip_zero_advantage or settings.loss.kl_coef > 0:
    return np.ones(len(sequences), bool)
  return np.array([q.advantage * q.weight != 0.0 for q in sequences], bool)


def update_on_sequences(graphdef: nnx.GraphDef, state: nnx.State,
                        sequences: Sequence[packing.TrainSequence],
                        settings: UpdateSettings, learning_rate: float, *,
                        mesh: jax.sharding.Mesh, rules: Sequence[Any],
                        rng: np.random.Generator,
                        should_stop: Callable[[], bool] | None = None
                        ) -> tuple[nnx.State, dict[str, float]]:
  """Runs one trainer step's updates, every update at `learning_rate`.

  Args:
    graphdef, state: the train state (`update.split_train_state`).
    sequences: the step's node sequences.
    settings: the phase's update settings.
    learning_rate: the rate of this trainer step.
    mesh, rules: packed rows are split over the batch axes of this mesh.
    rng: shuffles the packed rows across minibatches.
    should_stop: asked before each optimiser update after the first (e.g.
      whether a preemption notice came): when it says True the step ends
      there, so a slow step answers within one update, not at its end.

  Returns:
    The new state and the step's metrics (means over its updates, plus the
    trained shares, packing statistics and the first minibatch's log-prob
    mismatch).
  """
  loss_tokens = np.array([np.sum(q.loss_mask) for q in sequences])
  keep = trained_mask(sequences, settings)
  shares = {'trained_sequence_share': float(np.mean(keep)),
            'trained_token_share': float(np.sum(loss_tokens[keep]) /
                                         max(np.sum(loss_tokens), 1))}
  trained = [q for q, k in zip(sequences, keep) if k]
  if not trained:  # every advantage 0: nothing moves the policy
    return state, dict(shares, loss=0.0, minibatches=0, updates=0,
                       learning_rate=learning_rate)
  # 1.0 exactly when nothing is skipped.
  scale = float(
      losses.denominator_of_counts(loss_tokens, settings.loss) /
      losses.denominator_of_counts(loss_tokens[keep], settings.loss))
  batches, stats = packing.pack(trained, buckets=settings.pack_lengths,
                                rows_per_batch=settings.rows_per_batch,
                                rng=rng)
  updates, denominators = _plan_updates(batches, settings, scale)
  # Rows are split over the data axes; a minibatch goes to the devices when
  # its turn comes, so only one is held there at a time.
  row_sharding = sharding.named_sharding(mesh, (sharding.BATCH, None), rules)
  put = lambda batch: {k: sharding.put(v, row_sharding)
                       for k, v in batch.items()}
  first_mismatch, update_metrics = None, []
  schedule = [u for _ in range(settings.passes)
              for u in zip(updates, denominators)]
  with sharding.use_mesh(mesh, rules):
    for members, denominator in schedule:
      if update_metrics and should_stop is not None and should_stop():
        break  # the updates made so far stand; the rest are not made
      state, metrics, minibatch_metrics = _one_update(
          graphdef, state, [batches[i] for i in members], put,
          settings.loss, learning_rate, denominator)
      if first_mismatch is None:  # before any update moved the policy
        first_mismatch = float(minibatch_metrics[0]['logprob_mismatch'])
      update_metrics.append(metrics)
  metrics = {k: float(np.mean([m[k] for m in update_metrics]))
             for k in update_metrics[0]}
  metrics.update(shares, first_minibatch_logprob_mismatch=first_mismatch,
                 minibatches=len(batches) * settings.passes,
                 updates=len(update_metrics),
                 # 1.0: should_stop ended the step before all its updates.
                 stopped_early=float(len(update_metrics) < len(schedule)),
                 padding_fraction=stats.padding_fraction,
                 pack_row_length=stats.row_length)
  return state, metrics


def _plan_updates(batches, settings: UpdateSettings, scale: float):
  """The minibatch indices of each update of a pass, and each update's loss
  divisor (the same in every pass; None: a lone minibatch's own)."""
  num_updates = len(batches)
  if settings.updates_per_pass:
    num_updates = min(settings.updates_per_pass, len(batches))
  updates = np.array_split(np.arange(len(batches)), num_updates)
  denominators = [
      losses.loss_denominator([batches[i] for i in members], settings.loss) *
      scale if len(members) > 1 or scale != 1.0 else None
      for members in updates]
  return updates, denominators


def _one_update(graphdef, state, minibatches, put, loss_config,
                learning_rate, denominator):
  """One optimiser update over its minibatches, each put on the devices by
  `put` only when its turn comes; returns the state, the update's merged
  metrics and each minibatch's metrics."""
  if len(minibatches) == 1:
    state, metrics = update.train_step(graphdef, state, put(minibatches[0]),
                                       loss_config, learning_rate,
                                       denominator=denominator)
    minibatch_metrics, applied = [metrics], {}
  else:
    grads = update.zero_grads(graphdef, state)
    minibatch_metrics = []
    for batch in minibatches:
      grads, metrics = update.accumulate_grads(graphdef, state, put(batch),
                                               loss_config, denominator, grads)
      minibatch_metrics.append(metrics)
    state, applied = update.apply_grads(graphdef, state, grads, learning_rate)
  merged = {k: float(np.mean([m[k] for m in minibatch_metrics]))
            for k in minibatch_metrics[0]}
  # Each minibatch's loss is its share of the update's.
  merged['loss'] = float(np.sum([m['loss'] for m in minibatch_metrics]))
  merged.update({k: float(v) for k, v in applied.items()})
  return state, merged, minibatch_metrics
