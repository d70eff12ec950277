"""What the claims experiments share: flags, runs, evaluation, statistics.

Every experiment in this folder is one command,

  python benchmarks/claims/<name>.py [--smoke] [--seeds=0,1,2] [--workdir=DIR]

that trains with the real trainer (`rao_jax.main.run`, in this process, on
`configs/cpu_tiny.py` variants), evaluates the checkpoints it wrote, prints
a markdown table and, last, one JSON line of headline numbers, and draws
its curves into `<workdir>/<name>.png`.

Runs live under `--workdir` (default `runs/claims`), one folder a run,
named by what it trains. A run started on its folder resumes it, so a run
that finished is not trained again: experiments share runs (the mixture's
SFT serves four of them) and a killed experiment continues where it
stopped. Evaluations are saved beside their run (`claims/*.jsonl`, the
call trees) and read back on a rerun.

Seeds: `--sft_seeds` are the SFT runs (initialisation and data order),
`--seeds` the RL seeds (the tasks RL draws and its samples): an arm runs
RL once per pair (`Run`), each from its own SFT run. Held-out tasks are
the same for every run and arm (`heldout.examples`, 256 a level at full
size), evaluated greedily and, at the ends, `--samples` times at
temperature 1: `evidence.py` averages a task's score over the runs and
samples and reads 95% intervals from a paired bootstrap over the tasks
(`stats.py`), beside exact match and the floors (`floors.py`). The older
range over seeds (`compare`) remains for the tables that report it.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import json
import math
import os
import pathlib
import shutil
import sys
from typing import Any, NamedTuple

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The checkout's rao_jax and configs, whatever is installed.
sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
from rao_jax.runtime import host_memory
import heldout

if sys.argv and pathlib.Path(sys.argv[0]).resolve().parent == HERE:
  # An experiment's command, as the entry point does: glibc reads its
  # malloc tunables at start-up, so settle them before jax loads.
  host_memory.reexec_with_huge_pages()

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg
import ml_collections
import numpy as np

from configs import cpu_tiny
from rao_jax import config as config_lib
from rao_jax import main as main_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.rl import metrics as metrics_lib
from rao_jax.runtime import checkpoint as checkpoint_lib
from rao_jax.tasks import context
from rao_jax.training import rollouts as rollouts_lib
from rao_jax.training import setup as setup_lib
from rao_jax.viewer import plots
from rao_jax.viewer import run_files
# pylint: enable=g-import-not-at-top,wrong-import-position

Trees = list[tree_lib.Tree]


class Run(NamedTuple):
  """One RL run of an arm: the SFT seed it starts from, its RL seed."""

  sft: int
  rl: int


# ---------------------------------------------------------------------------
# Flags.
# ---------------------------------------------------------------------------

# Families of fixed-width records the documents studies may run (`--task`):
# their record counts, floors and scripted solvers are the same.
DOCUMENT_TASKS = ('documents', 'documents_scan')


@dataclasses.dataclass(frozen=True)
class Flags:
  """An experiment's command line.

  Attributes:
    smoke: a few steps of everything (the tests run it), instead of the
      full size.
    seeds: RL seeds, one run per arm, SFT seed and RL seed.
    workdir: where the runs live (shared by the experiments).
    sft_seeds: SFT seeds, one SFT run per study and seed.
    samples: evaluations at temperature 1 beside the greedy one.
    sft_steps, rl_steps, num_eval: a reduced run (None: the full size).
    task: the documents family the documents studies run ('': the
      variant's, `documents`); `documents_scan` adds a window-sized scan
      tool (claim 5).
    rl_overrides: (dotted field, value) pairs on top of every RL arm's
      config (`--rl_override`); the SFT runs stay shared.
    arms: the arms to run, of an experiment that names its arms (`--arms`;
      () where it does not).
  """

  smoke: bool
  seeds: tuple[int, ...]
  workdir: pathlib.Path
  sft_steps: int | None = None
  rl_steps: int | None = None
  num_eval: int | None = None
  sft_seeds: tuple[int, ...] = (0,)
  samples: int = 4
  task: str = ''
  rl_overrides: tuple[tuple[str, Any], ...] = ()
  arms: tuple[str, ...] = ()


def runs(flags: Flags) -> list[Run]:
  """Every (SFT seed, RL seed) pair, SFT seed first."""
  return [Run(s, r) for s in flags.sft_seeds for r in flags.seeds]


def as_run(flags: Flags, seed: 'int | Run') -> Run:
  """A run; a bare RL seed starts from the first SFT seed."""
  return seed if isinstance(seed, Run) else Run(flags.sft_seeds[0], seed)


def _seed_list(parser, flag: str, text: str) -> tuple[int, ...]:
  try:
    seeds = tuple(int(s) for s in text.split(','))
  except ValueError:
    parser.error(f'--{flag}={text!r}: expected integers like 0,1,2')
  if not seeds or len(set(seeds)) != len(seeds):
    parser.error(f'--{flag}={text!r}: expected distinct seeds')
  return seeds


def parse_flags(doc: str, argv: Sequence[str] | None = None,
                documents: bool = True, arms: Sequence[str] = ()) -> Flags:
  """The experiment's flags; `doc` (its module docstring) is the help.
  `documents`: its studies run documents, so `--task` may pick the family.
  `arms`: the experiment's arms, which `--arms` picks from (default all).
  """
  parser = argparse.ArgumentParser(
      description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--smoke', action='store_true',
                      help='a few steps of everything, in about a minute')
  parser.add_argument('--seeds', default='0,1,2',
                      help='comma-separated RL seeds (default 0,1,2)')
  parser.add_argument('--sft_seeds', default='0,1,2',
                      help='comma-separated SFT seeds (default 0,1,2)')
  parser.add_argument('--samples', type=int, default=4,
                      help='evaluations at temperature 1 beside the greedy '
                      'one (default 4; --smoke: 1)')
  parser.add_argument('--workdir', default=str(REPO / 'runs' / 'claims'),
                      help='where the runs live (default runs/claims)')
  if documents:
    parser.add_argument('--task', default='', choices=DOCUMENT_TASKS,
                        help='the documents family its studies run '
                        '(default: documents)')
  parser.add_argument('--rl_override', action='append', default=[],
                      metavar='FIELD=VALUE',
                      help='a run-config field for every RL arm, e.g. '
                      'rl.credit.baseline=leave_one_out_task (repeatable; '
                      'its runs are named apart, the SFT runs shared)')
  if arms:
    parser.add_argument('--arms', default=','.join(arms),
                        help=f'comma-separated arms to run, of {",".join(arms)}'
                        ' (default all)')
  for name in ('sft_steps', 'rl_steps', 'num_eval'):
    parser.add_argument(f'--{name}', type=int, default=None,
                        help='a reduced run: this instead of the full size')
  args = parser.parse_args(argv)
  seeds = _seed_list(parser, 'seeds', args.seeds)
  sft_seeds = _seed_list(parser, 'sft_seeds', args.sft_seeds)
  if args.samples < 0:
    parser.error(f'--samples={args.samples}: expected >= 0')
  if args.smoke and (args.sft_steps or args.rl_steps or args.num_eval):
    parser.error('--smoke has its own sizes: drop --sft_steps, --rl_steps '
                 'and --num_eval')
  rl_overrides = tuple(_rl_override(parser, text)
                       for text in args.rl_override)
  chosen = tuple(args.arms.split(',')) if arms else ()
  if arms and (not chosen or not set(chosen) <= set(arms)):
    parser.error(f'--arms={args.arms!r}: expected a comma-separated subset '
                 f'of {",".join(arms)}')
  return Flags(smoke=args.smoke, seeds=seeds,
               workdir=pathlib.Path(args.workdir).resolve(),
               sft_steps=args.sft_steps, rl_steps=args.rl_steps,
               num_eval=args.num_eval, sft_seeds=sft_seeds,
               samples=1 if args.smoke else args.samples,
               task=getattr(args, 'task', ''), rl_overrides=rl_overrides,
               arms=chosen)


def _rl_override(parser, text: str) -> tuple[str, Any]:
  """'rl.credit.node_cost=0.02' -> ('rl.credit.node_cost', 0.02), checked
  against the run config before anything runs."""
  field, sep, raw = text.partition('=')
  if not sep or not field:
    parser.error(f'--rl_override={text!r}: expected FIELD=VALUE, e.g. '
                 'rl.credit.baseline=leave_one_out_task')
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw  # a bare word: a string
  try:
    typed(config_dict(MIXTURE.variant, False, {field: value}))
  except (ValueError, KeyError, TypeError) as error:  # ConfigError too
    parser.error(f'--rl_override={text!r}: {error}')
  return field, value


# ---------------------------------------------------------------------------
# Configs and runs.
# ---------------------------------------------------------------------------


def config_dict(variant: str, smoke: bool,
                overrides: Mapping[str, Any] | None = None
                ) -> ml_collections.ConfigDict:
  """`configs/cpu_tiny.py:<variant>[,smoke]` with dotted-field overrides
  (`{'rl.steps': 5}`); no evaluation of its own (the experiments evaluate
  what they need) and no Hugging Face export."""
  arg = ','.join(v for v in (variant, 'smoke' if smoke else '') if v)
  config = cpu_tiny.get_config(arg)
  config.update_from_flattened_dict({
      'tasks.eval_levels': (), 'checkpoint.export_hf': False,
      'log.progress_bar': False, 'log.trees_every_steps': 0,
      # The experiments draw their own figures; a run's would be redrawn
      # at each of its evaluation stops.
      'log.plots': False,
      # Checkpoints at each phase's end only: every run here is one phase.
      'checkpoint.every_steps': 10_000, 'checkpoint.max_to_keep': 2,
      **(overrides or {})})
  return config


def typed(config: ml_collections.ConfigDict) -> config_lib.RunConfig:
  return config_lib.from_config_dict(config)


def sft(flags: Flags, name: str, config: ml_collections.ConfigDict
        ) -> pathlib.Path:
  """The SFT run `name` (trained unless it is done); its workdir."""
  workdir = flags.workdir / name
  config = ml_collections.ConfigDict(config)
  config.mode = 'sft'
  main_lib.run(typed(config), str(workdir))
  return workdir


def rl_curve(flags: Flags, name: str, config: ml_collections.ConfigDict,
             sft_dir: pathlib.Path, eval_steps: Sequence[int],
             evaluate_at: Callable[[int, pathlib.Path], Any]) -> list[Any]:
  """RL from an SFT run, stopping at each of `eval_steps` (RL steps, rising)
  to evaluate: `evaluate_at(rl_step, workdir)`, whose results it returns.

  The run starts from a copy of the SFT run's last checkpoint, in the
  workdir `name`, and reads the SFT run's datasets; each stop ends the RL
  phase there (a checkpoint) and the next resumes it exactly, so the
  stops change nothing the run does (RL's learning rate is constant).
  """
  workdir = flags.workdir / name
  sft_steps = config.sft.steps
  start = workdir / 'checkpoints' / str(sft_steps)
  if not (workdir / 'checkpoints').exists():
    shutil.copytree(sft_dir / 'checkpoints' / str(sft_steps), start)
  results = []
  for rl_steps in eval_steps:
    stop = ml_collections.ConfigDict(config)
    stop.update_from_flattened_dict({
        'mode': 'train', 'rl.steps': rl_steps,
        'tasks.data_dir': str(sft_dir / 'data')})
    if rl_steps:
      main_lib.run(typed(stop), str(workdir))
    results.append(evaluate_at(rl_steps, workdir))
  return results


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The records of a run's `metrics.jsonl` (none before it ran)."""
  return run_files.read_metrics(str(workdir))


def rl_cost(workdir: pathlib.Path, rl_steps: int, trees_per_step: int
            ) -> dict[str, float]:
  """Seconds (rollouts and updates), sampled and total tokens of a run's
  first `rl_steps` RL steps."""
  rows = [r for r in read_metrics(workdir) if r.get('phase') == 'rl']
  rows = sorted(rows, key=lambda r: r['step'])[:rl_steps]
  return {
      'seconds': sum(r['rollout_s'] + r['update_s'] for r in rows),
      'rollout_s': sum(r['rollout_s'] for r in rows),
      'sampled_tokens': sum(r['sampled_tokens_per_tree'] * trees_per_step
                            for r in rows),
      # Every token of every node's sequence: prompt, observations,
      # children's results and what the policy sampled.
      'total_tokens': sum(r['tokens_per_tree'] * trees_per_step
                          for r in rows)}


def token_matched_steps(run: pathlib.Path, peer: pathlib.Path,
                        steps: int) -> int:
  """RL steps after which `run` would have sampled as many tokens as
  `peer` did in its first `steps`, at `run`'s own rate over its first
  `steps` (never fewer than `steps`). An estimate: a policy whose answers
  shorten with training samples fewer."""
  tokens = [rl_cost(workdir, steps, 1)['sampled_tokens']
            for workdir in (run, peer)]
  return max(steps, math.ceil(tokens[1] * steps / max(tokens[0], 1)))


def copy_run(source: pathlib.Path, copy: pathlib.Path) -> None:
  """A copy of a run (unless there is one), to continue it apart: it
  resumes exactly where the source stopped."""
  if copy.exists():
    return
  partial = copy.with_name(copy.name + '.partial')
  shutil.rmtree(partial, ignore_errors=True)  # a killed copy's remains
  shutil.copytree(source, partial)
  os.replace(partial, copy)


# ---------------------------------------------------------------------------
# Evaluation: greedy trees of a run's newest checkpoint.
# ---------------------------------------------------------------------------


def policy(config: config_lib.RunConfig, workdir: pathlib.Path
           ) -> tuple[int, rollouts_lib.Rollouts]:
  """(step, rollouts) of the newest checkpoint in `workdir`."""
  s = setup_lib.setup(config)
  ckpt = checkpoint_lib.Checkpointer(workdir / 'checkpoints')
  try:
    state, _ = setup_lib.restore_state(config, s, ckpt, phases=())
  finally:
    ckpt.close()
  if not state.step:
    raise FileNotFoundError(f'{workdir}: no checkpoint to evaluate')
  return state.step, setup_lib.rollouts(config, s, state.model)


def examples(config: config_lib.RunConfig, level: str, data_dir: str,
             num: int) -> list[dict[str, str]]:
  """The first `num` held-out test tasks of `level` (of the config's
  task kinds), generated past the stored split where it holds fewer
  (`heldout.examples`); the level is built into `data_dir` if it is not
  there."""
  return heldout.examples(config.tasks.resolve(), level, data_dir, num,
                          config.tasks.task_kinds)


def evaluate(config: config_lib.RunConfig, workdir: pathlib.Path, tag: str,
             tasks: Sequence[Mapping[str, str]], max_depth: int,
             step: int,
             restore: Callable[[], tuple[int, rollouts_lib.Rollouts]],
             sample: int = -1,
             root_prefix: scheduler_lib.RootPrefix = '') -> Trees:
  """Greedy trees (`sample` -1) or sampled ones at temperature 1 (sample
  0, 1, ...: each its own seed) of the workdir's newest checkpoint on
  `tasks` with depth budget `max_depth` (every root's first step forced
  to begin with `root_prefix`), saved as
  `<workdir>/claims/<tag>[_t1s<sample>].jsonl` and read from there when
  the tag was evaluated before. The checkpoint must be
  the one of trainer step `step`: a run trained past an evaluation it
  skipped cannot give it any more. `restore` gives (step, rollouts) of
  that checkpoint (`policy`, restored once for all the tags of a point)."""
  if sample >= 0:
    tag = f'{tag}_t1s{sample}'
  path = workdir / 'claims' / f'{tag}.jsonl'
  if path.exists():
    return tree_lib.load(str(path))
  found, rollouts = restore()
  if found != step:
    raise ValueError(f'{workdir}: evaluation {tag!r} wants the checkpoint '
                     f'of step {step}, the newest is {found}; start this '
                     f'run over in a new --workdir')
  trees, _ = rollouts.evaluate(
      tasks, max_depth, seed=config.seed + 1 + 1000 * (sample + 1),
      temperature=1.0 if sample >= 0 else 0.0, root_prefix=root_prefix)
  path.parent.mkdir(parents=True, exist_ok=True)
  tree_lib.save(trees, str(path) + '.partial')
  os.replace(str(path) + '.partial', path)  # a killed write leaves no tag
  return trees


# ---------------------------------------------------------------------------
# What the trees show.
# ---------------------------------------------------------------------------


def spawn_attempts(node: tree_lib.Node) -> int:
  """Steps of the node that the protocol parses as a spawn (accepted or
  refused by a budget or a bad data reference)."""
  return sum(
      isinstance(protocol.parse_step(turn['text']), protocol.Spawn)
      for turn in tree_lib.turns(node, context.TOKENIZER)
      if turn['kind'] == tree_lib.POLICY)


def tree_stats(trees: Trees) -> dict[str, float]:
  """Root success and how the trees delegate.

  Returns:
    root_success; nodes (per tree); depth (deepest node, per tree);
    delegating_roots and delegating_nodes (shares that spawned children);
    well_formed_spawns (accepted over attempted spawn steps, NaN with no
    attempt); children_per_delegating_node; child_success (mean over the
    checkable nodes below the roots, NaN without any).
  """
  nodes = [n for t in trees for n in t.nodes]
  spawned = [n for n in nodes if any(n.children)]
  attempts = sum(spawn_attempts(n) for n in nodes)
  accepted = sum(1 for n in nodes for step in n.children if step)
  children = [n.success for n in nodes
              if n.depth > 0 and n.success is not None]
  return {
      'root_success': float(np.mean(metrics_lib.root_scores(trees))),
      'nodes': len(nodes) / len(trees),
      'depth': float(np.mean([max(n.depth for n in t.nodes) for t in trees])),
      'delegating_roots': float(np.mean([any(t.root.children)
                                         for t in trees])),
      'delegating_nodes': len(spawned) / len(nodes),
      'well_formed_spawns': accepted / attempts if attempts else math.nan,
      'children_per_delegating_node': (
          float(np.mean([sum(map(len, n.children)) for n in spawned]))
          if spawned else 0.0),
      'child_success': float(np.mean(children)) if children else math.nan,
  }


def by_bucket(trees: Trees, key: Callable[[tree_lib.Tree], int],
              edges: Sequence[int]) -> dict[str, Trees]:
  """Trees by the bucket of `key(tree)`: '<=e0', 'e0+1-e1', ... (ints)."""
  buckets: dict[str, Trees] = {}
  low = None
  for edge in edges:
    name = f'<={edge}' if low is None else f'{low}-{edge}'
    buckets[name] = [t for t in trees
                     if (low is None or key(t) >= low) and key(t) <= edge]
    low = edge + 1
  return buckets


# ---------------------------------------------------------------------------
# Statistics over seeds.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A metric over seeds: its mean and its range."""

  values: tuple[float, ...]

  @property
  def mean(self) -> float:
    return float(np.mean(self.values))

  @property
  def low(self) -> float:
    return float(np.min(self.values))

  @property
  def high(self) -> float:
    return float(np.max(self.values))

  @property
  def spread(self) -> float:
    """The range over seeds (0 for one seed)."""
    return self.high - self.low

  def __str__(self) -> str:
    if len(self.values) == 1:
      return f'{self.mean:.3f}'
    return f'{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]'

  def to_json(self) -> dict[str, Any]:
    return {'mean': round(self.mean, 4), 'low': round(self.low, 4),
            'high': round(self.high, 4), 'n': len(self.values)}


def estimate(values: Sequence[float]) -> Estimate:
  values = tuple(float(v) for v in values)
  if not values:
    raise ValueError('estimate: no values')
  return Estimate(values)


def compare(a: Estimate, b: Estimate) -> str:
  """'higher' or 'lower' (b against a) when the means differ by more than
  the larger of the two ranges over seeds, else 'no difference'; 'n/a'
  when either has no value (a length bucket without tasks)."""
  difference = b.mean - a.mean
  if math.isnan(difference):
    return 'n/a'
  if abs(difference) <= max(a.spread, b.spread):
    return 'no difference'
  return 'higher' if difference > 0 else 'lower'


# ---------------------------------------------------------------------------
# Output: a markdown table, the JSON line, a plot.
# ---------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A markdown table; floats with three decimals."""
  def cell(value):
    if isinstance(value, float):
      return 'n/a' if math.isnan(value) else f'{value:.3f}'
    return str(value)
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def headline(experiment: str, numbers: Mapping[str, Any]) -> str:
  """The experiment's last line: one JSON object (NaN as null)."""
  def clean(value):
    if isinstance(value, float) and math.isnan(value):
      return None
    if isinstance(value, Mapping):
      return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
      return [clean(v) for v in value]
    return value
  return json.dumps(clean({'experiment': experiment, **numbers}),
                    sort_keys=True, allow_nan=False)


@dataclasses.dataclass(frozen=True)
class Curve:
  """One series of a panel: x, and per seed its y values at x; or, with
  `intervals`, per x a (mean, low, high) to draw instead."""

  label: str
  x: Sequence[float]
  y_by_seed: Sequence[Sequence[float]] = ()
  intervals: Sequence[tuple[float, float, float]] = ()


def _bars(curve: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  """(mean, low, high, what the bar is) of a curve's points."""
  if curve.intervals:
    mean, low, high = np.asarray(curve.intervals, np.float64).T
    return mean, low, high, '95% interval'
  y_SX = np.asarray(curve.y_by_seed, dtype=np.float64)
  return (y_SX.mean(axis=0), y_SX.min(axis=0), y_SX.max(axis=0),
          f'range over {len(y_SX)} runs')


def plot_panels(path: pathlib.Path, title: str,
                panels: Sequence[tuple[str, str, Sequence[Curve]]]) -> str:
  """One panel per (x label, y label, curves): each curve's measured
  points with their interval (or range over runs) as error bars, and no
  line through steps that were not measured; returns the PNG's path."""
  fig = figure_lib.Figure(figsize=(plots.FIGSIZE[0], 3.2 * len(panels)),
                          dpi=plots.DPI, layout='constrained')
  backend_agg.FigureCanvasAgg(fig)  # PNGs without a display
  fig.suptitle(title, fontsize=11)
  axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
  for ax, (xlabel, ylabel, curves) in zip(axes, panels):
    for i, curve in enumerate(curves):
      mean, low, high, bar = _bars(curve)
      # Side by side: series measured at the same x do not hide each other.
      offset = (i - (len(curves) - 1) / 2) * 0.01 * (
          (max(curve.x) - min(curve.x)) or 1)
      ax.errorbar(np.asarray(curve.x, np.float64) + offset, mean,
                  yerr=[mean - low, high - mean], fmt='o', ls='none',
                  capsize=3, color=f'C{i}', label=f'{curve.label} ({bar})')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=plots.DPI, format='png')
  return str(path)


# ---------------------------------------------------------------------------
# Studies: arms that run RL from one shared SFT run.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Study:
  """One SFT run (seed 0) that several arms start RL from.

  Attributes:
    name: names its runs (`sft_<name>`).
    variant: the `configs/cpu_tiny.py` variant.
    overrides: dotted fields on top of the variant, SFT and RL alike.
  """

  name: str
  variant: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# Documents: SFT on direct and recursive demonstrations alike (a coin per
# tree, `cpu_tiny.py:mixture`), so delegating is RL's decision.
MIXTURE = Study('mixture', 'mixture')
# Crafting, trained on medium: the same mixture of solvers, with the
# paper's prompts (no depth budget in them: a spawn past it is refused in
# text), so an evaluation budget twice the training one is in distribution.
CRAFTING = Study('crafting', 'crafting', {
    'sft.solver': 'mixture', 'rollout.window.show_depth_budget': False})
# The single agent in its own distribution: direct demonstrations (read,
# `add`, answer: the recursive agent's tools) with depth budget 0 in every
# prompt, SFT and RL alike, so evaluation shows it nothing it never saw.
SINGLE = Study('single', 'mixture', {'sft.solver': 'direct',
                                     'rollout.budgets.max_depth': 0})
# Claim 2 at 16 windows: recursive demonstrations only, trained until
# leaves are exact (`cpu_tiny.py:beyond`).
BEYOND = Study('beyond', 'beyond')
# Records of a `mixed` document: up to one window (the direct reader holds
# 8 records), one to two windows, two to four.
RECORD_BUCKETS = (8, 16, 32)


@dataclasses.dataclass(frozen=True)
class Sizes:
  """How much an experiment trains and evaluates."""

  eval_steps: tuple[int, ...]  # RL steps after which to evaluate (0: SFT)
  num_eval: int  # held-out tasks per evaluation


def sizes(flags: Flags) -> Sizes:
  """`--smoke`, the full size, or the full size cut by `--rl_steps` and
  `--num_eval`."""
  if flags.smoke:
    return Sizes(eval_steps=(0, 1), num_eval=2)
  if flags.rl_steps is None:
    eval_steps = (0, 5, 10, 15)
  else:
    eval_steps = tuple(sorted({0, flags.rl_steps // 2, flags.rl_steps}))
  # 256 tasks a level: a 95% interval of a share of about +-0.06.
  return Sizes(eval_steps=eval_steps, num_eval=flags.num_eval or 256)


def size_record(flags: Flags) -> dict[str, Any]:
  """The sizes a JSON line reports, `reduced` when cut below the full."""
  reduced = bool(flags.sft_steps or flags.rl_steps or flags.num_eval)
  return {'smoke': flags.smoke, 'reduced': reduced,
          'task': flags.task or 'documents',
          'rl_overrides': dict(flags.rl_overrides),
          'sft_steps': flags.sft_steps or 'full',
          'rl_steps': sizes(flags).eval_steps[-1],
          'num_eval': sizes(flags).num_eval}


def suffix(flags: Flags) -> str:
  """Names runs of another task family or size apart: '_<task>', then
  '_smoke', '_sft<steps>' or ''."""
  task = f'_{flags.task}' if flags.task else ''
  if flags.smoke:
    return task + '_smoke'
  return task + (f'_sft{flags.sft_steps}' if flags.sft_steps else '')


def overrides_suffix(flags: Flags) -> str:
  """Names what `--rl_override`s change apart: '_<last field>-<value>'
  each ('_baseline-leave_one_out_task')."""
  return ''.join(f'_{field.rsplit(".", 1)[-1]}-{value}'
                 for field, value in flags.rl_overrides)


def run_name(flags: Flags, name: str, seed: 'int | Run') -> str:
  """The folder of an arm's RL run (`rl_arm`), named apart by size, task
  and `--rl_override`s."""
  run = as_run(flags, seed)
  return (f'{name}_sft{run.sft}_seed{run.rl}{suffix(flags)}'
          f'{overrides_suffix(flags)}')


def output_path(flags: Flags, stem: str, extension: str) -> pathlib.Path:
  """An experiment's file beside the runs (its plot, saved timings),
  named apart as its RL runs are."""
  return flags.workdir / (
      f'{stem}{suffix(flags)}{overrides_suffix(flags)}.{extension}')


def study_config(flags: Flags, study: Study,
                 overrides: Mapping[str, Any] | None = None
                 ) -> ml_collections.ConfigDict:
  """The study's run config at the flags' sizes, with `overrides`.

  `--sft_steps` fits the SFT learning rate's cosine decay to the steps
  given (after the warm-up), so a longer or shorter SFT decays over its
  own length, not the variant's.
  """
  steps = {'sft.steps': flags.sft_steps} if flags.sft_steps else {}
  config = config_dict(study.variant, flags.smoke,
                       {**study.overrides, **steps, **(overrides or {})})
  if flags.task:
    if config.tasks.name not in DOCUMENT_TASKS:
      raise ValueError(f'--task={flags.task}: the {study.name} study runs '
                       f'{config.tasks.name}, not a documents family')
    config.tasks.name = flags.task
  if flags.sft_steps:
    optim = config.sft.optim
    optim.decay_steps = max(flags.sft_steps - optim.warmup_steps, 0)
  return config


def study_sft(flags: Flags, study: Study, sft_seed: int | None = None
              ) -> pathlib.Path:
  """The study's SFT run with seed `sft_seed` (default: the first of
  `--sft_seeds`), trained unless it is done; its workdir."""
  seed = flags.sft_seeds[0] if sft_seed is None else sft_seed
  return sft(flags, f'sft_{study.name}_seed{seed}{suffix(flags)}',
             study_config(flags, study, {'seed': seed}))


def records(tree: tree_lib.Tree) -> int:
  """A documents tree's input length in records (10 characters each)."""
  return len(tree.root.spec.data) // 10


def bucket_stats(trees: Trees) -> dict[str, Any]:
  """`tree_stats` over all documents trees and by `RECORD_BUCKETS`."""
  return {'all': tree_stats(trees),
          'buckets': {name: tree_stats(part) for name, part in by_bucket(
              trees, records, RECORD_BUCKETS).items() if part}}


# (level, held-out tasks, depth budget[, the roots' forced first text, or
# a function of a root's spec that gives it]).
EvalSpec = (tuple[str, int, int] |
            tuple[str, int, int, scheduler_lib.RootPrefix])


def forced_tag(root_prefix: scheduler_lib.RootPrefix) -> str:
  """What a forced opening adds to an evaluation's tag, so it evaluates
  apart: '' for none, '<spawn>' -> '_forced_spawn', a function of the
  root -> '_forced_<its __name__>'."""
  if not root_prefix:
    return ''
  if callable(root_prefix):
    return f'_forced_{root_prefix.__name__}'
  return '_forced_' + ''.join(c for c in root_prefix if c.isalnum())


def rl_config(flags: Flags, study: Study, run: Run, max_depth: int,
              overrides: Mapping[str, Any] | None = None
              ) -> ml_collections.ConfigDict:
  """An RL run's config: the study's, the arm's `overrides`, then the
  flags' `--rl_override`s (which win)."""
  return study_config(flags, study, {
      'seed': run.rl, 'rollout.budgets.max_depth': max_depth,
      **(overrides or {}), **dict(flags.rl_overrides)})


def rl_arm(flags: Flags, study: Study, name: str, seed: 'int | Run',
           max_depth: int, every_step: Mapping[str, EvalSpec],
           at_ends: Mapping[str, EvalSpec] | None = None,
           overrides: Mapping[str, Any] | None = None,
           eval_steps: Sequence[int] | None = None
           ) -> list[dict[str, Any]]:
  """RL from the study's SFT run `seed.sft` at depth budget `max_depth`
  (0: the single agent) with RL seed `seed.rl`, in the run
  `run_name(name, seed)`.

  The run stops at every step of `sizes(flags).eval_steps` whatever it
  evaluates there, so experiments that share it evaluate the same
  checkpoints, in any order.

  Args:
    every_step: tag -> (level, tasks, depth budget[, root prefix]): greedy
      trees of that many held-out tasks of the level, at each evaluation
      step (every root's first step forced to begin with the prefix, if
      one is given: `FrontierScheduler`'s `root_prefix`).
    at_ends: the same, at RL step 0 (the SFT policy) and the last only;
      every tag is also sampled `flags.samples` times at temperature 1
      at the ends.
    overrides: RL fields on top of the study's (an ablation).
    eval_steps: instead of `sizes(flags).eval_steps` (a run continued
      past the experiment's size, `matched_arm`).

  Returns:
    Per evaluation step: `rl_step`, the RL `seconds`, `sampled_tokens` and
    `total_tokens` spent until then, `trees` (tag -> the greedy
    evaluation's trees) and `samples` (tag -> a list of sampled
    evaluations' trees; at the ends only).
  """
  run = as_run(flags, seed)
  sft_dir = study_sft(flags, study, run.sft)
  config = rl_config(flags, study, run, max_depth, overrides)
  run_config = typed(config)
  steps = tuple(eval_steps or sizes(flags).eval_steps)
  at_ends = at_ends or {}
  tasks = {tag: examples(run_config, level, str(sft_dir / 'data'), num)
           for tag, (level, num, *_) in {**every_step, **at_ends}.items()}
  trees_per_step = run_config.rl.roots_per_step * run_config.rl.group_size

  def evaluate_at(rl_step, workdir):
    point = {'rl_step': rl_step,
             **rl_cost(workdir, rl_step, trees_per_step), 'trees': {},
             'samples': {}}
    end = rl_step in (steps[0], steps[-1])
    evaluations = {**every_step, **(at_ends if end else {})}
    # Step 0 is the SFT policy, the same for every RL seed: evaluated once.
    where = workdir if rl_step else sft_dir
    # Restored once a point, when a tag first needs it: every tag and
    # sample evaluates the same checkpoint (a restore and a new sampler
    # cost about a second and a half each on a 2-core CPU).
    restore = functools.cache(functools.partial(policy, run_config, where))
    for tag, (level, num, depth, *prefix) in evaluations.items():
      root_prefix = prefix[0] if prefix else ''
      forced = forced_tag(root_prefix)
      for sample in range(-1, flags.samples if end else 0):
        trees = evaluate(
            run_config, where,
            f'{level}{num}_depth{depth}{forced}_rl{rl_step}', tasks[tag],
            depth, step=run_config.sft.steps + rl_step, restore=restore,
            sample=sample, root_prefix=root_prefix)
        if sample < 0:
          point['trees'][tag] = trees
        else:
          point['samples'].setdefault(tag, []).append(trees)
    return point

  return rl_curve(flags, run_name(flags, name, run), config,
                  sft_dir, steps, evaluate_at)


# The documents agents: name -> (the study its SFT is, depth budget), RL'd
# as `efficiency.py` does; the other documents experiments evaluate the
# same runs. The single agent has its own SFT (`SINGLE`).
MIXTURE_ARMS = {'recursive': (MIXTURE, 8), 'single_agent': (SINGLE, 0)}


def mixture_arm(flags: Flags, arm: str, seed: 'int | Run',
                levels: Mapping[str, int] | None = None, name: str = '',
                overrides: Mapping[str, Any] | None = None,
                eval_steps: Sequence[int] | None = None
                ) -> list[dict[str, Any]]:
  """`rl_arm` for a `MIXTURE_ARMS` agent (run `efficiency_<arm>` unless
  `name`) at its own depth budget: held-out `mixed` tasks (tag 'mixed')
  at every evaluation step, and `levels` (level -> held-out tasks, each
  level its own tag) before and after RL."""
  study, depth = MIXTURE_ARMS[arm]
  return rl_arm(
      flags, study, name or f'efficiency_{arm}', seed, depth,
      {'mixed': ('mixed', sizes(flags).num_eval, depth)},
      {level: (level, num, depth) for level, num in (levels or {}).items()},
      overrides=overrides, eval_steps=eval_steps)


# What the RL steps logged (`metrics.jsonl`): sampled trees and the update.
SIGNAL = ('root_success', 'nodes_per_tree', 'success/depth0',
          'success/depth1', 'advantage_std', 'grad_norm', 'entropy')


def training_signal(flags: Flags, experiment: str,
                    results: Mapping[str, Any]) -> None:
  """Prints, per arm of `results` (runs `<experiment>_<arm>_seed<s>`) and
  RL step, the mean over seeds of what RL saw."""
  rows = []
  for arm in results:
    by_step: dict[int, list[dict]] = {}
    for seed in runs(flags):
      name = run_name(flags, f'{experiment}_{arm}', seed)
      records = [r for r in read_metrics(flags.workdir / name)
                 if r.get('phase') == 'rl']
      first = min((r['step'] for r in records), default=0)
      for record in records:
        by_step.setdefault(record['step'] - first + 1, []).append(record)
    for step, records in sorted(by_step.items()):
      rows.append([arm, step, *[
          sum(r.get(key, math.nan) for r in records) / len(records)
          for key in SIGNAL]])
  print('\nWhat RL saw: sampled trees and updates, mean over seeds\n')
  print(table(['agent', 'RL step', *SIGNAL], rows))


def over_seeds(points_by_seed: Mapping[int, Sequence[Mapping[str, Any]]],
               index: int, value: Callable[[Mapping[str, Any]], float]
               ) -> Estimate:
  """`value(point)` of evaluation `index` over seeds, NaNs left out (all
  NaN: NaN)."""
  values = [value(points[index]) for points in points_by_seed.values()]
  return estimate([v for v in values if not math.isnan(v)] or [math.nan])


def level_ends(points: Sequence[dict[str, Any]], tags: Sequence[str]
               ) -> list[dict[str, Any]]:
  """The SFT point and the last of an arm, each with `stats`: tag ->
  `tree_stats` of its trees, for `tags`."""
  ends = [dict(points[0]), dict(points[-1])]
  for point in ends:
    point['stats'] = {tag: tree_stats(point['trees'][tag]) for tag in tags}
  return ends


def level_metric(by_seed: Mapping[int, Sequence[Mapping[str, Any]]],
                 index: int, tag: str, key: str) -> Estimate:
  """A statistic of `level_ends` point `index` (0 SFT, 1 RL) over seeds."""
  return over_seeds(by_seed, index, lambda point: point['stats'][tag][key])


def level_success(results: Mapping[str, Mapping[int, Any]],
                  tags: Sequence[str]) -> dict[str, Any]:
  """The JSON line's root success: arm -> tag -> SFT and RL estimates."""
  return {arm: {tag: {
      'sft': level_metric(by_seed, 0, tag, 'root_success').to_json(),
      'rl': level_metric(by_seed, 1, tag, 'root_success').to_json()}
                for tag in tags} for arm, by_seed in results.items()}


def level_verdicts(results: Mapping[str, Mapping[int, Any]],
                   tags: Sequence[str]) -> dict[str, str]:
  """Per tag, the recursive agent's root success after RL against the
  single agent's (`compare`); printed and returned."""
  verdicts = {tag: compare(
      level_metric(results['single_agent'], 1, tag, 'root_success'),
      level_metric(results['recursive'], 1, tag, 'root_success'))
              for tag in tags}
  print(f'\nrecursive against single agent after RL: {verdicts}')
  return verdicts


def level_plot(flags: Flags, experiment: str, title: str, xlabel: str,
               x: Sequence[float], results: Mapping[str, Mapping[int, Any]],
               tags: Sequence[str]) -> str:
  """Root success against the tags (at `x`), a line per arm and policy."""
  curves = [Curve(f'{arm}, {when}', x, [
      [points[index]['stats'][tag]['root_success'] for tag in tags]
      for points in by_seed.values()])
            for arm, by_seed in results.items()
            for index, when in ((0, 'SFT'), (1, 'RL'))]
  return plot_panels(output_path(flags, experiment, 'png'),
                     title, [(xlabel, 'held-out root success', curves)])


def main(doc: str, experiment: str, run: Callable[[Flags], Any],
         report: Callable[[Flags, Any], dict[str, Any]],
         plot: Callable[[Flags, Any], str],
         argv: Sequence[str] | None = None, documents: bool = True,
         arms: Sequence[str] = ()) -> dict[str, Any]:
  """An experiment's command: runs it, prints its tables, draws its plot
  and prints, last, the JSON line (whose numbers it returns). `documents`
  and `arms`: as `parse_flags`'s."""
  flags = parse_flags(doc, argv, documents, arms)
  results = run(flags)
  numbers = report(flags, results)
  numbers['plot'] = plot(flags, results)
  print(headline(experiment, numbers), flush=True)
  return numbers
