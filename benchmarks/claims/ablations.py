r"""Ablations of the RL objective on the efficiency experiment's RL.

  python benchmarks/claims/ablations.py [--smoke] [--seeds=0,1,2] \
      [--workdir=runs/claims]

The recursive agent of `efficiency.py` (mixture SFT, then RL at depth
budget 8 with dense success, depth weights on and child bonus lambda 0.4:
the same runs) against three runs that each change one thing: sparse
success (the root's copied down to every node), depth weights off (every
node weighs 1), lambda 0. Held-out root success on `mixed` documents
before and after RL, the gain, the share of roots that delegate; each
ablation against the reference. `--smoke`: the smoke runs.

Prints the table, then one JSON line; draws `<workdir>/ablations.png`.
"""

from __future__ import annotations

import sys

import common
import efficiency

EXPERIMENT = 'ablations'
# name -> RL overrides (the reference: efficiency's recursive agent).
ARMS = {
    'reference': {},
    'sparse_success': {'rl.credit.success': 'sparse'},
    'no_depth_weights': {'rl.credit.depth_weighting': False},
    'lambda_0': {'rl.credit.child_bonus': 0.0},
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
    results[arm] = {seed: efficiency.run_arm(
        flags, 'recursive', seed, name=name, overrides=overrides,
        eval_steps=(steps[0], steps[-1])) for seed in flags.seeds}
  return results


def report(flags: common.Flags, results) -> dict:
  """Prints the table; returns the headline numbers."""
  reference = efficiency.gain(results['reference'])
  rows, numbers = [], {}
  for arm, by_seed in results.items():
    arm_gain = efficiency.gain(by_seed)
    verdict = ('' if arm == 'reference' else
               common.compare(reference, arm_gain))
    rows.append([arm, str(efficiency.metric(by_seed, 0, 'root_success')),
                 str(efficiency.metric(by_seed, 1, 'root_success')),
                 str(arm_gain),
                 str(efficiency.metric(by_seed, 1, 'delegating_roots')),
                 verdict])
    numbers[arm] = {'rl': efficiency.metric(by_seed, 1,
                                            'root_success').to_json(),
                    'gain': arm_gain.to_json(), 'vs_reference': verdict}
  print('\nRL objective ablations: held-out root success on mixed, mean '
        '[range] over seeds\n')
  print(common.table(['arm', 'SFT', f'RL {common.sizes(flags).eval_steps[-1]}',
                      'gain', 'delegating roots after RL',
                      'gain against the reference'], rows))
  return {'seeds': list(flags.seeds), 'sizes': common.size_record(flags),
          'arms': numbers}


def plot(flags: common.Flags, results) -> str:
  steps = [0, common.sizes(flags).eval_steps[-1]]
  return common.plot_panels(
      flags.workdir / f'{EXPERIMENT}{common.suffix(flags)}.png',
      'RL objective ablations (recursive agent, mixed documents)', [
          ('RL step', 'held-out root success', [
              common.Curve(arm, steps, [
                  [p['stats']['all']['root_success'] for p in points]
                  for points in by_seed.values()])
              for arm, by_seed in results.items()])])


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
