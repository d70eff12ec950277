r"""Claim 4: recursive agents finish sooner because independent children run
in parallel.

  python benchmarks/claims/wall_clock.py [--smoke] [--seeds=0,1,2] \
      [--workdir=runs/claims]

The recursive agent after RL, one policy per seed (the runs of
`efficiency.py` on documents and `generalisation.py` on crafting: trained
here if they are not done), and the same held-out tasks for every seed
(8 documents of 29-32 records, 4 windows; 8 medium crafting recipes),
each decoded greedily as a tree of its own, twice: with a spawn's
children running in parallel (the scheduler's default) and one after
another (`sequential_children`: each child's whole subtree before its
next sibling); beside them the single agent after RL (the same
experiments' runs, depth budget 0) on the same tasks. Per tree: seconds,
decode steps until it finished (one token of every slot a step: the
latency a fixed-width engine pays), the share of spawns whose children
overlapped, and whether both recursive modes made the same tree. An
untimed pass over the same trees compiles first.
`--smoke`: the smoke runs, 2 tasks a family.

Prints the table, then one JSON line; draws `<workdir>/wall_clock.png`.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import common
import generalisation
from rao_jax.training import rollouts as rollouts_lib
from rao_jax.agent import scheduler as scheduler_lib

EXPERIMENT = 'wall_clock'
# family -> (held-out level, agent -> (its study, its RL runs))
FAMILIES = {
    'documents': ('window4', {
        'recursive': (common.MIXTURE, 'efficiency_recursive'),
        'single_agent': (common.SINGLE, 'efficiency_single_agent')}),
    'crafting': ('medium', {
        'recursive': (common.CRAFTING, 'generalisation_recursive'),
        'single_agent': (generalisation.SINGLE,
                         'generalisation_single_agent')})}
MODES = {'parallel': False, 'sequential': True}  # -> sequential_children
SINGLE = 'single agent'  # the single agent's row
ROWS = (*MODES, SINGLE)
KEYS = ('seconds', 'decode_steps', 'spawns', 'parallel_spawns', 'same')
NUM_TASKS = 8  # held-out tasks a family


def train(flags: common.Flags, family: str, agent: str, seed: int) -> None:
  """The agent's RL run of the family, as its experiment makes it (done
  already if that experiment ran)."""
  if family == 'documents':
    common.mixture_arm(flags, agent, seed)
  else:
    generalisation.run_arm(flags, agent, seed)


def policy(flags: common.Flags, family: str, agent: str,
           seed: int) -> rollouts_lib.Rollouts:
  """The agent's rollouts after RL (trained here if not done)."""
  study, runs = FAMILIES[family][1][agent]
  train(flags, family, agent, seed)
  config = common.typed(common.study_config(flags, study))
  _, rollouts = common.policy(
      config, flags.workdir / common.run_name(flags, runs, seed))
  return rollouts


def one_tree(rollouts: rollouts_lib.Rollouts, task, seed: int,
             sequential: bool) -> tuple[common.tree_lib.Tree,
                                        scheduler_lib.RolloutStats]:
  """A greedy tree of `task` alone in the engine, at the training budgets."""
  scheduler = rollouts.scheduler(0.0, sequential_children=sequential)
  trees, stats = scheduler.run([rollouts.task.make_env(task)], [seed])
  return trees[0], stats


def measure(flags: common.Flags, family: str) -> dict[int, dict[str, dict]]:
  """seed -> row (`ROWS`) -> per-tree lists (`seconds`, `decode_steps`,
  `spawns`, `parallel_spawns`; `same`, sequential only: the tree equals
  the parallel one) for the family's agents after RL, one policy an agent
  and seed, saved beside the runs as `wall_clock_<family>.json` and read
  back on a rerun."""
  saved = common.output_path(flags, f'{EXPERIMENT}_{family}', 'json')
  if saved.exists():
    results = {int(seed): rows for seed, rows in
               json.loads(saved.read_text()).items()}
    if all(set(rows) == set(ROWS) for rows in results.values()):
      return results  # else from before the single agent's row: again
  level, agents = FAMILIES[family]
  study, _ = agents['recursive']
  config = common.typed(common.study_config(flags, study))
  tasks = common.examples(config, level,
                          str(common.study_sft(flags, study) / 'data'),
                          2 if flags.smoke else NUM_TASKS)
  results = {}
  for seed in flags.seeds:
    results[seed] = {row: {key: [] for key in KEYS} for row in ROWS}
    recursive = policy(flags, family, 'recursive', seed)  # restored once
    runs = [(mode, recursive, sequential) for mode, sequential in
            MODES.items()]
    runs.append((SINGLE, policy(flags, family, 'single_agent', seed), False))
    # An untimed pass first: each new shape (prefill buckets, suspended
    # KV) compiles once, and not inside a timed tree.
    for i, task in enumerate(tasks):
      for _, rollouts, sequential in runs:
        one_tree(rollouts, task, rollouts_lib.seed_of(seed, i), sequential)
    for i, task in enumerate(tasks):
      tokens = {}
      for row_name, rollouts, sequential in runs:
        tree, stats = one_tree(rollouts, task,
                               rollouts_lib.seed_of(seed, i), sequential)
        row = results[seed][row_name]
        row['seconds'].append(stats.tree_wall_s[0])
        row['decode_steps'].append(stats.tree_decode_steps[0])
        row['spawns'].append(stats.spawns)
        row['parallel_spawns'].append(stats.parallel_spawns)
        tokens[row_name] = [n.tokens for n in tree.nodes]
      results[seed]['sequential']['same'].append(
          tokens['sequential'] == tokens['parallel'])
  saved.write_text(json.dumps(results))
  return results


def summary(by_seed: dict[int, dict[str, dict]], mode: str,
            key: str) -> common.Estimate:
  """Per seed, the mean over its trees of `key` (`parallel_share`: spawns
  that overlapped over all spawns; `same_trees`: trees alike in both
  modes, whatever `mode`), as an estimate over seeds."""
  values = []
  for rows in by_seed.values():
    row = rows[mode]
    if key == 'parallel_share':
      spawns = sum(row['spawns'])
      values.append(sum(row['parallel_spawns']) / spawns if spawns else 0.0)
    elif key == 'same_trees':
      values.append(float(np.mean(rows['sequential']['same'])))
    else:
      values.append(float(np.mean(row[key])))
  return common.estimate(values)


def run(flags: common.Flags) -> dict[str, dict[int, dict[str, dict]]]:
  return {family: measure(flags, family) for family in FAMILIES}


def report(flags: common.Flags, results) -> dict:
  """Prints the table; returns the headline numbers."""
  rows = []
  for family, by_seed in results.items():
    for mode in ROWS:
      rows.append([family, mode, *[str(summary(by_seed, mode, key)) for key in
                                   ('seconds', 'decode_steps', 'spawns',
                                    'parallel_share')]])
  print('\nOne greedy tree at a time, mean over trees, mean [range] over '
        'seeds\n')
  print(common.table(['family', 'agent (children)', 's per tree',
                      'decode steps per tree', 'spawns per tree',
                      'spawns in parallel'], rows))
  numbers = {'seeds': list(flags.seeds), 'sizes': common.size_record(flags),
             'tasks': 2 if flags.smoke else NUM_TASKS}
  for family, by_seed in results.items():
    speedup = {key: common.estimate([
        np.mean(rows['sequential'][key]) / max(np.mean(rows['parallel'][key]),
                                               1e-9)
        for rows in by_seed.values()]) for key in ('seconds', 'decode_steps')}
    same = summary(by_seed, 'parallel', 'same_trees')
    print(f'\n{family}: sequential over parallel, seconds {speedup["seconds"]}'
          f', decode steps {speedup["decode_steps"]}; same trees {same}')
    numbers[family] = {
        'seconds': {m: summary(by_seed, m, 'seconds').to_json()
                    for m in ROWS},
        'decode_steps': {m: summary(by_seed, m, 'decode_steps').to_json()
                         for m in ROWS},
        'speedup_seconds': speedup['seconds'].to_json(),
        'speedup_decode_steps': speedup['decode_steps'].to_json(),
        'parallel_share': summary(by_seed, 'parallel',
                                  'parallel_share').to_json(),
        'same_trees': same.to_json()}
  return numbers


def plot(flags: common.Flags, results) -> str:
  families = list(results)
  x = list(range(len(families)))

  def curve(mode, key):
    seeds = list(results[families[0]])
    return common.Curve(mode, x, [
        [float(np.mean(results[f][seed][mode][key])) for f in families]
        for seed in seeds])
  label = ', '.join(f'{i} {f}' for i, f in enumerate(families))
  return common.plot_panels(
      common.output_path(flags, EXPERIMENT, 'png'),
      'Parallel against sequential children and the single agent, one '
      'tree at a time', [
          (f'family ({label})', 'seconds per tree',
           [curve(mode, 'seconds') for mode in ROWS]),
          (f'family ({label})', 'decode steps per tree',
           [curve(mode, 'decode_steps') for mode in ROWS])])


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
