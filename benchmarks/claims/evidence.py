"""Claims tables that separate learning from guessing.

Every row is one agent (or a scripted solver, or a floor) on the same
held-out tasks: partial credit and exact match with their 95% paired
bootstrap intervals (`stats.py`; a task's score is its mean over the
runs, SFT x RL seeds, or over every sampled tree at temperature 1), the
floors on those tasks (`floors.py`) and a verdict: 'holds' only where
exact match is above the blind guess's exact match *and* credit above
the blind guess's credit, each outside the interval, and (where a peer
is named) exact match above the peer's outside the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any

import numpy as np

import common
import floors as floors_lib
import heldout
import stats
from rao_jax import config as config_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.tasks import demonstrations

Trees = list[tree_lib.Tree]


@dataclasses.dataclass(frozen=True)
class Scores:
  """Per task: credit and exact match, each the mean over runs/samples."""

  credit: np.ndarray  # [tasks]
  exact: np.ndarray  # [tasks]

  def subset(self, mask: np.ndarray) -> 'Scores':
    return Scores(self.credit[mask], self.exact[mask])


def scores(trees_by_run: Sequence[Trees]) -> Scores:
  """Scores of several evaluations of the same tasks (same order)."""
  return Scores(
      stats.per_task([floors_lib.root_scores(t) for t in trees_by_run]),
      stats.per_task([floors_lib.root_exact(t) for t in trees_by_run]))


def greedy(points_by_run: Mapping[Any, Sequence[dict]], index: int,
           tag: str) -> Scores:
  """The greedy evaluation `index` of every run, averaged per task."""
  return scores([p[index]['trees'][tag] for p in points_by_run.values()])


def sampled(points_by_run: Mapping[Any, Sequence[dict]], index: int,
            tag: str) -> Scores | None:
  """Every sampled tree (temperature 1) of evaluation `index`, over runs
  and samples, averaged per task; None where none was sampled."""
  trees = [t for p in points_by_run.values()
           for t in p[index].get('samples', {}).get(tag, [])]
  return scores(trees) if trees else None


def ceilings(config: config_lib.RunConfig,
             tasks: Sequence[Mapping[str, str]], max_depth: int,
             direct_config: config_lib.RunConfig | None = None
             ) -> dict[str, Scores]:
  """The scripted direct and recursive solvers on the tasks (the
  ceilings of what each agent imitates): the recursive one under
  `config`'s budgets at `max_depth`, the direct one under
  `direct_config`'s (the single agent's own, e.g. more steps a node;
  default `config`'s) at depth 0."""
  direct = direct_config or config
  runs = (('scripted direct', False, direct, 0),
          ('scripted recursive', True, config, max_depth))
  out = {}
  for name, recursive, solver_config, depth in runs:
    budgets = dataclasses.replace(solver_config.rollout.budgets,
                                  max_depth=depth)
    trees, _ = demonstrations.rollout(
        config.tasks.resolve(), tasks, recursive=recursive,
        window=solver_config.rollout.window, budgets=budgets,
        seeds=list(range(len(tasks))))
    out[name] = scores([trees])
  return out


def floor_scores(config: config_lib.RunConfig, level: str, data_dir: str,
                 tasks: Sequence[Mapping[str, str]]) -> dict[str, np.ndarray]:
  """`floors.floors` of the tasks, the guesser fit on the level's train
  split."""
  task = config.tasks.resolve()
  guess = floors_lib.blind_guess(task, level, data_dir,
                                 config.tasks.task_kinds)
  return {k: np.asarray(v) for k, v in floors_lib.floors(
      task, tasks, guess).items()}


HEADER = ('agent', 'tasks', 'credit [95%]', 'exact [95%]', 'zero floor',
          'blind floor', 'blind exact', 'verdict')


def verdict(arm: Scores, floor: Mapping[str, np.ndarray],
            peer: Scores | None = None) -> str:
  """'holds' or the first reason it does not (`stats.verdict`)."""
  exact = stats.verdict(arm.exact, floor['blind_exact'],
                        None if peer is None else peer.exact)
  credit = stats.verdict(arm.credit, floor['blind'])
  if exact == 'holds' and credit == 'holds':
    return 'holds'
  return exact if exact != 'holds' else f'credit {credit}'


def rows(arms: Mapping[str, Scores], floor: Mapping[str, np.ndarray],
         mask: np.ndarray | None = None,
         peers: Mapping[str, str] | None = None) -> list[list[Any]]:
  """Table rows (`HEADER`) for arms on the same tasks (`mask`: a subset
  of them); `peers`: arm -> the arm its verdict compares with."""
  if mask is not None:
    arms = {k: v.subset(mask) for k, v in arms.items()}
    floor = {k: v[mask] for k, v in floor.items()}
  credit = stats.paired({k: v.credit for k, v in arms.items()})
  exact = stats.paired({k: v.exact for k, v in arms.items()})
  peers = peers or {}
  out = []
  for name, arm in arms.items():
    peer = arms.get(peers.get(name, ''))
    out.append([name, len(arm.credit), str(credit[name]), str(exact[name]),
                _mean(floor['zero']), _mean(floor['blind']),
                _mean(floor['blind_exact']), verdict(arm, floor, peer)])
  return out


def _mean(values: np.ndarray) -> float:
  return float(np.mean(values)) if len(values) else float('nan')


def to_json(arms: Mapping[str, Scores], floor: Mapping[str, np.ndarray],
            peers: Mapping[str, str] | None = None) -> dict[str, Any]:
  """The JSON line's numbers of a table: intervals, floors, verdicts."""
  credit = stats.paired({k: v.credit for k, v in arms.items()})
  exact = stats.paired({k: v.exact for k, v in arms.items()})
  peers = peers or {}
  return {
      'floors': {k: round(_mean(v), 4) for k, v in floor.items()},
      'arms': {name: {'credit': credit[name].to_json(),
                      'exact': exact[name].to_json(),
                      'verdict': verdict(arm, floor,
                                         arms.get(peers.get(name, '')))}
               for name, arm in arms.items()}}


def scripted_choice(config: config_lib.RunConfig,
                    tasks: Sequence[Mapping[str, str]], node_cost: float
                    ) -> dict[int, tuple[float, float, str]]:
  """Record count -> (the scripted direct solver's mean R, the recursive
  one's, the better first action) on documents `tasks`, R being exact
  success less `node_cost` a node below the root."""
  reward = {}
  for name, recursive in (('direct', False), ('recursive', True)):
    trees, _ = demonstrations.rollout(
        config.tasks.resolve(), tasks, recursive=recursive,
        window=config.rollout.window, budgets=config.rollout.budgets,
        seeds=list(range(len(tasks))))
    reward[name] = (np.array(floors_lib.root_exact(trees)) - node_cost *
                    np.array([len(t.nodes) - 1 for t in trees]))
  lengths = np.array([len(t['data']) // 10 for t in tasks])
  out = {}
  for n in sorted(set(lengths)):
    direct, delegate = (float(reward[k][lengths == n].mean())
                        for k in ('direct', 'recursive'))
    out[int(n)] = (direct, delegate,
                   'delegate' if delegate > direct else 'direct')
  return out


def delegates(trees: Trees) -> np.ndarray:
  """Per tree, 1 where its root spawned."""
  return np.array([float(any(t.root.children)) for t in trees])


def delegation_by_records(points_by_run, index: int, tag: str,
                          sampled: bool = False) -> dict[int, np.ndarray]:
  """Record count -> per root of evaluation `tag` at point `index` (over
  runs, and samples), 1 where it delegated."""
  found: dict[int, list[float]] = {}
  for points in points_by_run.values():
    point = points[index]
    evaluations = (point['samples'].get(tag, []) if sampled
                   else [point['trees'][tag]])
    for trees in evaluations:
      for tree, d in zip(trees, delegates(trees)):
        found.setdefault(common.records(tree), []).append(d)
  return {n: np.array(v) for n, v in sorted(found.items())}


def rate_by_records(points_by_run, index: int, tag: str,
                    sampled: bool = False) -> dict[int, float]:
  """Record count -> share of roots that delegated."""
  return {n: float(v.mean()) for n, v in delegation_by_records(
      points_by_run, index, tag, sampled).items()}


def first_token_probability(trees: Trees, token: int) -> np.ndarray:
  """Per tree, the policy's probability of `token` as its root's first
  sampled token, from the log-prob the sampler recorded (trees sampled
  at temperature 1): p where the root chose it, else 1 - p of what it
  chose, exact where the first token is a choice between two (the
  first tag: `<spawn>` or the direct opening); nan for a root that
  sampled nothing."""
  out = []
  for tree in trees:
    root = tree.root
    if 1 not in root.loss_mask:
      out.append(float('nan'))
      continue
    first = root.loss_mask.index(1)
    p = float(np.exp(root.logprobs[first]))
    out.append(p if root.tokens[first] == token else 1.0 - p)
  return np.array(out)


def gain_split(delegated_0: np.ndarray, exact_0: np.ndarray,
               delegated_1: np.ndarray, exact_1: np.ndarray
               ) -> tuple[float, float]:
  """(exact match after - before, the part the change in the delegation
  rate alone explains), from per-tree booleans (delegated) and exact
  scores before (`_0`) and after (`_1`); nan where a side has no tree."""
  if not len(exact_0) or not len(exact_1):
    return float('nan'), float('nan')
  # The first policy's exact match when it delegated and when not (its
  # mean where one never occurred).
  on = exact_0[delegated_0].mean() if delegated_0.any() else exact_0.mean()
  off = (exact_0[~delegated_0].mean() if (~delegated_0).any()
         else exact_0.mean())
  switched = (delegated_1.mean() - delegated_0.mean()) * (on - off)
  return float(exact_1.mean() - exact_0.mean()), float(switched)


def mask_by(trees: Trees, key: Callable[[tree_lib.Tree], int],
            low: int, high: int) -> np.ndarray:
  """Which tasks' key lies in [low, high]."""
  return np.array([low <= key(t) <= high for t in trees])


LEVEL_HEADER = ('level', *HEADER)


def level_tables(results: Mapping[str, Mapping[Any, Sequence[dict]]],
                 tags: Mapping[str, tuple[str, int]],
                 config: config_lib.RunConfig, data_dir: str,
                 peers: Mapping[str, str] | None = None,
                 read: Callable[..., Scores | None] = greedy,
                 direct_config: config_lib.RunConfig | None = None
                 ) -> dict[str, Any]:
  """Prints one evidence table over levels: for each tag (tag -> (level,
  the scripted recursive solver's depth budget)), every arm before and
  after RL (`common.level_ends` points: 0 SFT, 1 RL), the scripted
  ceilings and the floors. Returns tag -> `to_json`."""
  numbers, table = {}, []
  for tag, (level, depth) in tags.items():
    by_arm = {f'{arm}, {when}': read(points, i, tag)
              for arm, points in results.items()
              for i, when in ((0, 'SFT'), (1, 'RL'))}
    by_arm = {k: v for k, v in by_arm.items() if v is not None}
    num = len(next(iter(by_arm.values())).credit)
    tasks = heldout.examples(config.tasks.resolve(), level, data_dir, num,
                             config.tasks.task_kinds)
    floor = floor_scores(config, level, data_dir, tasks)
    by_arm.update(ceilings(config, tasks, depth, direct_config))
    numbers[tag] = to_json(by_arm, floor, peers)
    table += [[tag, *row] for row in rows(by_arm, floor, peers=peers)]
  print(common.table(LEVEL_HEADER, table))
  return numbers

