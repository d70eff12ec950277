"""The claims experiments (benchmarks/claims/) run as their commands do.

Each experiment's `--smoke` runs its real pipeline for a few steps (SFT,
RL, evaluation, tables, the JSON line, the PNG) in a subprocess, all in
one workdir, so the runs experiments share (the mixture's SFT and the
efficiency arms) train once. About a minute or two each on a 2-core CPU:
marked slow. The statistics and the command line are checked
without training.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
CLAIMS = HERE.parent / 'benchmarks' / 'claims'
sys.path.insert(0, str(CLAIMS))

import common  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# In the order that reuses the most: wall_clock times the RL runs of
# efficiency and generalisation.
EXPERIMENTS = ('efficiency', 'delegation', 'beyond_window', 'ablations',
               'generalisation', 'wall_clock')
# Keys each experiment's JSON line holds besides `experiment` and `plot`.
HEADLINE_KEYS = {
    'efficiency': ('greedy', 'sampled', 'matched', 'sizes', 'seeds'),
    'delegation': ('rates', 'regret', 'decision', 'gain_split', 'node_cost',
                   'sizes', 'seeds'),
    'beyond_window': ('greedy', 'sampled', 'sizes', 'seeds'),
    'wall_clock': ('documents', 'crafting', 'sizes', 'seeds'),
    'ablations': ('arms', 'sizes', 'seeds'),
    'generalisation': ('success', 'recursive_vs_single', 'evidence',
                       'depths', 'sizes', 'seeds'),
}


def _command(name: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, str(CLAIMS / f'{name}.py'), *args],
      capture_output=True, text=True, timeout=900, check=False,
      cwd=HERE.parent)


def _check_smoke(name: str, workdir: pathlib.Path) -> None:
  result = _command(name, '--smoke', '--seeds=0', '--sft_seeds=0',
                    f'--workdir={workdir}')
  assert result.returncode == 0, f'{name}: {result.stderr[-3000:]}'
  lines = result.stdout.strip().splitlines()
  numbers = json.loads(lines[-1])  # the JSON line comes last
  assert numbers['experiment'] == name
  assert set(HEADLINE_KEYS[name]) <= set(numbers), (name, sorted(numbers))
  assert numbers['seeds'] == [0]
  header = [i for i, line in enumerate(lines) if line.startswith('| ')]
  assert header and lines[header[0] + 1].startswith('|---|'), name
  width = lines[header[0]].count('|')
  assert all(lines[i].count('|') == width for i in header[:3]), name
  plot = pathlib.Path(numbers['plot'])
  assert plot.parent == workdir and plot.suffix == '.png'
  assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_every_experiment_smokes_in_one_workdir(tmp_path):
  # One test, not one per experiment: the experiments reuse each other's
  # runs in their shared workdir, which test workers would not share.
  for name in EXPERIMENTS:
    _check_smoke(name, tmp_path)


def test_each_experiment_is_a_command():
  result = _command('efficiency', '--help')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '--seeds' in result.stdout and '--smoke' in result.stdout
  result = _command('efficiency', '--smoke', '--rl_steps=3')
  assert result.returncode != 0 and '--smoke has its own sizes' in (
      result.stderr)
  for name in EXPERIMENTS:
    assert (CLAIMS / f'{name}.py').exists()


def test_flags_name_what_is_wrong():
  flags = common.parse_flags('', ['--seeds=3,1', '--workdir=w'])
  assert flags.seeds == (3, 1) and flags.workdir == pathlib.Path(
      'w').resolve()
  assert flags.sft_seeds == (0, 1, 2) and flags.samples == 4
  assert common.runs(common.parse_flags('', ['--seeds=5', '--sft_seeds=0,1'])
                     ) == [common.Run(0, 5), common.Run(1, 5)]
  for bad in ('--seeds=a', '--seeds=1,1', '--sft_seeds=', '--samples=-1',
              '--task=crafting'):
    with pytest.raises(SystemExit):
      common.parse_flags('', [bad])
  for bad in ('--rl_override=rl.credit.bogus=1', '--rl_override=novalue',
              '--rl_override=rl.credit.baseline=bogus',
              '--rl_override=optim.learning_rate=fast'):
    with pytest.raises(SystemExit):
      common.parse_flags('', [bad])
  # An experiment of other tasks takes no documents family.
  with pytest.raises(SystemExit):
    common.parse_flags('', ['--task=documents_scan'], documents=False)


def test_arms_pick_from_the_experiments_own(capsys):
  arms = ('paper', 'cost')
  assert common.parse_flags('', [], arms=arms).arms == arms
  assert common.parse_flags('', ['--arms=cost'], arms=arms).arms == ('cost',)
  assert common.parse_flags('', []).arms == ()
  for bad in ('--arms=bogus', '--arms=', '--arms=cost,bogus'):
    with pytest.raises(SystemExit):
      common.parse_flags('', [bad], arms=arms)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'expected a comma-separated subset of paper,cost' in error
  # An experiment that names no arms takes no --arms.
  with pytest.raises(SystemExit):
    common.parse_flags('', ['--arms=cost'])


def test_the_first_tokens_probability_is_read_from_either_choice():
  import evidence  # pylint: disable=g-import-not-at-top
  from rao_jax.agent import env as env_lib  # pylint: disable=g-import-not-at-top
  from rao_jax.agent import tree as tree_lib  # pylint: disable=g-import-not-at-top

  def tree(first, p):  # a prompt of 2 tokens, then two sampled ones
    root = tree_lib.Node(tree_id=0, node_id=0, parent=None, depth=0, path=(),
                         spec=env_lib.NodeSpec(task='t'),
                         tokens=[1, 2, first, 3], loss_mask=[0, 0, 1, 1],
                         logprobs=[0.0, 0.0, math.log(p), -0.1])
    return tree_lib.Tree(tree_id=0, seed=0, group=0, nodes=[root])
  spawn, direct = 7, 5
  silent = tree(direct, 0.5)
  silent.root.loss_mask = [0, 0, 0, 0]  # a root that sampled nothing
  np.testing.assert_allclose(evidence.first_token_probability(
      [tree(spawn, 0.8), tree(direct, 0.8), tree(direct, 0.25), silent],
      spawn), [0.8, 0.2, 0.75, np.nan])


def test_gain_splits_into_the_rate_and_the_nodes():
  import evidence  # pylint: disable=g-import-not-at-top
  half = np.array([True, True, False, False])
  right_when_delegating = np.array([1., 1., 0., 0.])
  # Every root delegates after, each as right as before: all of the gain
  # is the rate's.
  assert evidence.gain_split(half, right_when_delegating,
                             np.ones(4, bool), np.ones(4)) == (0.5, 0.5)
  # The same rate, better nodes: none of it is.
  assert evidence.gain_split(half, right_when_delegating, half,
                             np.array([1., 1., 1., 0.])) == (0.25, 0.0)
  # A policy that never delegated: its mean stands for both sides.
  assert evidence.gain_split(~np.ones(4, bool), np.full(4, 0.5),
                             np.ones(4, bool), np.full(4, 0.5)) == (0.0, 0.0)
  assert all(math.isnan(v) for v in evidence.gain_split(
      half, right_when_delegating, np.zeros(0, bool), np.zeros(0)))


def test_sizes_and_run_names_follow_the_flags():
  full = common.parse_flags('', [])
  assert common.sizes(full) == common.Sizes(eval_steps=(0, 5, 10, 15),
                                           num_eval=256)
  assert common.suffix(full) == ''
  assert common.run_name(full, 'arm', common.Run(1, 2)) == 'arm_sft1_seed2'
  # A bare RL seed starts from the first SFT seed.
  assert common.run_name(full, 'arm', 2) == 'arm_sft0_seed2'
  reduced = common.parse_flags('', ['--sft_steps=75', '--rl_steps=4',
                                    '--num_eval=8'])
  assert common.sizes(reduced) == common.Sizes(eval_steps=(0, 2, 4),
                                               num_eval=8)
  assert common.suffix(reduced) == '_sft75'
  assert common.size_record(reduced)['reduced']
  # A cut SFT decays its learning rate over its own steps; the full one
  # keeps the variant's schedule.
  for flags, steps in ((reduced, 75), (common.parse_flags(
      '', ['--sft_steps=600']), 600)):
    sft = common.study_config(flags, common.MIXTURE).sft
    assert sft.steps == steps
    assert sft.optim.warmup_steps + sft.optim.decay_steps == steps
  full_sft = common.study_config(full, common.MIXTURE).sft
  assert (full_sft.steps, full_sft.optim.decay_steps) == (150, 135)
  # Another documents family: its own runs, the studies' task replaced
  # (the crafting study's is not a documents family).
  scan = common.parse_flags('', ['--task=documents_scan', '--sft_steps=600'])
  assert common.suffix(scan) == '_documents_scan_sft600'
  assert common.size_record(scan)['task'] == 'documents_scan'
  assert common.study_config(scan, common.MIXTURE).tasks.name == (
      'documents_scan')
  assert common.study_config(full, common.MIXTURE).tasks.name == 'documents'
  with pytest.raises(ValueError, match='not a documents family'):
    common.study_config(scan, common.CRAFTING)
  # RL overrides: every RL arm's config (over the arm's own), named apart;
  # the SFT run is the same.
  changed = common.parse_flags('', [
      '--rl_override=rl.credit.baseline=leave_one_out_task',
      '--rl_override=optim.learning_rate=5e-4'])
  assert changed.rl_overrides == (
      ('rl.credit.baseline', 'leave_one_out_task'),
      ('optim.learning_rate', 5e-4))
  assert common.run_name(changed, 'arm', 1) == (
      'arm_sft0_seed1_baseline-leave_one_out_task_learning_rate-0.0005')
  # So are the plot and the saved files of the experiment that ran them.
  assert common.output_path(changed, 'delegation', 'png').name == (
      'delegation_baseline-leave_one_out_task_learning_rate-0.0005.png')
  assert common.output_path(reduced, 'wall_clock_documents', 'json').name == (
      'wall_clock_documents_sft75.json')
  rl = common.rl_config(changed, common.MIXTURE, common.Run(0, 1), 8,
                        {'rl.credit.baseline': 'leave_one_out_depth'})
  assert (rl.rl.credit.baseline, rl.optim.learning_rate, rl.seed) == (
      'leave_one_out_task', 5e-4, 1)
  assert common.study_config(changed, common.MIXTURE).to_dict() == (
      common.study_config(full, common.MIXTURE).to_dict())
  smoke = common.parse_flags('', ['--smoke'])
  assert common.suffix(smoke) == '_smoke'
  assert not common.size_record(smoke)['reduced']
  assert smoke.samples == 1


def _write_rl_metrics(workdir: pathlib.Path, tokens_per_tree) -> None:
  workdir.mkdir(parents=True)
  rows = [{'phase': 'sft', 'step': 1, 'sampled_tokens_per_tree': 0.0,
           'tokens_per_tree': 0.0, 'rollout_s': 0.0, 'update_s': 0.0}]
  rows += [{'phase': 'rl', 'step': 2 + i, 'sampled_tokens_per_tree': t / 4,
            'tokens_per_tree': t, 'rollout_s': 1.0, 'update_s': 0.5}
           for i, t in enumerate(tokens_per_tree)]
  (workdir / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows))


def test_the_matched_single_agent_stops_at_the_recursive_total(tmp_path):
  sys.path.insert(0, str(CLAIMS))
  import efficiency  # pylint: disable=g-import-not-at-top
  flags = common.parse_flags('', ['--rl_steps=4', '--sft_seeds=0',
                                  f'--workdir={tmp_path}'])
  run = common.Run(0, 0)
  # Recursive trees hold 160 tokens a tree over its 4 steps (the 5th is
  # past the size). The single agent's copy already trained 30 steps of
  # 6 (180 >= 160): no more training, evaluated where it stands.
  _write_rl_metrics(efficiency.arm_dir(flags, 'recursive', run),
                    [30, 40, 40, 50, 99])
  _write_rl_metrics(efficiency.arm_dir(flags, efficiency.MATCHED, run),
                    [6] * 30)
  assert efficiency.total_tokens(flags, 'recursive', run, 4) == 160 * 32
  assert efficiency.matched_steps(flags, run) == 30
  cost = common.rl_cost(efficiency.arm_dir(flags, 'recursive', run), 4, 8)
  assert cost == {'seconds': 6.0, 'rollout_s': 4.0,
                  'sampled_tokens': 40 * 8, 'total_tokens': 160 * 8}


def test_a_difference_within_the_spread_is_no_difference():
  a = common.estimate([0.50, 0.60, 0.55])
  assert common.compare(a, common.estimate([0.62, 0.58, 0.66])) == (
      'no difference')  # 0.067 apart, ranges 0.10 and 0.08
  assert common.compare(a, common.estimate([0.80, 0.82, 0.78])) == 'higher'
  assert common.compare(a, common.estimate([0.2, 0.25, 0.22])) == 'lower'
  # A bucket no task fell in has no value, not a lower one.
  assert common.compare(a, common.estimate([math.nan])) == 'n/a'
  assert str(a) == '0.550 [0.500, 0.600]'
  assert a.to_json() == {'mean': 0.55, 'low': 0.5, 'high': 0.6, 'n': 3}
  with pytest.raises(ValueError, match='no values'):
    common.estimate([])


def test_table_and_headline_are_markdown_and_strict_json():
  text = common.table(['a', 'b'], [['x', 0.5], ['y', math.nan]])
  assert text.splitlines() == ['| a | b |', '|---|---|', '| x | 0.500 |',
                               '| y | n/a |']
  line = common.headline('e', {'v': math.nan, 'w': [1.0, math.nan]})
  assert json.loads(line) == {'experiment': 'e', 'v': None, 'w': [1.0, None]}


def test_buckets_split_by_length():
  class Tree:  # only what `by_bucket` reads: the key is given
    def __init__(self, n):
      self.n = n
  trees = [Tree(n) for n in (2, 8, 9, 16, 17, 32)]
  buckets = common.by_bucket(trees, lambda t: t.n, common.RECORD_BUCKETS)
  assert {k: [t.n for t in v] for k, v in buckets.items()} == {
      '<=8': [2, 8], '9-16': [9, 16], '17-32': [17, 32]}


def test_experiment_docs_say_their_command():
  for name in EXPERIMENTS:
    text = (CLAIMS / f'{name}.py').read_text()
    assert f'python benchmarks/claims/{name}.py' in text
    assert os.path.getsize(CLAIMS / f'{name}.py') < 12_000  # short modules
  for name in ('stats', 'floors', 'heldout', 'evidence'):
    assert os.path.getsize(CLAIMS / f'{name}.py') < 12_000
