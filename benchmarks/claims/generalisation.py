r"""Claim 3: trained on some compositions, the recursive agent generalises
to harder ones.

  python benchmarks/claims/generalisation.py [--smoke] [--sft_seeds=0,1,2] \
      [--seeds=0,1] [--workdir=runs/claims]

Crafting (`configs/cpu_tiny.py:crafting`): SFT on medium recipes only, on
a mixture of direct and recursive demonstrations (a coin per tree), then
RL per (SFT seed, RL seed) for the recursive agent at the training depth
budget (6); the single agent has its own SFT (direct demonstrations,
depth budget 0 in every prompt, 25 steps a node as the paper's) and the
same RL at depth budget 0. Both are evaluated greedily before
and after RL on held-out easy, medium and hard recipes, the recursive
agent at the training budget and at the larger evaluation budget (12):
credit and exact match per level with paired 95% intervals, the floors
and the scripted solvers' ceilings (`evidence.py`). The recursive agent's
prompts leave the depth budget out, as the paper's do
(`rollout.window.show_depth_budget=False`, SFT, RL and evaluation alike):
a node learns it may not spawn deeper from the refusal alone, so the
evaluation budget, twice the training one, shows the policy nothing it
never saw before a refusal it did see. `--smoke`: 3 SFT steps, 1 RL step,
2 tasks a level.

Prints the table, then one JSON line; draws `<workdir>/generalisation.png`.
"""

from __future__ import annotations

import sys

import common
import evidence

EXPERIMENT = 'generalisation'
LEVELS = ('easy', 'medium', 'hard')
NUM_EVAL = 256  # held-out recipes a level
# The single agent in its own distribution: direct demonstrations with
# depth 0 in their prompts and the paper's 25 steps a node (6 steps fail
# every medium demonstration).
SINGLE = common.Study('crafting_single', 'crafting', {
    'sft.solver': 'direct', 'rollout.budgets.max_depth': 0,
    'rollout.budgets.max_steps': 25})


def depths(flags: common.Flags) -> dict[str, tuple[int, int]]:
  """arm -> (training, evaluation) depth budget."""
  config = common.typed(common.study_config(flags, common.CRAFTING))
  return {'recursive': (config.rollout.budgets.max_depth,
                        config.rollout.eval_max_depth),
          'single_agent': (0, 0)}


def run_arm(flags: common.Flags, arm: str, seed: int) -> list[dict]:
  """One arm's RL run and its evaluations (`common.rl_arm`)."""
  train_depth, eval_depth = depths(flags)[arm]
  num = num_eval(flags)
  study = common.CRAFTING if arm == 'recursive' else SINGLE
  return common.rl_arm(
      flags, study, f'{EXPERIMENT}_{arm}', seed, train_depth, {},
      {**{level: (level, num, eval_depth) for level in LEVELS},
       **{tag: (level, num, train_depth)
          for level, tag in zip(LEVELS, TRAINING_DEPTH_TAGS)}})


def num_eval(flags: common.Flags) -> int:
  """Held-out recipes a level."""
  return 2 if flags.smoke else flags.num_eval or NUM_EVAL


def at_training_depth(level: str) -> str:
  """The tag of `level` evaluated at the training depth budget."""
  return f'{level}_training_depth'


# Evaluation tags: the levels at the evaluation budget, then each level at
# the training budget (the single agent's are the same trees: depth 0).
TRAINING_DEPTH_TAGS = tuple(at_training_depth(level) for level in LEVELS)
TAGS = LEVELS + TRAINING_DEPTH_TAGS


def run(flags: common.Flags) -> dict[str, dict[int, list[dict]]]:
  """arm -> seed -> `common.level_ends` of its evaluations."""
  return {arm: {run: common.level_ends(run_arm(flags, arm, run), TAGS)
                for run in common.runs(flags)} for arm in depths(flags)}


def report(flags: common.Flags, results) -> dict:
  """Prints the table; returns the headline numbers."""
  rl_steps = common.sizes(flags).eval_steps[-1]
  arm_depths = depths(flags)
  rows = []
  for arm, by_seed in results.items():
    train_depth, eval_depth = arm_depths[arm]
    passes = [(train_depth, TRAINING_DEPTH_TAGS), (eval_depth, LEVELS)]
    for depth, tags in passes[train_depth == eval_depth:]:
      for index, when in ((0, 'SFT'), (1, f'RL {rl_steps}')):
        for level, tag in zip(LEVELS, tags):
          rows.append([arm, f'{train_depth} / {depth}', when, level, *[
              str(common.level_metric(by_seed, index, tag, key))
              for key in ('root_success', 'nodes', 'depth')]])
  print('\nCrafting, trained on medium: held-out root success, mean [range] '
        'over runs\n')
  print(common.table(['agent', 'depth train / evaluated', 'policy', 'level',
                      'root success', 'nodes', 'depth'], rows))
  config = common.typed(common.study_config(flags, common.CRAFTING))
  data_dir = str(common.study_sft(flags, common.CRAFTING) / 'data')
  print('\nThe same with exact match, floors and paired 95% intervals\n')
  evidence_numbers = evidence.level_tables(
      results, {tag: (tag.split('_')[0], depth)
                for tags, depth in ((LEVELS, arm_depths['recursive'][1]),
                                    (TRAINING_DEPTH_TAGS,
                                     arm_depths['recursive'][0]))
                for tag in tags}, config, data_dir,
      {'recursive, RL': 'single_agent, RL'},
      direct_config=common.typed(common.study_config(flags, SINGLE)))
  sizes = {**common.size_record(flags), 'num_eval': num_eval(flags)}
  return {'seeds': list(flags.seeds), 'sft_seeds': list(flags.sft_seeds),
          'sizes': sizes, 'evidence': evidence_numbers,
          'depths': {arm: list(d) for arm, d in arm_depths.items()},
          'success': common.level_success(results, TAGS),
          'recursive_vs_single': common.level_verdicts(results, TAGS)}


def plot(flags: common.Flags, results) -> str:
  return common.level_plot(
      flags, EXPERIMENT, 'Crafting trained on medium recipes (at the '
      'training depth budget)',
      'level (0 easy, 1 medium, 2 hard)', list(range(len(LEVELS))), results,
      TRAINING_DEPTH_TAGS)


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv,
                     documents=False)


if __name__ == '__main__':
  main(sys.argv[1:])
