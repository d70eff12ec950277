r"""Claim 2: the recursive agent solves inputs far beyond one context window.

  python benchmarks/claims/beyond_window.py [--smoke] [--seeds=0,1,2] \
      [--workdir=runs/claims]

The two agents of `efficiency.py` (the same runs: one mixture SFT, then
RL at depth budget 8 or 0 per seed), before RL and after it, evaluated
greedily on held-out documents 1, 4 and 16 windows long (`window1`,
`window4`, `window16`: 5-8, 29-32 and 125-128 records, where one node
reads 8), each at its own depth budget: root success per length, nodes
and depth used. `--smoke`: the smoke runs, 2 tasks a length.

Prints the table, then one JSON line; draws `<workdir>/beyond_window.png`.
"""

from __future__ import annotations

import sys

import common

EXPERIMENT = 'beyond_window'
WINDOWS = (1, 4, 16)  # document length in windows
# Held-out tasks a length: long trees are slow to sample.
NUM_EVAL = {1: 32, 4: 32, 16: 16}


def levels(flags: common.Flags) -> dict[str, int]:
  """level -> held-out tasks (`--num_eval` caps them)."""
  if flags.smoke:
    return {f'window{n}': 2 for n in WINDOWS}
  return {f'window{n}': min(NUM_EVAL[n], flags.num_eval or NUM_EVAL[n])
          for n in WINDOWS}


def run(flags: common.Flags) -> dict[str, dict[int, list[dict]]]:
  """arm -> seed -> `common.level_ends` of its evaluations."""
  tags = list(levels(flags))
  return {arm: {seed: common.level_ends(
      common.mixture_arm(flags, arm, seed, levels(flags)), tags)
                for seed in flags.seeds} for arm in common.MIXTURE_ARMS}


def report(flags: common.Flags, results) -> dict:
  """Prints the table; returns the headline numbers."""
  rl_steps = common.sizes(flags).eval_steps[-1]
  tags = list(levels(flags))
  rows = []
  for arm, by_seed in results.items():
    for index, when in ((0, 'SFT'), (1, f'RL {rl_steps}')):
      for n, tag in zip(WINDOWS, tags):
        rows.append([arm, when, f'{n}x', *[
            str(common.level_metric(by_seed, index, tag, key))
            for key in ('root_success', 'nodes', 'depth')]])
  print('\nHeld-out root success by document length (windows), mean '
        '[range] over seeds\n')
  print(common.table(['agent', 'policy', 'length', 'root success', 'nodes',
                      'depth'], rows))
  return {'seeds': list(flags.seeds), 'sizes': common.size_record(flags),
          'success': common.level_success(results, tags),
          'recursive_vs_single': common.level_verdicts(results, tags)}


def plot(flags: common.Flags, results) -> str:
  return common.level_plot(
      flags, EXPERIMENT, 'Root success against document length',
      'document length (windows)', list(WINDOWS), results,
      list(levels(flags)))


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
