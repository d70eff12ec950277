"""Intervals over held-out tasks and runs: paired bootstrap, verdicts.

A claims table compares agents on the *same* held-out tasks, so their
scores are paired by task: a paired bootstrap resamples tasks (one index
draw shared by every arm) and reads the interval of each arm's mean and
of their difference from the same draws. Several runs (SFT seeds, RL
seeds, samples) of one arm are averaged per task first, so the interval
covers the tasks' variance and the runs' in one number: a task's score
is the mean over the runs that evaluated it.

An effect *holds* only where all three say so: the arm's lower bound is
above the floor's upper bound (it is not guessing), and the interval of
the paired difference excludes 0 (it is not noise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math

import numpy as np

RESAMPLES = 2000  # bootstrap draws: the 2.5% tail from ~50 draws
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over tasks with its bootstrap 95% interval."""

  mean: float
  low: float
  high: float
  n: int  # tasks

  def __str__(self) -> str:
    if math.isnan(self.mean):
      return 'n/a'
    return f'{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]'

  def to_json(self) -> dict[str, float | int]:
    return {'mean': round(self.mean, 4), 'low': round(self.low, 4),
            'high': round(self.high, 4), 'n': self.n}


NAN = Interval(math.nan, math.nan, math.nan, 0)


def per_task(runs: Sequence[Sequence[float]]) -> np.ndarray:
  """Scores [runs, tasks] -> the mean over runs per task [tasks]."""
  scores_RT = np.asarray(runs, np.float64)
  if scores_RT.ndim != 2:
    raise ValueError(f'per_task: expected [runs, tasks], got '
                     f'{scores_RT.shape}')
  return scores_RT.mean(axis=0)


def _draws(num_tasks: int, seed: int) -> np.ndarray:
  """[RESAMPLES, tasks] task indices, the same for every arm of a seed."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, num_tasks, size=(RESAMPLES, num_tasks))


def _interval(values_T: np.ndarray, draws_BT: np.ndarray) -> Interval:
  means_B = values_T[draws_BT].mean(axis=1)
  tail = (1 - LEVEL) / 2 * 100
  low, high = np.percentile(means_B, [tail, 100 - tail])
  return Interval(float(values_T.mean()), float(low), float(high),
                  len(values_T))


def bootstrap(values: Sequence[float], seed: int = 0) -> Interval:
  """The mean of per-task values and its percentile bootstrap interval."""
  values_T = np.asarray(values, np.float64)
  if not len(values_T):
    return NAN
  return _interval(values_T, _draws(len(values_T), seed))


def paired(arms: Mapping[str, Sequence[float]], seed: int = 0
           ) -> dict[str, Interval]:
  """Intervals of each arm's mean from one shared draw of tasks (arms
  score the same tasks, in the same order)."""
  sizes = {len(v) for v in arms.values()}
  if len(sizes) != 1:
    raise ValueError(f'paired: arms score different task counts {sizes}')
  (num_tasks,) = sizes
  if not num_tasks:
    return {name: NAN for name in arms}
  draws_BT = _draws(num_tasks, seed)
  return {name: _interval(np.asarray(v, np.float64), draws_BT)
          for name, v in arms.items()}


def difference(a: Sequence[float], b: Sequence[float], seed: int = 0
               ) -> Interval:
  """The interval of mean(b) - mean(a) over paired tasks."""
  a_T, b_T = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a_T.shape != b_T.shape:
    raise ValueError(f'difference: unpaired shapes {a_T.shape}, '
                     f'{b_T.shape}')
  return bootstrap(b_T - a_T, seed)


def verdict(arm: Sequence[float], floor: Sequence[float],
            peer: Sequence[float] | None = None, seed: int = 0) -> str:
  """'holds', or why not: 'at floor' (the arm's interval reaches the
  floor's: no better than a blind guess on these tasks), 'within
  interval' (the paired difference to `peer` includes 0) or 'reversed'
  (the peer is better, outside the interval). Without `peer` the claim
  is the arm above its floor."""
  if not len(arm):
    return 'n/a'
  above = difference(floor, arm, seed)
  if above.low <= 0:
    return 'at floor'
  if peer is None:
    return 'holds'
  gap = difference(peer, arm, seed)
  if gap.low > 0:
    return 'holds'
  return 'reversed' if gap.high < 0 else 'within interval'
