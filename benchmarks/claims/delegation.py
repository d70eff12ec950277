r"""Claim 5: the recursive agent learns *when* to delegate.

  python benchmarks/claims/delegation.py [--smoke] [--sft_seeds=0,1,2] \
      [--seeds=0,1] [--samples=4] [--task=documents_scan] \
      [--arms=paper,cost] [--workdir=runs/claims]

A task and reward where the decision is learnable: `mixed` documents
(2-32 records). Inside the window (<= 8 records) a direct answer is exact
with the tools in three steps (read, `add`, answer) and one node; beyond
it the direct reader truncates and only delegation is exact.
`--task=documents_scan` adds a tool answering the task over one window,
so a direct answer is a scan and a copy, which the tiny model learns
exactly. Both arms start from the mixture SFT (a coin per tree: the
first action does not depend on the length) and differ in the reward:
  paper  Eq. 1, lambda 0.4 (a delegating root earns up to 0.4 more
         than an equally right direct one), partial credit, Eq. 3;
  cost   lambda 0, exact success, a launch cost of 0.01 a node below
         (`rl.credit.node_cost`): delegating pays only where it raises
         exact success by more than its tree costs (the optimal
         crossover, from the scripted solvers' trees, beside).
Reported: the greedy delegation rate per record count at every
evaluation step (sampled at the ends); the regret of the chosen first
action against forced ones on the same checkpoint, at the training
depth budget (the root's first step begins with the direct solver's
first tag, or with `<spawn>`) and at depth budget 0 (a prompt never
seen); RL's gain in exact match split into "delegation switched on" (the
SFT policy's per-bucket exact match when it delegated or not, at RL's
rate) and "better nodes" (the rest); the probability of `<spawn>` as the
root's first token, SFT against RL (exact per task). RL on as many roots
inside the window as beyond: `--rl_override=tasks.train_level=crossover`
(2-16 records). `--smoke`: 3 SFT steps, 1 RL step, 2 tasks.

Prints the tables and a JSON line; draws `<workdir>/delegation.png`.
"""

from __future__ import annotations

from collections.abc import Callable
import sys

import numpy as np

import common
import evidence
import floors
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.training import policy_tokenizer

EXPERIMENT = 'delegation'
TAG = 'mixed'
NODE_COST = 0.01
# arm -> (run name, RL overrides): the paper's reward is efficiency's run.
ARMS = {'paper': ('efficiency_recursive', {}),
        'cost': (f'{EXPERIMENT}_cost', {
            'rl.credit.child_bonus': 0.0, 'rl.credit.exact_success': True,
            'rl.credit.node_cost': NODE_COST})}
BUDGET_0 = 'forced_depth0'
FORCED_DIRECT = 'forced_direct'
FORCED_SPAWN = 'forced_delegate'
BUCKETS = ((0, 8), (9, 16), (17, 32))  # records: inside, 1-2, 2-4 windows


def direct_opening(inline_chars: int) -> Callable[[env_lib.NodeSpec], str]:
  """The direct solver's first tag: an answer on inline data, else a
  tool."""
  def direct(spec: env_lib.NodeSpec) -> str:
    return protocol.ANSWER if len(spec.data) <= inline_chars else (
        protocol.TOOL)
  return direct


def run_arm(flags: common.Flags, arm: str, run) -> list[dict]:
  name, overrides = ARMS[arm]
  num = common.sizes(flags).num_eval
  depth = common.MIXTURE_ARMS['recursive'][1]
  window = common.study_config(flags, common.MIXTURE).rollout.window
  return common.rl_arm(
      flags, common.MIXTURE, name, run, depth, {TAG: (TAG, num, depth)},
      {BUDGET_0: (TAG, num, 0),
       FORCED_DIRECT: (TAG, num, depth, direct_opening(window.inline_chars)),
       FORCED_SPAWN: (TAG, num, depth, protocol.SPAWN)},
      overrides=overrides)


def run(flags: common.Flags) -> dict[str, dict]:
  return {arm: {r: run_arm(flags, arm, r) for r in common.runs(flags)}
          for arm in flags.arms}


def crossover(flags: common.Flags) -> dict[int, tuple[float, float, str]]:
  """`evidence.scripted_choice` under the cost arm's reward, on the
  held-out tasks."""
  config = common.typed(common.study_config(flags, common.MIXTURE))
  data_dir = str(common.study_sft(flags, common.MIXTURE) / 'data')
  tasks = common.examples(config, TAG, data_dir, common.sizes(flags).num_eval)
  return evidence.scripted_choice(config, tasks, NODE_COST)


def rate_table(flags: common.Flags, results) -> dict:
  """Prints the delegation rate per record count over training."""
  steps = common.sizes(flags).eval_steps
  best = crossover(flags)
  rates = {arm: [evidence.rate_by_records(by_run, i, TAG)
                 for i in range(len(steps))]
           for arm, by_run in results.items()}
  sampled = {arm: [evidence.rate_by_records(by_run, i, TAG, sampled=True)
                   for i in (0, -1)] for arm, by_run in results.items()}
  rows = []
  for n, (direct, delegate, choice) in best.items():
    rows.append([n, f'{direct:.2f} / {delegate:.2f}', choice, *[
        _cell(rates[arm][i].get(n)) for arm in results
        for i in range(len(steps))],
                 *[_cell(sampled[arm][i].get(n)) for arm in results
                   for i in (0, -1)]])
  header = ['records', 'scripted R direct / delegate', 'optimal', *[
      f'{arm} greedy RL {s}' for arm in results for s in steps], *[
          f'{arm} T=1 RL {s}' for arm in results
          for s in (steps[0], steps[-1])]]
  print('\nShare of roots that delegate, per record count (the window '
        'holds 8)\n')
  print(common.table(header, rows))
  return {arm: {str(steps[i]): r for i, r in enumerate(by_step)}
          for arm, by_step in rates.items()}


def _cell(value) -> str:
  return 'n/a' if value is None else f'{value:.2f}'


def _held_out(results):
  """The held-out tasks' greedy SFT trees, in task order: every arm and
  run evaluates the same tasks."""
  return next(iter(next(iter(results.values())).values()))[0]['trees'][TAG]


def regret_table(flags: common.Flags, results) -> dict:
  """Prints exact match as chosen against the forced first actions on the
  same checkpoints, per length bucket."""
  first = _held_out(results)
  rows, numbers = [], {}
  for arm, by_run in results.items():
    for index, when in ((0, 'SFT'), (-1, 'RL')):
      chosen = evidence.greedy(by_run, index, TAG)
      budget_0 = evidence.greedy(by_run, index, BUDGET_0)
      direct = evidence.greedy(by_run, index, FORCED_DIRECT)
      delegate = evidence.greedy(by_run, index, FORCED_SPAWN)
      for low, high in BUCKETS:
        mask = evidence.mask_by(first, common.records, low, high)
        if not mask.any():  # no task this long
          continue
        gaps = {name: evidence.stats.difference(forced.exact[mask],
                                                chosen.exact[mask])
                for name, forced in (('direct', direct),
                                     ('delegate', delegate))}
        rows.append([arm, when, f'{low}-{high}', int(mask.sum()), *[
            f'{e.exact[mask].mean():.3f}'
            for e in (chosen, direct, delegate, budget_0)],
                     str(gaps['direct']), str(gaps['delegate'])])
        numbers[f'{arm}/{when}/{low}-{high}'] = {
            name: gap.to_json() for name, gap in gaps.items()}
  print('\nRegret of the first action: exact match as chosen minus forced '
        'direct and minus forced delegating, paired 95% intervals\n')
  print(common.table(['reward', 'policy', 'records', 'tasks', 'as chosen',
                      'forced direct', 'forced delegate', 'depth budget 0',
                      'chosen - direct', 'chosen - delegate'], rows))
  return numbers


def decision_table(flags: common.Flags, results) -> dict:
  """Prints the policy's probability of `<spawn>` as the root's first
  token per length bucket, SFT against RL (read from the sampled trees:
  exact per task, where a sampled rate is a coin's mean)."""
  config = common.typed(common.study_config(flags, common.MIXTURE))
  spawn = policy_tokenizer.build(
      config.tokenizer, config.model.vocab_size).encode(protocol.SPAWN)
  if len(spawn) > 1:
    print(f'no first-token probability: <spawn> is {len(spawn)} tokens')
    return {}
  first = _held_out(results)
  rows, numbers = [], {}
  for arm, by_run in results.items():
    if not all(p[i]['samples'] for p in by_run.values() for i in (0, -1)):
      print(f'{arm}: no first-token probability (no sampled evaluation)')
      continue
    # Any sample of a task has the same first-token distribution.
    sft, rl = (np.mean([evidence.first_token_probability(
        p[i]['samples'][TAG][0], spawn[0]) for p in by_run.values()], 0)
               for i in (0, -1))
    for low, high in BUCKETS:
      mask = evidence.mask_by(first, common.records, low, high) & (
          np.isfinite(sft) & np.isfinite(rl))
      if mask.any():
        gap = evidence.stats.difference(sft[mask], rl[mask])
        rows.append([arm, f'{low}-{high}', int(mask.sum()),
                     f'{sft[mask].mean():.3f}', f'{rl[mask].mean():.3f}',
                     str(gap)])
        numbers[f'{arm}/{low}-{high}'] = gap.to_json()
  print('\nProbability of <spawn> as the root\'s first token, paired 95% '
        'intervals\n')
  print(common.table(['reward', 'records', 'tasks', 'SFT', 'RL',
                      'RL - SFT'], rows))
  return numbers


def gain_split(results) -> dict:
  """Prints RL's gain in exact match (sampled trees) split into the
  delegation rate's change and the nodes' change, per length bucket."""
  rows, numbers = [], {}
  for arm, by_run in results.items():
    for low, high in BUCKETS:
      total, switched = _split(by_run, low, high)
      if np.isnan(total):
        continue
      rows.append([arm, f'{low}-{high}', total, switched, total - switched])
      numbers[f'{arm}/{low}-{high}'] = {'gain': total, 'delegation': switched}
  print('\nRL gain in exact match (temperature 1), split: delegation '
        'switched on (SFT nodes at RL\'s delegation rate) and better '
        'nodes (the rest)\n')
  print(common.table(['reward', 'records', 'gain', 'delegation switched on',
                      'better nodes'], rows))
  return numbers


def _split(by_run, low: int, high: int) -> tuple[float, float]:
  """(RL - SFT exact, the part from the delegation rate alone)."""
  def pooled(index):
    trees = [t for p in by_run.values()
             for ts in p[index]['samples'].get(TAG, []) for t in ts
             if low <= common.records(t) <= high]
    return (evidence.delegates(trees).astype(bool),
            np.array(floors.root_exact(trees)))
  return evidence.gain_split(*pooled(0), *pooled(-1))


def report(flags: common.Flags, results) -> dict:
  return {'seeds': list(flags.seeds), 'sft_seeds': list(flags.sft_seeds),
          'sizes': common.size_record(flags), 'node_cost': NODE_COST,
          'rates': rate_table(flags, results),
          'regret': regret_table(flags, results),
          'decision': decision_table(flags, results),
          'gain_split': gain_split(results)}


def plot(flags: common.Flags, results) -> str:
  """Delegation rate per record count at each evaluation step: each
  exact count one measured share with its 95% bootstrap interval."""
  steps = common.sizes(flags).eval_steps
  panels = []
  for arm, by_run in results.items():
    curves = []
    for i, step in enumerate(steps):
      rate = evidence.delegation_by_records(by_run, i, TAG)
      bars = [evidence.stats.bootstrap(v) for v in rate.values()]
      curves.append(common.Curve(f'RL step {step}', list(rate), intervals=[
          (b.mean, b.low, b.high) for b in bars]))
    panels.append(('records (window: 8)', f'{arm}: roots that delegate',
                   curves))
  return common.plot_panels(
      common.output_path(flags, EXPERIMENT, 'png'),
      'When to delegate: greedy delegation rate per record count', panels)


def main(argv=None) -> dict:
  return common.main(__doc__, EXPERIMENT, run, report, plot, argv,
                     arms=tuple(ARMS))


if __name__ == '__main__':
  main(sys.argv[1:])
