r"""Ablations of the RL objective on the efficiency experiment's RL.

  python benchmarks/claims/ablations.py [--smoke] [--sft_seeds=0,1,2] \
      [--seeds=0,1] [--workdir=runs/claims]

The recursive agent of `efficiency.py` (mixture SFT, then RL at depth
budget 8 with dense success, depth weights on and child bonus lambda 0.4:
the same runs) against three runs that each change one thing: sparse
success (the root's copied down to every node), depth weights off (every
node weighs 1), lambda 0, and a launch cost (lambda 0, 0.01 a node below,
`rl.credit.node_cost`). Held-out `mixed` documents after RL: credit and
exact match with paired 95% intervals over the same tasks (runs
averaged), the floors, the share of roots that delegate; each ablation's
exact match against the reference's, paired. `--smoke`: the smoke runs.

Prints the table, then one JSON line; draws `<workdir>/ablations.png`.
"""

from __future__ import annotations

import sys

import common
import efficiency
import evidence

EXPERIMENT = 'ablations'
# name -> RL overrides (the reference: efficiency's recursive agent).
ARMS = {
    'reference': {},
    'sparse_success': {'rl.credit.success': 'sparse'},
    'no_depth_weights': {'rl.credit.depth_weighting': False},
    'lambda_0': {'rl.credit.child_bonus': 0.0},
    'node_cost': {'rl.credit.child_bonus': 0.0,
                  'rl.credit.node_cost': 0.01},
}


def run(flags: common.Flags) -> dict[str, dict[int, list[dict]]]:
  """arm -> seed -> [SFT point, last RL point] (`efficiency.run_arm`)."""
  results = {}
  steps = common.sizes(flags).eval_steps
  for arm, overrides in ARMS.items():
    name = 'efficiency_recursive' if arm == 'reference' else (
        f'{EXPERIMENT}_{arm}')
    # Evaluated before and after RL only: the reference's evaluations are
    # efficiency's (read back), so `--rl_steps` at one of its evaluation
    # steps reuses them.
    results[arm] = {run: efficiency.run_arm(
        flags, 'recursive', run, name=name, overrides=overrides,
        eval_steps=(steps[0], steps[-1])) for run in common.runs(flags)}
  return results


def report(flags: common.Flags, results) -> dict:
  """Prints the table; returns the headline numbers."""
  config = common.typed(common.study_config(flags, common.MIXTURE))
  data_dir = str(common.study_sft(flags, common.MIXTURE) / 'data')
  first = next(iter(results['reference'].values()))[-1]['trees']['mixed']
  tasks = common.examples(config, 'mixed', data_dir, len(first))
  floor = evidence.floor_scores(config, 'mixed', data_dir, tasks)
  arms = {'SFT': evidence.greedy(results['reference'], 0, 'mixed'),
          **{arm: evidence.greedy(by_run, -1, 'mixed')
             for arm, by_run in results.items()}}
  peers = {arm: 'reference' for arm in results if arm != 'reference'}
  rows = evidence.rows(arms, floor, peers=peers)
  for row in rows[1:]:
    row.append(str(common.over_seeds(
        results[row[0]], -1,
        lambda p: p['stats']['all']['delegating_roots'])))
  rows[0].append('')
  print('\nRL objective ablations, held-out mixed after RL (greedy); '
        'verdicts against the reference, paired\n')
  print(common.table([*evidence.HEADER, 'delegating roots'], rows))
  return {'seeds': list(flags.seeds), 'sft_seeds': list(flags.sft_seeds),
          'sizes': common.size_record(flags),
          'arms': evidence.to_json(arms, floor, peers)}


def plot(flags: common.Flags, results) -> str:
  steps = [0, common.sizes(flags).eval_steps[-1]]
  curves = []
  for arm, by_run in results.items():
    bars = [evidence.stats.bootstrap(evidence.greedy(by_run, i, 'mixed').exact)
            for i in (0, -1)]
    curves.append(common.Curve(arm, steps, intervals=[
        (b.mean, b.low, b.high) for b in bars]))
  return common.plot_panels(
      common.output_path(flags, EXPERIMENT, 'png'),
      'RL objective ablations (recursive agent, mixed documents)', [
          ('RL step', 'held-out exact match', curves)])


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
