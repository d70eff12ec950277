r"""Claim 2: the recursive agent solves inputs far beyond one context window.

  python benchmarks/claims/beyond_window.py [--smoke] [--sft_seeds=0,1,2] \
      [--seeds=0,1] [--samples=4] [--workdir=runs/claims]

The two agents of `efficiency.py` (the same runs: the recursive agent from
the mixture SFT at depth budget 8, the single agent from its own SFT at
depth budget 0), before RL and after it, evaluated on 256 held-out
documents a length, 1, 4 and 16 windows long (`window1`, `window4`,
`window16`: 5-8, 29-32 and 125-128 records, where one node reads 8;
tasks past the stored 64 are generated, `heldout.py`), greedily and at
temperature 1: credit and exact match with 95% paired intervals, the
floors (answer 0; best blind answer from kind and record count) and the
scripted solvers' ceilings, per length (`evidence.py`). The target is
the recursive agent >= 0.9 exact at 16 windows where the single agent
stays within 0.05 of its floor: a third agent, `beyond_recursive`, is SFT
on recursive demonstrations only until its 2-record leaves are exact
(`configs/cpu_tiny.py:beyond`, 600 steps), then the same RL. `--smoke`:
the smoke runs, 2 tasks at 1 and 4 windows (an untrained policy's
16-window trees would take most of the smoke's time).

Prints the tables, then one JSON line; draws `<workdir>/beyond_window.png`.
"""

from __future__ import annotations

import sys

import common
import evidence

EXPERIMENT = 'beyond_window'
WINDOWS = (1, 4, 16)  # document length in windows
SMOKE_WINDOWS = (1, 4)
# Held-out tasks a length: enough for a 95% interval of +-0.06.
NUM_EVAL = {1: 256, 4: 256, 16: 256}


def windows(flags: common.Flags) -> tuple[int, ...]:
  """The document lengths evaluated, in windows."""
  return SMOKE_WINDOWS if flags.smoke else WINDOWS


def levels(flags: common.Flags) -> dict[str, int]:
  """level -> held-out tasks (`--num_eval` caps them)."""
  if flags.smoke:
    return {f'window{n}': 2 for n in windows(flags)}
  return {f'window{n}': min(NUM_EVAL[n], flags.num_eval or NUM_EVAL[n])
          for n in windows(flags)}


# A third agent for the 16-window target: the recursive agent after SFT on
# recursive demonstrations only, to exact leaves (`common.BEYOND`).
BEYOND = 'beyond_recursive'


def beyond_arm(flags: common.Flags, run) -> list[dict]:
  steps = common.sizes(flags).eval_steps
  return common.rl_arm(
      flags, common.BEYOND, BEYOND, run, 8, {},
      {tag: (tag, num, 8) for tag, num in levels(flags).items()},
      eval_steps=(steps[0], steps[-1]))


def run(flags: common.Flags) -> dict[str, dict]:
  """arm -> run -> `common.level_ends` of its evaluations."""
  tags = list(levels(flags))
  results = {arm: {run: common.level_ends(
      common.mixture_arm(flags, arm, run, levels(flags)), tags)
                   for run in common.runs(flags)}
             for arm in common.MIXTURE_ARMS}
  results[BEYOND] = {run: common.level_ends(beyond_arm(flags, run), tags)
                     for run in common.runs(flags)}
  return results


PEERS = {'recursive, RL': 'single_agent, RL',
         f'{BEYOND}, RL': 'single_agent, RL'}


def report(flags: common.Flags, results) -> dict:
  """Prints the tables; returns the headline numbers."""
  config = common.typed(common.study_config(flags, common.MIXTURE))
  data_dir = str(common.study_sft(flags, common.MIXTURE) / 'data')
  tags = {tag: (tag, 8) for tag in levels(flags)}
  numbers = {}
  for name, read in (('greedy', evidence.greedy),
                     ('sampled', evidence.sampled)):
    print(f'\nHeld-out documents by length, {name}: paired 95% intervals '
          f'over tasks, {len(common.runs(flags))} runs averaged\n')
    numbers[name] = evidence.level_tables(results, tags, config, data_dir,
                                          PEERS, read)
  return {'seeds': list(flags.seeds), 'sft_seeds': list(flags.sft_seeds),
          'sizes': common.size_record(flags), **numbers}


def plot(flags: common.Flags, results) -> str:
  """Exact match per length, before and after RL: points, 95% bars."""
  curves = []
  for arm, by_run in results.items():
    for index, when in ((0, 'SFT'), (1, 'RL')):
      bars = [evidence.stats.bootstrap(
          evidence.greedy(by_run, index, tag).exact) for tag in levels(flags)]
      curves.append(common.Curve(
          f'{arm}, {when}', list(windows(flags)),
          intervals=[(b.mean, b.low, b.high) for b in bars]))
  return common.plot_panels(
      common.output_path(flags, EXPERIMENT, 'png'),
      'Exact match against document length', [
          ('document length (windows)', 'held-out exact match', curves)])


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
