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
tokens. The arms take the same RL steps; a third, the single agent's
run continued for the steps that, at its rate over the first ones, sample
as many tokens as the recursive agent's, compares them at a larger
budget: the tokens and RL seconds it actually spent are reported beside.
`--smoke`: 3 SFT steps, 2 RL steps (the third arm at most 4), 4 tasks.

Prints the tables, then one JSON line; draws `<workdir>/efficiency.png`.
"""

from __future__ import annotations

import math
import sys

import common

EXPERIMENT = 'efficiency'
ARMS = common.MIXTURE_ARMS
TAG = 'mixed'
# The single agent continued to (an estimate of) the recursive agent's
# sampled-token budget.
MATCHED = 'single_agent_matched'


def run_arm(flags: common.Flags, arm: str, seed: int, **kwargs) -> list[dict]:
  """One arm's evaluation points (`common.mixture_arm`), each with
  `stats`: `common.bucket_stats` of its held-out `mixed` trees; `trees`
  keeps the other levels' trees."""
  points = common.mixture_arm(flags, arm, seed, **kwargs)
  for point in points:
    point['stats'] = common.bucket_stats(point['trees'].pop(TAG))
  return points


def arm_dir(flags: common.Flags, arm: str, seed: int):
  return flags.workdir / common.run_name(flags, f'{EXPERIMENT}_{arm}', seed)


def matched_steps(flags: common.Flags, seed: int) -> int:
  """`common.token_matched_steps` of the single agent against the
  recursive one (`--smoke`: at most twice the experiment's steps)."""
  steps = common.sizes(flags).eval_steps[-1]
  matched = common.token_matched_steps(arm_dir(flags, 'single_agent', seed),
                                       arm_dir(flags, 'recursive', seed),
                                       steps)
  return min(matched, 2 * steps) if flags.smoke else matched


def matched_arm(flags: common.Flags, seed: int) -> list[dict]:
  """The single agent's run continued, in a copy, to `matched_steps`: one
  evaluation point, there."""
  common.copy_run(arm_dir(flags, 'single_agent', seed),
                  arm_dir(flags, MATCHED, seed))
  return run_arm(flags, 'single_agent', seed, name=f'{EXPERIMENT}_{MATCHED}',
                 eval_steps=(matched_steps(flags, seed),))


def run(flags: common.Flags) -> dict[str, dict[int, list[dict]]]:
  """arm -> seed -> evaluation points (`run_arm`), for `ARMS` and, with
  one point, `MATCHED`."""
  results = {arm: {seed: run_arm(flags, arm, seed) for seed in flags.seeds}
             for arm in ARMS}
  results[MATCHED] = {seed: matched_arm(flags, seed) for seed in flags.seeds}
  return results


def metric(points_by_seed, index: int, key: str,
           bucket: str | None = None) -> common.Estimate:
  """A statistic of evaluation `index` over seeds (NaN-free seeds)."""
  def value(point):
    stats = (point['stats']['all'] if bucket is None else
             point['stats']['buckets'].get(bucket, {}))
    return stats.get(key, math.nan)
  return common.over_seeds(points_by_seed, index, value)


def gain(points_by_seed, key: str = 'root_success') -> common.Estimate:
  """The last evaluation minus the SFT policy's, over seeds."""
  return common.estimate([p[-1]['stats']['all'][key] -
                          p[0]['stats']['all'][key]
                          for p in points_by_seed.values()])


def report(flags: common.Flags, results) -> dict:
  """Prints the tables; returns the headline numbers."""
  matched = results[MATCHED]
  results = {arm: results[arm] for arm in ARMS}
  steps = common.sizes(flags).eval_steps
  last = len(steps) - 1
  rows = []
  for arm, by_seed in results.items():
    for i, step in enumerate(steps):
      cost = [p[i] for p in by_seed.values()]
      rows.append([arm, step, str(metric(by_seed, i, 'root_success')),
                   *[str(metric(by_seed, i, 'root_success', b))
                     for b in buckets()],
                   f'{sum(c["seconds"] for c in cost) / len(cost):.0f}',
                   f'{sum(c["sampled_tokens"] for c in cost) / len(cost):.0f}'])
  print('\nHeld-out root success (mixed, greedy), mean [range] over seeds\n')
  print(common.table(['agent', 'RL step', 'all', *[f'records {b}' for b in
                                                   buckets()],
                      'RL s', 'sampled tokens'], rows))

  by_seed = results['recursive']
  rows = []
  for key in ('delegating_roots', 'delegating_nodes', 'well_formed_spawns',
              'child_success', 'children_per_delegating_node', 'depth',
              'nodes'):
    for i in (0, last):
      rows.append([key, steps[i], *[str(metric(by_seed, i, key, b))
                                    for b in buckets()],
                   str(metric(by_seed, i, key))])
  print('\nHow the recursive agent delegates, before and after RL\n')
  print(common.table(['statistic', 'RL step', *[f'records {b}' for b in
                                                buckets()], 'all'], rows))

  common.training_signal(flags, EXPERIMENT, results)
  gains = {arm: gain(by_seed) for arm, by_seed in results.items()}
  verdict = common.compare(gains['single_agent'], gains['recursive'])
  per_token = {arm: common.estimate([
      100_000 * (p[last]['stats']['all']['root_success'] -
                 p[0]['stats']['all']['root_success']) /
      max(p[last]['sampled_tokens'], 1) for p in by_seed.values()])
               for arm, by_seed in results.items()}
  print('\nRL gain in held-out root success (last evaluation minus SFT)\n')
  print(common.table(
      ['agent', 'gain', 'gain per 100k sampled tokens'],
      [[arm, str(gains[arm]), str(per_token[arm])] for arm in results]))
  print(f'\nrecursive gain against the single agent\'s: {verdict}')
  budgets = equal_budgets(results, matched, last)
  return {
      'rl_steps': steps[last], 'seeds': list(flags.seeds),
      'sizes': common.size_record(flags),
      'success': {arm: {'sft': metric(s, 0, 'root_success').to_json(),
                        'rl': metric(s, last, 'root_success').to_json()}
                  for arm, s in results.items()},
      'gain': {arm: g.to_json() for arm, g in gains.items()},
      'recursive_gain_vs_single': verdict,
      'delegating_roots': {
          b: {'sft': metric(by_seed, 0, 'delegating_roots', b).mean,
              'rl': metric(by_seed, last, 'delegating_roots', b).mean}
          for b in buckets()},
      'equal_budgets': budgets,
  }


def equal_budgets(results, matched, last: int) -> dict:
  """Prints the recursive agent after RL against the single agent after as
  many steps and continued to the token estimate (`MATCHED`), overall and
  per length bucket; returns the verdicts (recursive against each)."""
  ends = {'recursive': (results['recursive'], last),
          'single agent, same steps': (results['single_agent'], last),
          'single agent, continued to the token estimate': (matched, 0)}
  rows = []
  for label, (by_seed, i) in ends.items():
    cost = [p[i] for p in by_seed.values()]
    rows.append([label, ', '.join(str(c['rl_step']) for c in cost),
                 *[str(metric(by_seed, i, 'root_success', b))
                   for b in (None, *buckets())],
                 f'{sum(c["sampled_tokens"] for c in cost) / len(cost):.0f}',
                 f'{sum(c["seconds"] for c in cost) / len(cost):.0f}'])
  print('\nEqual budgets: held-out root success after RL, mean [range] over '
        'seeds (RL steps per seed)\n')
  print(common.table(['agent', 'RL steps', 'all', *[f'records {b}' for b in
                                                    buckets()],
                      'sampled tokens', 'RL s'], rows))
  recursive = results['recursive']
  verdicts = {}
  for label, (by_seed, i) in list(ends.items())[1:]:
    verdicts[label] = {b or 'all': common.compare(
        metric(by_seed, i, 'root_success', b),
        metric(recursive, last, 'root_success', b))
                       for b in (None, *buckets())}
    print(f'recursive against {label}: {verdicts[label]}')
  return {'matched_rl_steps': [p[0]['rl_step'] for p in matched.values()],
          'matched_success': metric(matched, 0, 'root_success').to_json(),
          'recursive_vs': verdicts}


def buckets() -> list[str]:
  edges = common.RECORD_BUCKETS
  return [f'<={edges[0]}'] + [f'{lo + 1}-{hi}'
                              for lo, hi in zip(edges, edges[1:])]


def plot(flags: common.Flags, results) -> str:
  matched = results[MATCHED]
  results = {arm: results[arm] for arm in ARMS}
  steps = list(common.sizes(flags).eval_steps)

  def success(by_seed, key='root_success', bucket=None):
    return [[metric({0: points}, i, key, bucket).mean
             for i in range(len(points))] for points in by_seed.values()]

  def mean_cost(by_seed, key):
    points = list(by_seed.values())
    return [sum(p[i][key] for p in points) / len(points)
            for i in range(len(points[0]))]

  # The single agent's steps up to the recursive agent's tokens: its run's
  # points, then the matched one.
  single = {seed: [*results['single_agent'][seed], *matched[seed]]
            for seed in matched}
  budget_arms = {'recursive': results['recursive'],
                 'single_agent (continued)': single}
  return common.plot_panels(
      flags.workdir / f'{EXPERIMENT}{common.suffix(flags)}.png',
      'Recursive vs single agent: RL from one mixture SFT', [
          ('RL step', 'held-out root success',
           [common.Curve(arm, steps, success(s))
            for arm, s in results.items()]),
          ('sampled tokens (mean over seeds)', 'held-out root success',
           [common.Curve(arm, mean_cost(s, 'sampled_tokens'), success(s))
            for arm, s in budget_arms.items()]),
          ('RL seconds (mean over seeds)', 'held-out root success',
           [common.Curve(arm, mean_cost(s, 'seconds'), success(s))
            for arm, s in budget_arms.items()]),
          ('RL step', 'recursive: roots that delegate',
           [common.Curve(f'records {b}', steps,
                         success(results['recursive'], 'delegating_roots', b))
            for b in buckets()]),
      ])


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
