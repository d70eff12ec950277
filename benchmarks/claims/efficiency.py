r"""Claims 1 and 5: the recursive agent learns more per unit of training than
a single agent, and delegates better as training goes on.

  python benchmarks/claims/efficiency.py [--smoke] [--seeds=0,1,2] \
      [--workdir=runs/claims]

Both agents start from one SFT run on a mixture of direct and recursive
demonstrations over `mixed` documents (2-32 records; a node reads 8 in
its window), so whether to delegate is a coin flip that does not depend
on the length (`configs/cpu_tiny.py:mixture`). Then the same RL (the
paper's root-level baseline, 4 root tasks x 8 trees a step, AdamW 5e-5)
for the recursive agent (depth budget 8) and for the single agent (depth
budget 0: every spawn is refused), 15 steps a seed, each under the same
budgets (tokens a tree, steps a node). Every 5 RL steps both are
evaluated greedily on 96 held-out `mixed` tasks at their own depth
budget: root success overall and per length bucket (records <= 8, 9-16,
17-32), the share of roots and of nodes that delegate, well-formed
spawns (accepted over attempted), child success, children per
delegating node, depth used; against RL steps, RL seconds and sampled
tokens. `--smoke`: 3 SFT steps, 2 RL steps, 4 tasks.

Prints the tables, then one JSON line; draws `<workdir>/efficiency.png`.
"""

from __future__ import annotations

import math
import sys

import common

EXPERIMENT = 'efficiency'
ARMS = {'recursive': 8, 'single_agent': 0}  # name -> depth budget


def run(flags: common.Flags) -> dict[str, dict[int, list[dict]]]:
  """arm -> seed -> evaluation points (`common.mixture_rl`)."""
  return {arm: {seed: common.mixture_rl(
      flags, f'{EXPERIMENT}_{arm}_seed{seed}' + ('_smoke' if flags.smoke
                                                 else ''), seed, depth)
                for seed in flags.seeds}
          for arm, depth in ARMS.items()}


def metric(points_by_seed, index: int, key: str,
           bucket: str | None = None) -> common.Estimate:
  """A statistic of evaluation `index` over seeds (NaN-free seeds)."""
  values = []
  for points in points_by_seed.values():
    stats = (points[index]['all'] if bucket is None else
             points[index]['buckets'].get(bucket, {}))
    value = stats.get(key, math.nan)
    if not math.isnan(value):
      values.append(value)
  return common.estimate(values or [math.nan])


def report(flags: common.Flags, results) -> dict:
  """Prints the tables; returns the headline numbers."""
  steps = common.mixture_sizes(flags.smoke).eval_steps
  last = len(steps) - 1
  rows = []
  for arm, by_seed in results.items():
    for i, step in enumerate(steps):
      cost = [p[i] for p in by_seed.values()]
      rows.append([arm, step, str(metric(by_seed, i, 'root_success')),
                   *[str(metric(by_seed, i, 'root_success', b))
                     for b in _buckets()],
                   f'{sum(c["seconds"] for c in cost) / len(cost):.0f}',
                   f'{sum(c["sampled_tokens"] for c in cost) / len(cost):.0f}'])
  print('\nHeld-out root success (mixed, greedy), mean [range] over seeds\n')
  print(common.table(['agent', 'RL step', 'all', *[f'records {b}' for b in
                                                   _buckets()],
                      'RL s', 'sampled tokens'], rows))

  by_seed = results['recursive']
  rows = []
  for key in ('delegating_roots', 'delegating_nodes', 'well_formed_spawns',
              'child_success', 'children_per_delegating_node', 'depth',
              'nodes'):
    for i in (0, last):
      rows.append([key, steps[i], *[str(metric(by_seed, i, key, b))
                                    for b in _buckets()],
                   str(metric(by_seed, i, key))])
  print('\nHow the recursive agent delegates, before and after RL\n')
  print(common.table(['statistic', 'RL step', *[f'records {b}' for b in
                                                _buckets()], 'all'], rows))

  gains = {arm: common.estimate([
      p[last]['all']['root_success'] - p[0]['all']['root_success']
      for p in by_seed.values()]) for arm, by_seed in results.items()}
  verdict = common.compare(gains['single_agent'], gains['recursive'])
  per_token = {arm: common.estimate([
      1000 * (p[last]['all']['root_success'] - p[0]['all']['root_success']) /
      max(p[last]['sampled_tokens'], 1) for p in by_seed.values()])
               for arm, by_seed in results.items()}
  print('\nRL gain in held-out root success (last evaluation minus SFT)\n')
  print(common.table(
      ['agent', 'gain', 'gain per 1k sampled tokens'],
      [[arm, str(gains[arm]), str(per_token[arm])] for arm in results]))
  print(f'\nrecursive gain against the single agent\'s: {verdict}')
  return {
      'rl_steps': steps[last], 'seeds': list(flags.seeds),
      'success': {arm: {'sft': metric(s, 0, 'root_success').to_json(),
                        'rl': metric(s, last, 'root_success').to_json()}
                  for arm, s in results.items()},
      'gain': {arm: g.to_json() for arm, g in gains.items()},
      'recursive_gain_vs_single': verdict,
      'delegating_roots': {
          b: {'sft': metric(by_seed, 0, 'delegating_roots', b).mean,
              'rl': metric(by_seed, last, 'delegating_roots', b).mean}
          for b in _buckets()},
  }


def _buckets() -> list[str]:
  edges = common.RECORD_BUCKETS
  return [f'<={edges[0]}'] + [f'{lo + 1}-{hi}'
                              for lo, hi in zip(edges, edges[1:])]


def plot(flags: common.Flags, results) -> str:
  steps = list(common.mixture_sizes(flags.smoke).eval_steps)

  def success(by_seed, key='root_success', bucket=None):
    return [[(p['all'] if bucket is None else p['buckets'].get(bucket, {}))
             .get(key, math.nan) for p in points]
            for points in by_seed.values()]

  seconds = {arm: [sum(p[i]['seconds'] for p in s.values()) / len(s)
                   for i in range(len(steps))] for arm, s in results.items()}
  return common.plot_panels(
      flags.workdir / f'{EXPERIMENT}{"_smoke" if flags.smoke else ""}.png',
      'Recursive vs single agent: RL from one mixture SFT', [
          ('RL step', 'held-out root success',
           [common.Curve(arm, steps, success(s))
            for arm, s in results.items()]),
          ('RL seconds (mean over seeds)', 'held-out root success',
           [common.Curve(arm, seconds[arm], success(s))
            for arm, s in results.items()]),
          ('RL step', 'recursive: roots that delegate',
           [common.Curve(f'records {b}', steps,
                         success(results['recursive'], 'delegating_roots', b))
            for b in _buckets()]),
      ])


def main(argv=None) -> None:
  flags = common.parse_flags(__doc__, argv)
  results = run(flags)
  numbers = report(flags, results)
  numbers['plot'] = plot(flags, results)
  print(common.headline(EXPERIMENT, numbers))


if __name__ == '__main__':
  main(sys.argv[1:])
