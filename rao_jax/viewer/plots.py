"""A run's metrics as PNGs: success, tree sizes, per-depth success, delegation.

  from rao_jax.viewer import plots
  plots.plot_run('runs/tiny')   # -> ['runs/tiny/plots/success.png', ...]

Each `plot_*` function takes the records of `metrics.jsonl` (one dict a
logged step: training records carry a `phase`, evaluation records keys
`<tag>/<level>/<agent>/<metric>` such as
`after_sft/moderate/recursive/root_success`), writes one PNG of
`FIGSIZE` inches at `DPI` and returns the figure, whose lines hold exactly
the values plotted. Training phases are shaded apart (SFT, RL) and
evaluations drawn as markers at the step they ran. Figures are built on
matplotlib's Agg canvas directly, never through pyplot, so importing this
module changes no backend: a notebook keeps its inline display.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math
import os
import re
from typing import Any

import matplotlib
from matplotlib import figure as figure_lib
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np

from rao_jax.viewer import run_files

Records = Sequence[Mapping[str, Any]]

FIGSIZE = (8.0, 6.0)  # inches: 800 x 600 pixels at DPI
DPI = 100
PHASE_COLORS = {'sft': '#4c72b0', 'rl': '#dd8452'}
# SFT trains on the reference solver's trees, RL on the policy's samples:
# their batch statistics are of different trees, so each phase gets a line.
PHASE_TREES = {'sft': "SFT: the reference solver's trees",
               'rl': "RL: the policy's sampled trees"}
PHASE_LINESTYLES = {'sft': '--', 'rl': '-'}
_STYLE_WORDS = {'--': 'dashed', '-': 'solid'}
AGENT_MARKERS = {'recursive': 'o', 'recursive_eval_depth': 's',
                 'single_agent': 'X'}
# Past this many points a line is drawn without a marker at each step.
_MARKED_POINTS = 50
_DEPTH_KEY = re.compile(r'success/depth(\d+)')


# ---------------------------------------------------------------------------
# Records -> series.
# ---------------------------------------------------------------------------


def training_records(records: Records) -> list[Mapping[str, Any]]:
  """The records of training steps (those with a `phase`), by step."""
  return sorted((r for r in records if 'phase' in r), key=lambda r: r['step'])


def series(records: Records, key: str, phase: str | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of `key` over the training records (of `phase` only,
  unless None), NaN where a record lacks it, so a line breaks there rather
  than bridging the gap.

  Raises:
    ValueError: a value of `key` is not a number (the step is named).
  """
  rows = [r for r in training_records(records)
          if phase is None or r['phase'] == phase]
  steps_S = np.array([r['step'] for r in rows], dtype=np.int64)
  values_S = np.array([_number(r, key) for r in rows], dtype=np.float64)
  return steps_S, values_S


def phases_of(records: Records) -> list[str]:
  """The training phases of the records, in the order they first ran."""
  return list(dict.fromkeys(r['phase'] for r in training_records(records)))


def has_series(records: Records, key: str) -> bool:
  """Whether any training record holds `key`."""
  return any(key in r for r in training_records(records))


def has_success(records: Records) -> bool:
  """Whether the records hold root success of training or evaluation."""
  return has_series(records, 'root_success') or bool(eval_points(records))


def phase_spans(records: Records) -> list[tuple[str, float, float]]:
  """(phase, first x, last x) of each run of consecutive training records
  of one phase; neighbouring spans meet halfway between their steps."""
  rows = training_records(records)
  runs: list[list[Any]] = []  # [phase, first step, last step]
  for r in rows:
    if runs and runs[-1][0] == r['phase']:
      runs[-1][2] = r['step']
    else:
      runs.append([r['phase'], r['step'], r['step']])
  spans = []
  for i, (phase, first, last) in enumerate(runs):
    lo = (runs[i - 1][2] + first) / 2 if i else first - 0.5
    hi = (last + runs[i + 1][1]) / 2 if i + 1 < len(runs) else last + 0.5
    spans.append((phase, lo, hi))
  return spans


def eval_points(records: Records, metric: str = 'root_success'
                ) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
  """(level, agent) -> (steps, values) of an evaluation metric, from keys
  `<tag>/<level>/<agent>/<metric>` (tag `after_sft`, `after_rl`, `eval`),
  in step order."""
  points: dict[tuple[str, str], list[tuple[int, float]]] = {}
  for r in records:
    for key in r:
      parts = key.split('/', 3)
      if (len(parts) == 4 and parts[0] in run_files.EVAL_PHASES
          and parts[3] == metric):
        points.setdefault((parts[1], parts[2]), []).append(
            (r['step'], _number(r, key)))
  return {name: (np.array([s for s, _ in sorted(p)], dtype=np.int64),
                 np.array([v for _, v in sorted(p)], dtype=np.float64))
          for name, p in sorted(points.items())}


def depth_keys(records: Records) -> list[str]:
  """The training records' `success/depth<d>` keys, by depth."""
  depths = {int(m.group(1)) for r in training_records(records) for key in r
            if (m := _DEPTH_KEY.fullmatch(key))}
  return [f'success/depth{d}' for d in sorted(depths)]


def _number(record: Mapping[str, Any], key: str) -> float:
  value = record.get(key)
  if value is None:
    return math.nan
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f'metrics: {key!r} at step {record.get("step")} is '
                     f'{value!r}, not a number')
  return float(value)


# ---------------------------------------------------------------------------
# Drawing.
# ---------------------------------------------------------------------------


def _figure(rows: int, title: str) -> tuple[figure_lib.Figure, list[Any]]:
  fig = figure_lib.Figure(figsize=FIGSIZE, dpi=DPI, layout='constrained')
  fig.suptitle(title, fontsize=11)
  backend_agg.FigureCanvasAgg(fig)  # PNGs without a display
  axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
  for ax in axes:
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
  axes[-1].set_xlabel('step')
  return fig, list(axes)


def _shade_phases(axes: Sequence[Any], records: Records) -> None:
  """Shades each training phase on every axis and names it on the first."""
  for phase, lo, hi in phase_spans(records):
    color = PHASE_COLORS.get(phase, '#999999')
    for ax in axes:
      ax.axvspan(lo, hi, color=color, alpha=0.12, lw=0)
    axes[0].text((lo + hi) / 2, 1.01, phase.upper(), color=color,
                 ha='center', va='bottom', fontsize=9,
                 transform=axes[0].get_xaxis_transform())


def _lines(ax: Any, records: Records, key: str, label: str | None = None,
           color: str | None = None) -> None:
  """One line of `key` per training phase: in the phase's colour and
  labelled by its trees, or in `color`, labelled `label` once."""
  labelled = False
  for phase in phases_of(records):
    steps, values = series(records, key, phase)
    if np.isnan(values).all():
      continue  # e.g. the root reward, which SFT does not compute
    ax.plot(steps, values, marker='.' if len(steps) <= _MARKED_POINTS
            else None, linestyle=PHASE_LINESTYLES.get(phase, '-'),
            color=color or PHASE_COLORS.get(phase, '#555555'),
            label=(PHASE_TREES.get(phase, phase) if label is None
                   else None if labelled else label))
    labelled = True


def _eval_markers(ax: Any, records: Records, metric: str) -> None:
  """One marker series per evaluated (level, agent), coloured by level."""
  points = eval_points(records, metric)
  levels = sorted({level for level, _ in points})
  for (level, agent), (steps, values) in points.items():
    ax.plot(steps, values, linestyle='none', markersize=8,
            marker=AGENT_MARKERS.get(agent, 'D'),
            color=f'C{2 + levels.index(level)}', markeredgecolor='black',
            label=f'eval {level} {agent}')


def _finish(axes: Sequence[Any], records: Records, ncols: int = 1) -> None:
  _shade_phases(axes, records)
  for ax in axes:
    if ax.get_legend_handles_labels()[1]:
      ax.legend(fontsize=8, loc='best', ncols=ncols)


def _save(fig: figure_lib.Figure, path: str) -> figure_lib.Figure:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  # No bbox_inches='tight': the PNG keeps exactly FIGSIZE * DPI pixels.
  fig.savefig(path, dpi=DPI, format='png')
  return fig


def _check(has_data: bool, what: str, metrics: str) -> None:
  if not has_data:
    raise ValueError(f'{what}: the records hold no {metrics}')


def _panels(records: Records, path: str, what: str, title: str,
            panels: Sequence[tuple[str, str]], *, evaluated: str = ''
            ) -> figure_lib.Figure:
  """One panel a training metric, given as (key, y label); the panel of
  `evaluated` also marks the evaluations of that metric."""
  first = panels[0][0]
  _check(has_series(records, first), what, f'{first} of a training step')
  fig, axes = _figure(len(panels), title)
  for ax, (key, ylabel) in zip(axes, panels):
    _lines(ax, records, key)
    if key == evaluated:
      _eval_markers(ax, records, key)
    ax.set_ylabel(ylabel)
  _finish(axes, records)
  return _save(fig, path)


def plot_success(records: Records, path: str) -> figure_lib.Figure:
  """Root success (training batches, and evaluations as markers) and, once
  RL has run, the root reward of its sampled trees, against steps."""
  _check(has_success(records), 'plot_success',
         'root_success of a training step or an evaluation')
  with_reward = has_series(records, 'reward_root')
  fig, axes = _figure(2 if with_reward else 1, 'Root success')
  _lines(axes[0], records, 'root_success')
  _eval_markers(axes[0], records, 'root_success')
  axes[0].set_ylabel('root success')
  axes[0].set_ylim(-0.03, 1.03)
  if with_reward:
    _lines(axes[1], records, 'reward_root')
    axes[1].set_ylabel('root reward (Eq. 1)')
  _finish(axes, records)
  return _save(fig, path)


def plot_tree_sizes(records: Records, path: str) -> figure_lib.Figure:
  """Nodes per tree (evaluations as markers) and maximum depth per tree."""
  return _panels(records, path, 'plot_tree_sizes', 'Call-tree sizes',
                 (('nodes_per_tree', 'nodes per tree'),
                  ('max_depth_per_tree', 'max depth per tree')),
                 evaluated='nodes_per_tree')


def plot_depth_success(records: Records, path: str) -> figure_lib.Figure:
  """Per-node success at each depth of the training batches' trees."""
  keys = depth_keys(records)
  _check(bool(keys), 'plot_depth_success',
         'success/depth<d> of a training step')
  styles = '; '.join(
      f'{_STYLE_WORDS.get(PHASE_LINESTYLES.get(p, "-"), "solid")} '
      f'{PHASE_TREES.get(p, p)}' for p in phases_of(records))
  fig, axes = _figure(1, f'Success per depth ({styles})')
  cmap = matplotlib.colormaps['viridis']
  for i, key in enumerate(keys):
    _lines(axes[0], records, key, label=f'depth {key.split("depth")[1]}',
           color=cmap(i / len(keys)))
  axes[0].set_ylabel('success of the nodes at a depth')
  axes[0].set_ylim(-0.03, 1.03)
  _finish(axes, records, ncols=2)
  return _save(fig, path)


def plot_delegation(records: Records, path: str) -> figure_lib.Figure:
  """Spawn steps per tree and children per spawn step."""
  return _panels(records, path, 'plot_delegation', 'Delegation',
                 (('spawn_steps_per_tree', 'spawn steps per tree'),
                  ('children_per_spawn', 'children per spawn')))


# File name -> (plot function, whether the records hold its data).
PLOTS: dict[str, tuple[Callable[[Records, str], figure_lib.Figure],
                       Callable[[Records], bool]]] = {
    'success.png': (plot_success, has_success),
    'tree_sizes.png': (plot_tree_sizes,
                       lambda r: has_series(r, 'nodes_per_tree')),
    'depth_success.png': (plot_depth_success, lambda r: bool(depth_keys(r))),
    'delegation.png': (plot_delegation,
                       lambda r: has_series(r, 'spawn_steps_per_tree')),
}


def plot_run(workdir: str) -> list[str]:
  """Draws the plots of `<workdir>/metrics.jsonl` into `<workdir>/plots/`.

  Returns:
    The PNGs written, in `PLOTS` order; a plot whose metrics the run did
    not log is left out (an `eval` run has no training curves), and a run
    without metrics gets none.

  Raises:
    FileNotFoundError: `workdir` is not a directory.
    ValueError: a line of `metrics.jsonl` is not JSON, or a metric not a
      number.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'{workdir}: no such workdir')
  records = run_files.read_metrics(workdir)
  paths = []
  for name, (plot, has_data) in PLOTS.items():
    if has_data(records):
      path = os.path.join(workdir, 'plots', name)
      plot(records, path)
      paths.append(path)
  return paths
