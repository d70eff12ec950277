"""rao_jax.viewer.plots: records become the series plotted, PNGs of the stated size
are written, and the run's summary draws them."""

import json
import math
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from configs import cpu_tiny
from rao_jax import config as config_lib
from rao_jax.viewer import plots
from rao_jax.runtime import run_log as run_log_lib
from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT_STEPS, RL_STEPS = 6, 4


def _records(seed=0):
  """metrics.jsonl records as a train run logs them: SFT steps, an
  evaluation at SFT's last step, RL steps (with rewards), an evaluation at
  the end; depth 3 only reached at some steps."""
  rng = np.random.default_rng(seed)
  records = []
  for step in range(1, SFT_STEPS + RL_STEPS + 1):
    phase = 'sft' if step <= SFT_STEPS else 'rl'
    record = {'step': step, 'phase': phase, 'loss': float(rng.random()),
              'root_success': float(rng.random()),
              'nodes_per_tree': float(rng.integers(1, 40)),
              'max_depth_per_tree': float(rng.integers(0, 4)),
              'spawn_steps_per_tree': float(rng.random() * 10),
              'children_per_spawn': float(1 + rng.random() * 3)}
    for depth in range(4 if step % 3 else 3):
      record[f'success/depth{depth}'] = float(rng.random())
    if phase == 'rl':
      record['reward_root'] = float(rng.random() * 1.4)
    records.append(record)
    if step in (SFT_STEPS, SFT_STEPS + RL_STEPS):
      tag = 'after_sft' if step == SFT_STEPS else 'after_rl'
      evaluation = {'step': step}
      for level in ('easy', 'moderate'):
        for agent in ('recursive', 'single_agent'):
          for key in ('root_success', 'nodes_per_tree', 'success/depth0'):
            evaluation[f'{tag}/{level}/{agent}/{key}'] = float(rng.random())
      records.append(evaluation)
  return records


def _expected(records, key, phase):
  """(steps, values) of key over the training records of one phase."""
  rows = [r for r in records if r.get('phase') == phase]
  return ([r['step'] for r in rows],
          [r.get(key, math.nan) for r in rows])


def _lines(ax):
  return [(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
          for line in ax.get_lines()]


def _assert_png(path):
  with Image.open(path) as image:
    image.verify()  # the PNG's chunks and checksums
  with Image.open(path) as image:
    assert image.format == 'PNG'
    assert image.size == (plots.FIGSIZE[0] * plots.DPI,
                          plots.FIGSIZE[1] * plots.DPI)


def _assert_phase_lines(ax, records, key):
  """The axis draws key once per phase, labelled by the phase's trees."""
  found = {label: (x, y) for label, x, y in _lines(ax)}
  for phase in ('sft', 'rl'):
    steps, values = _expected(records, key, phase)
    if all(math.isnan(v) for v in values):
      assert plots.PHASE_TREES[phase] not in found
      continue
    x, y = found[plots.PHASE_TREES[phase]]
    assert x == steps
    np.testing.assert_array_equal(y, values)


def test_series_breaks_at_missing_values_and_filters_by_phase():
  records = _records()
  steps, values = plots.series(records, 'success/depth3')
  training = [r for r in records if 'phase' in r]
  assert list(steps) == [r['step'] for r in training]
  np.testing.assert_array_equal(
      values, [r.get('success/depth3', math.nan) for r in training])
  assert np.isnan(values).any() and not np.isnan(values).all()
  steps, values = plots.series(records, 'reward_root', 'rl')
  assert list(steps) == list(range(SFT_STEPS + 1, SFT_STEPS + RL_STEPS + 1))
  assert not np.isnan(values).any()
  assert plots.phases_of(records) == ['sft', 'rl']


def test_series_refuses_a_value_that_is_not_a_number():
  records = _records()
  records[2]['loss'] = 'high'
  with pytest.raises(ValueError, match=r"'loss' at step 3 is 'high'"):
    plots.series(records, 'loss')


def test_phase_spans_meet_between_phases():
  records = _records()
  assert plots.phase_spans(records) == [
      ('sft', 0.5, SFT_STEPS + 0.5),
      ('rl', SFT_STEPS + 0.5, SFT_STEPS + RL_STEPS + 0.5)]
  # Logged every 5 steps: SFT's last record at 10, RL's first at 15.
  sparse = [{'step': s, 'phase': p} for s, p in
            ((5, 'sft'), (10, 'sft'), (15, 'rl'), (16, 'rl'))]
  assert plots.phase_spans(sparse) == [('sft', 4.5, 12.5),
                                       ('rl', 12.5, 16.5)]


def test_eval_points_read_each_level_and_agent_in_step_order():
  records = _records()
  points = plots.eval_points(list(reversed(records)))
  assert sorted(points) == [(level, agent) for level in ('easy', 'moderate')
                            for agent in ('recursive', 'single_agent')]
  for (level, agent), (steps, values) in points.items():
    assert list(steps) == [SFT_STEPS, SFT_STEPS + RL_STEPS]
    assert list(values) == [
        r[f'{tag}/{level}/{agent}/root_success'] for r, tag in (
            (records[SFT_STEPS], 'after_sft'), (records[-1], 'after_rl'))]
  depth0 = plots.eval_points(records, 'success/depth0')
  assert sorted(depth0) == sorted(points)


def test_depth_keys_sort_by_depth_not_by_text():
  records = [{'step': 1, 'phase': 'rl', f'success/depth{d}': 1.0}
             for d in (10, 2, 0)]
  assert plots.depth_keys(records) == ['success/depth0', 'success/depth2',
                                       'success/depth10']


def test_plot_success_draws_the_records(tmp_path):
  records = _records()
  path = str(tmp_path / 'success.png')
  fig = plots.plot_success(records, path)
  _assert_png(path)
  success_ax, reward_ax = fig.axes
  _assert_phase_lines(success_ax, records, 'root_success')
  _assert_phase_lines(reward_ax, records, 'reward_root')
  found = {label: (x, y) for label, x, y in _lines(success_ax)}
  for (level, agent), (steps, values) in plots.eval_points(records).items():
    x, y = found[f'eval {level} {agent}']
    assert x == list(steps) and y == list(values)
  # SFT alone has no reward axis.
  sft_only = [r for r in records if r['step'] <= SFT_STEPS]
  assert len(plots.plot_success(sft_only, path).axes) == 1


def test_plot_tree_sizes_and_delegation_draw_the_records(tmp_path):
  records = _records()
  for plot, keys in (
      (plots.plot_tree_sizes, ('nodes_per_tree', 'max_depth_per_tree')),
      (plots.plot_delegation, ('spawn_steps_per_tree',
                               'children_per_spawn'))):
    path = str(tmp_path / f'{plot.__name__}.png')
    fig = plot(records, path)
    _assert_png(path)
    assert len(fig.axes) == len(keys)
    for ax, key in zip(fig.axes, keys):
      _assert_phase_lines(ax, records, key)


def test_plot_depth_success_draws_each_depth_per_phase(tmp_path):
  records = _records()
  path = str(tmp_path / 'depth.png')
  (ax,) = plots.plot_depth_success(records, path).axes
  _assert_png(path)
  drawn = [(x, y) for _, x, y in _lines(ax)]
  expected = [_expected(records, f'success/depth{d}', phase)
              for d in range(4) for phase in ('sft', 'rl')]
  assert len(drawn) == len(expected)
  for (x, y), (steps, values) in zip(drawn, expected):
    assert x == steps
    np.testing.assert_array_equal(y, values)
  labels = [label for label, _, _ in _lines(ax) if not label.startswith('_')]
  assert labels == [f'depth {d}' for d in range(4)]


def test_a_plot_without_its_metrics_says_which(tmp_path):
  evaluations = [r for r in _records() if 'phase' not in r]
  path = str(tmp_path / 'x.png')
  with pytest.raises(ValueError, match='nodes_per_tree'):
    plots.plot_tree_sizes(evaluations, path)
  with pytest.raises(ValueError, match='success/depth'):
    plots.plot_depth_success(evaluations, path)
  with pytest.raises(ValueError, match='root_success'):
    plots.plot_success([{'step': 1, 'phase': 'sft', 'loss': 1.0}], path)
  assert not os.path.exists(path)


def test_plot_run_writes_what_the_run_logged(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such workdir'):
    plots.plot_run(str(tmp_path / 'absent'))
  assert plots.plot_run(str(tmp_path)) == []  # no metrics.jsonl yet
  records = _records()
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  paths = plots.plot_run(str(tmp_path))
  assert paths == [str(tmp_path / 'plots' / name) for name in plots.PLOTS]
  for path in paths:
    _assert_png(path)
  # An eval run logs evaluations only: just the success plot.
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records if 'phase' not in r)
  assert plots.plot_run(str(tmp_path)) == [
      str(tmp_path / 'plots' / 'success.png')]


def _logged_summary(workdir, draw: bool):
  """The summary of a run that logged `_records()` (its plots drawn if
  `draw`)."""
  config = config_lib.from_config_dict(cpu_tiny.get_config('smoke'))
  log = run_log_lib.RunLog(str(workdir), 0, tokenizer_lib.ByteTokenizer(
      protocol.SPECIAL_TOKENS))
  evals = {}
  for record in _records():
    metrics = {k: v for k, v in record.items() if k != 'step'}
    log.write(record['step'], metrics)
    if 'phase' not in record:
      evals.update(metrics)
  summary = log.summary(config.mode, config.tasks, evals,
                        SFT_STEPS + RL_STEPS, draw=draw)
  log.close()
  return summary


def test_run_summary_draws_the_plots(tmp_path):
  summary = _logged_summary(tmp_path, draw=True)
  assert summary['plots'] == [str(tmp_path / 'plots' / name)
                              for name in plots.PLOTS]
  for path in summary['plots']:
    _assert_png(path)
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['plots'] == summary['plots']


def test_a_run_with_plots_off_draws_none(tmp_path):
  # `log.plots=False` (the claims harness's runs): the summary, no figure.
  assert config_lib.from_config_dict(cpu_tiny.get_config('smoke')).log.plots
  summary = _logged_summary(tmp_path, draw=False)
  assert summary['plots'] == [] and summary['steps'] == SFT_STEPS + RL_STEPS
  assert not (tmp_path / 'plots').exists() or not os.listdir(
      tmp_path / 'plots')


def test_importing_plots_leaves_the_backend_alone():
  # A notebook's inline backend must survive `import rao_jax.viewer.plots`.
  result = subprocess.run(
      [sys.executable, '-c', 'import sys, rao_jax.viewer.plots; '
       "print('matplotlib.pyplot' in sys.modules)"],
      cwd=_ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'False'
