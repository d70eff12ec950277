r"""Claim 1: the recursive agent learns more per unit of training than a
single agent (claim 5, when to delegate, is `delegation.py`).

  python benchmarks/claims/efficiency.py [--smoke] [--sft_seeds=0,1,2] \
      [--seeds=0,1] [--samples=4] [--workdir=runs/claims]

The recursive agent: SFT (per SFT seed) on a mixture of direct and
recursive demonstrations over `mixed` documents (2-32 records; a node
reads 8 in its window), so whether to delegate is a coin flip that does
not depend on the length (`configs/cpu_tiny.py:mixture`), then RL at
depth budget 8 (the paper's root-level baseline, 4 root tasks x 8 trees
a step, AdamW 5e-5). The single agent in its own distribution: SFT on
direct demonstrations (read, `add`, answer: the same tools) with depth
budget 0 in every prompt, then the same RL at depth budget 0. 15 RL steps
per (SFT seed, RL seed); every 5, both are evaluated greedily on the same
256 held-out `mixed` tasks, and at the ends `--samples` times at
temperature 1 too. A third arm continues the single agent's run until it
has spent as many *total* tokens (every node's prompt, observations and
samples) as the recursive agent's, measured, not estimated.

Each table row gives credit and exact match with 95% paired bootstrap
intervals over the tasks (scores averaged over the runs), the floors on
the same tasks (answering 0; the best blind answer from question kind and
record count, fit on the training split) and the scripted solvers'
ceilings; 'holds' only above the floor and outside the interval
(`evidence.py`). `--smoke`: 3 SFT steps, 1 RL step, 2 tasks, 1 sample.

Prints the tables, then one JSON line; draws `<workdir>/efficiency.png`.
"""

from __future__ import annotations

import math
import sys

import common
import evidence

EXPERIMENT = 'efficiency'
ARMS = common.MIXTURE_ARMS
TAG = 'mixed'
# The single agent continued to the recursive agent's total tokens.
MATCHED = 'single_agent_matched'


def run_arm(flags: common.Flags, arm: str, seed, **kwargs) -> list[dict]:
  """One arm's evaluation points (`common.mixture_arm`), each with
  `stats`: `common.bucket_stats` of its held-out `mixed` trees."""
  points = common.mixture_arm(flags, arm, seed, **kwargs)
  for point in points:
    point['stats'] = common.bucket_stats(point['trees'][TAG])
  return points


def arm_dir(flags: common.Flags, arm: str, seed):
  return flags.workdir / common.run_name(flags, f'{EXPERIMENT}_{arm}', seed)


def total_tokens(flags: common.Flags, arm: str, seed, steps: int) -> float:
  study, _ = ARMS.get(arm, ARMS['single_agent'])
  config = common.typed(common.study_config(flags, study))
  per_step = config.rl.roots_per_step * config.rl.group_size
  return common.rl_cost(arm_dir(flags, arm, seed), steps,
                        per_step)['total_tokens']


def matched_steps(flags: common.Flags, seed) -> int:
  """RL steps of the single agent's copy that spend at least the
  recursive agent's total tokens: trained a guess at a time (its own
  rate so far) until the measured count reaches the target (`--smoke`:
  at most twice the experiment's steps)."""
  steps = common.sizes(flags).eval_steps[-1]
  target = total_tokens(flags, 'recursive', seed, steps)
  cap = 2 * steps if flags.smoke else 50 * steps
  while steps < cap:
    spent = total_tokens(flags, MATCHED, seed, 10**9)
    done = len([r for r in common.read_metrics(arm_dir(flags, MATCHED, seed))
                if r.get('phase') == 'rl'])
    if spent >= target:
      return done
    steps = min(cap, max(done + 1, math.ceil(done * target / max(spent, 1))))
    study, depth = ARMS['single_agent']
    common.rl_arm(flags, study, f'{EXPERIMENT}_{MATCHED}', seed, depth, {},
                  eval_steps=(steps,))
  return steps


def matched_arm(flags: common.Flags, seed) -> list[dict]:
  """The single agent's run continued, in a copy, to `matched_steps`: one
  evaluation point, there."""
  common.copy_run(arm_dir(flags, 'single_agent', seed),
                  arm_dir(flags, MATCHED, seed))
  return run_arm(flags, 'single_agent', seed, name=f'{EXPERIMENT}_{MATCHED}',
                 eval_steps=(matched_steps(flags, seed),))


def run(flags: common.Flags) -> dict[str, dict]:
  """arm -> run -> evaluation points (`run_arm`), for `ARMS` and, with
  one point, `MATCHED`."""
  runs = common.runs(flags)
  results = {arm: {r: run_arm(flags, arm, r) for r in runs} for arm in ARMS}
  results[MATCHED] = {r: matched_arm(flags, r) for r in runs}
  return results


def ends(results) -> dict[str, tuple[dict, int]]:
  """Row label -> (points by run, evaluation index) of the table."""
  return {'recursive, SFT': (results['recursive'], 0),
          'recursive, RL': (results['recursive'], -1),
          'single agent, SFT': (results['single_agent'], 0),
          'single agent, RL': (results['single_agent'], -1),
          'single agent, total tokens matched': (results[MATCHED], 0)}


PEERS = {'recursive, RL': 'single agent, total tokens matched',
         'recursive, SFT': 'single agent, SFT'}


def tables(flags: common.Flags, results, read) -> dict:
  """Prints the evidence table per length bucket for `read` (greedy or
  sampled scores); returns the JSON numbers of 'all'."""
  by_run = results['recursive']
  first = next(iter(by_run.values()))[0]['trees'][TAG]
  config = common.typed(common.study_config(flags, common.MIXTURE))
  data_dir = str(common.study_sft(flags, common.MIXTURE) / 'data')
  tasks = common.examples(config, TAG, data_dir, len(first))
  floor = evidence.floor_scores(config, TAG, data_dir, tasks)
  arms = {label: read(points, i, TAG)
          for label, (points, i) in ends(results).items()}
  arms = {k: v for k, v in arms.items() if v is not None}
  arms.update(evidence.ceilings(config, tasks, max_depth=8))
  numbers = evidence.to_json(arms, floor, PEERS)
  low = 0
  for edge in ('all', *common.RECORD_BUCKETS):
    mask = None if edge == 'all' else evidence.mask_by(
        first, common.records, low, edge)
    name = 'all' if edge == 'all' else f'records {low}-{edge}'
    low = low if edge == 'all' else edge + 1
    if mask is not None and not mask.any():
      continue  # no task of this length (a smoke run's few)
    print(f'\n{name}\n')
    print(common.table(evidence.HEADER, evidence.rows(arms, floor, mask,
                                                       PEERS)))
  return numbers


def report(flags: common.Flags, results) -> dict:
  """Prints the tables; returns the headline numbers."""
  print('\nHeld-out `mixed`, greedy: score per task averaged over '
        f'{len(common.runs(flags))} runs (SFT x RL seeds), paired 95% '
        'intervals over tasks')
  greedy = tables(flags, results, evidence.greedy)
  print(f'\nThe same, {flags.samples} samples a run at temperature 1')
  sampled = tables(flags, results, evidence.sampled)
  delegation_table(flags, results['recursive'])
  common.training_signal(flags, EXPERIMENT, {a: results[a] for a in ARMS})
  matched = [p[0] for p in results[MATCHED].values()]
  return {'seeds': list(flags.seeds), 'sft_seeds': list(flags.sft_seeds),
          'sizes': common.size_record(flags), 'greedy': greedy,
          'sampled': sampled,
          'matched': {'rl_steps': [p['rl_step'] for p in matched],
                      'total_tokens': [p['total_tokens'] for p in matched]}}


def delegation_table(flags: common.Flags, by_run) -> None:
  """How the recursive agent delegates, at each evaluation step."""
  steps = common.sizes(flags).eval_steps
  rows = []
  for key in ('delegating_roots', 'delegating_nodes', 'well_formed_spawns',
              'child_success', 'nodes'):
    for i, step in enumerate(steps):
      rows.append([key, step, *[str(common.over_seeds(
          by_run, i, lambda p, b=b: p['stats']['buckets'].get(b, {}).get(
              key, math.nan))) for b in buckets()]])
  print('\nHow the recursive agent delegates (greedy), mean [range] over '
        'runs\n')
  print(common.table(['statistic', 'RL step', *[f'records {b}' for b in
                                                buckets()]], rows))


def buckets() -> list[str]:
  edges = common.RECORD_BUCKETS
  return [f'<={edges[0]}'] + [f'{lo + 1}-{hi}'
                              for lo, hi in zip(edges, edges[1:])]


def plot(flags: common.Flags, results) -> str:
  """Exact match against RL step and total tokens: measured points with
  95% intervals (paired bootstrap over tasks, runs averaged)."""
  steps = list(common.sizes(flags).eval_steps)

  def curve(arm, x_key=None):
    by_run = results[arm]
    count = len(next(iter(by_run.values())))
    points = [evidence.greedy(by_run, i, TAG) for i in range(count)]
    x = steps[:count] if x_key is None else [
        sum(p[i][x_key] for p in by_run.values()) / len(by_run)
        for i in range(count)]
    bars = [evidence.stats.bootstrap(p.exact) for p in points]
    return common.Curve(arm, x, intervals=[(b.mean, b.low, b.high)
                                           for b in bars])
  return common.plot_panels(
      common.output_path(flags, EXPERIMENT, 'png'),
      'Recursive vs single agent (own SFT): held-out exact match', [
          ('RL step', 'exact match', [curve(a) for a in ARMS]),
          ('total tokens (mean over runs)', 'exact match',
           [curve(a, 'total_tokens') for a in (*ARMS, MATCHED)])])


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
