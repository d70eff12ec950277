r"""Claim 3: trained on some compositions, the recursive agent generalises
to harder ones.

  python benchmarks/claims/generalisation.py [--smoke] [--seeds=0,1,2] \
      [--workdir=runs/claims]

Crafting (`configs/cpu_tiny.py:crafting`): SFT on medium recipes only, on
a mixture of direct and recursive demonstrations (a coin per tree), then
RL per seed for the recursive agent at the training depth budget (6) and
for the single agent (depth budget 0). Both are evaluated greedily before
and after RL on held-out easy, medium and hard recipes, the recursive
agent at the larger evaluation budget (12): root success per level,
nodes and depth used. `--smoke`: 3 SFT steps, 2 RL steps, 2 tasks a
level.

Prints the table, then one JSON line; draws `<workdir>/generalisation.png`.
"""

from __future__ import annotations

import sys

import common

EXPERIMENT = 'generalisation'
LEVELS = ('easy', 'medium', 'hard')
NUM_EVAL = 32  # held-out recipes a level


def depths(flags: common.Flags) -> dict[str, tuple[int, int]]:
  """arm -> (training, evaluation) depth budget."""
  config = common.typed(common.study_config(flags, common.CRAFTING))
  return {'recursive': (config.rollout.budgets.max_depth,
                        config.rollout.eval_max_depth),
          'single_agent': (0, 0)}


def run_arm(flags: common.Flags, arm: str, seed: int) -> list[dict]:
  """One arm's RL run and its evaluations (`common.rl_arm`)."""
  train_depth, eval_depth = depths(flags)[arm]
  num = 2 if flags.smoke else flags.num_eval or NUM_EVAL
  return common.rl_arm(
      flags, common.CRAFTING, f'{EXPERIMENT}_{arm}', seed, train_depth, {},
      {level: (level, num, eval_depth) for level in LEVELS})


def run(flags: common.Flags) -> dict[str, dict[int, list[dict]]]:
  """arm -> seed -> `common.level_ends` of its evaluations."""
  return {arm: {seed: common.level_ends(run_arm(flags, arm, seed), LEVELS)
                for seed in flags.seeds} for arm in depths(flags)}


def report(flags: common.Flags, results) -> dict:
  """Prints the table; returns the headline numbers."""
  rl_steps = common.sizes(flags).eval_steps[-1]
  arm_depths = depths(flags)
  rows = []
  for arm, by_seed in results.items():
    train_depth, eval_depth = arm_depths[arm]
    for index, when in ((0, 'SFT'), (1, f'RL {rl_steps}')):
      for level in LEVELS:
        rows.append([arm, f'{train_depth} / {eval_depth}', when, level, *[
            str(common.level_metric(by_seed, index, level, key))
            for key in ('root_success', 'nodes', 'depth')]])
  print('\nCrafting, trained on medium: held-out root success, mean [range] '
        'over seeds\n')
  print(common.table(['agent', 'depth train / eval', 'policy', 'level',
                      'root success', 'nodes', 'depth'], rows))
  return {'seeds': list(flags.seeds), 'sizes': common.size_record(flags),
          'depths': {arm: list(d) for arm, d in arm_depths.items()},
          'success': common.level_success(results, LEVELS),
          'recursive_vs_single': common.level_verdicts(results, LEVELS)}


def plot(flags: common.Flags, results) -> str:
  return common.level_plot(
      flags, EXPERIMENT, 'Crafting trained on medium recipes',
      'level (0 easy, 1 medium, 2 hard)', list(range(len(LEVELS))), results,
      LEVELS)


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv)


if __name__ == '__main__':
  main(sys.argv[1:])
