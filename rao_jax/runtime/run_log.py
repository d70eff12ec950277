"""What a run writes as it goes: metrics, TensorBoard events, call trees.

`<workdir>/metrics.jsonl` holds one JSON record per logged step, `tb/` the
same scalars as TensorBoard events (tensorboardX: clu's writers would pull
in tensorflow), `trees/<name>.jsonl` sampled call trees, and at the end
`summary.json`, the run's evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import tensorboardX
import tqdm

from rao_jax import config as config_lib
from rao_jax.runtime import errors
from rao_jax.runtime import multihost
from rao_jax.viewer import plots
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib


class RunLog:
  """Writes metrics to TensorBoard and `metrics.jsonl`, trees to `trees/`.

  Only the primary process writes; on the others every method is a no-op,
  so callers need not know how many processes run. On a remote workdir
  (gs://), which cannot be appended to, `metrics.jsonl` is rewritten whole
  at each `flush` (the trainer flushes with every checkpoint) and at
  `close`.
  """

  def __init__(self, workdir: epath.PathLike, resume_step: int,
               tokenizer: tokenizer_lib.Tokenizer):
    """Opens the workdir's logs for a run that continues after
    `resume_step` (0: a fresh run); trees are saved with their turns
    decoded by `tokenizer`, so a viewer needs no tokenizer."""
    workdir = self.workdir = epath.Path(workdir)
    self.tokenizer = tokenizer
    self.primary = multihost.is_primary()
    self.metrics_path = workdir / 'metrics.jsonl'
    self._remote = '://' in str(workdir)
    self._lines: list[str] = []
    if not self.primary:
      return
    # A resumed run rewrites what the killed one logged past its checkpoint.
    if self.metrics_path.exists():
      self._lines = [
          line for line, record in read_records(self.metrics_path)
          if record['step'] <= resume_step]
      self.metrics_path.write_text(''.join(line + '\n' for line in self._lines))
    self.writer = tensorboardX.SummaryWriter(str(workdir / 'tb'))
    (workdir / 'trees').mkdir(parents=True, exist_ok=True)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """Appends one record; numeric values also go to TensorBoard."""
    if not self.primary:
      return
    record = {'step': step, **{k: _plain(v) for k, v in metrics.items()}}
    self._lines.append(json.dumps(record))
    if not self._remote:
      with self.metrics_path.open('a') as f:
        f.write(self._lines[-1] + '\n')
    for name, value in record.items():
      if isinstance(value, (int, float)) and name != 'step':
        self.writer.add_scalar(name, value, step)
    self.writer.flush()

  def step(self, log_config: config_lib.LogConfig, phase: str, step: int,
           metrics: dict[str, Any], trees: Sequence[tree_lib.Tree],
           total_steps: int) -> None:
    """A trainer step's metrics every `log.every_steps` (and at the last
    step), its first trees every `log.trees_every_steps`."""
    if step % log_config.every_steps == 0 or step == total_steps:
      self.write(step, metrics)
      if log_config.trees_every_steps and (
          step % log_config.trees_every_steps == 0):
        self.trees(f'{phase}_{step:06d}', trees[:8])

  def flush(self) -> None:
    """Makes `metrics.jsonl` hold every record so far."""
    if self.primary and self._remote:
      self.metrics_path.write_text(''.join(line + '\n' for line in self._lines))

  def trees(self, name: str, trees: Sequence[tree_lib.Tree]) -> None:
    """Saves trees as `trees/<name>.jsonl` (one tree a line)."""
    if not self.primary:
      return
    with (self.workdir / 'trees' / (name + '.jsonl')).open(
        'w', encoding='utf-8') as f:
      tree_lib.write_jsonl(trees, f, self.tokenizer)

  def summary(self, mode: str, tasks: config_lib.TasksConfig,
              evals: dict[str, float], steps: int,
              export: str | None = None, draw: bool = True
              ) -> dict[str, Any]:
    """Draws the run's plots into `plots/` (a local workdir's, if `draw`),
    writes `summary.json` (the mode, the evaluations, the steps, the
    exported directory) and prints root success per evaluation, level of
    `tasks.eval_levels` and agent; returns the summary."""
    summary = {'mode': mode, 'evals': evals, 'steps': steps}
    if export:
      summary['export'] = export  # the Hugging Face directory
    if not self.primary:
      return summary
    self.flush()  # the plots read metrics.jsonl
    summary['plots'] = plots.plot_run(str(self.workdir)) if (
        draw and not self._remote) else []
    (self.workdir / 'summary.json').write_text(
        json.dumps(summary, indent=2, sort_keys=True))
    print('\nroot success (held-out split '
          f'{tasks.eval_split!r}, {tasks.num_eval} tasks a level)')
    for tag in sorted({k.split('/')[0] for k in evals}):
      for level in tasks.eval_levels:
        cells = [f'{name}={evals[key]:.3f}'
                 for name in ('recursive', 'recursive_eval_depth',
                              'single_agent')
                 if (key := f'{tag}/{level}/{name}/root_success') in evals]
        print(f'  {tag:10s} {level:8s} ' + '  '.join(cells))
    return summary

  def close(self) -> None:
    if self.primary:
      self.flush()
      self.writer.close()


def read_records(path: epath.Path) -> list[tuple[str, dict[str, Any]]]:
  """(line, record) of each line of a `metrics.jsonl`.

  A process killed while appending leaves the last line cut short; it is
  dropped, with a warning: the checkpoint, not the log, says which steps
  happened, and the resumed run logs them again. A bad line anywhere else
  is no kill's doing and is refused, naming it.
  """
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  records = []
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(
          record.get('step'), int):
        raise ValueError('no "step"')
    except ValueError as e:  # JSONDecodeError is a ValueError
      if number < len(lines):
        raise errors.Refusal(
            f'{path}:{number}: not a metrics record ({e}); only the last '
            'line may be cut short by a kill. Fix or remove the line, or '
            'pass --start_over.') from None
      logging.warning('%s: dropped its last line, cut short (%d chars) by '
                      'a killed run; the checkpoint says which steps '
                      'happened', path, len(line))
      break
    records.append((line, record))
  return records


def progress_bar(label: str, enabled: bool, start_step: int,
                 total_steps: int) -> tqdm.tqdm:
  """The steps to run, labelled, on the primary's console if `enabled`
  (`log.progress_bar`)."""
  return tqdm.tqdm(range(start_step + 1, total_steps + 1),
                   initial=start_step, total=total_steps, desc=label,
                   dynamic_ncols=True,
                   disable=not (enabled and multihost.is_primary()))


def progress_fields(phase: str, metrics: dict[str, Any],
                    evals: dict[str, float]) -> dict[str, str]:
  """The progress bar's fields: the phase, the loss and what the model
  scores: in RL its sampled trees' root success, and the latest
  evaluation (SFT's trees are the solver's, whose score says nothing of
  the model)."""
  fields = {'phase': phase, 'loss': f'{metrics["loss"]:.3f}'}
  if phase == 'rl':
    fields['sampled'] = f'{metrics["root_success"]:.2f}'
  recursive = [v for k, v in evals.items()
               if k.endswith('/recursive/root_success')]
  if recursive:
    fields['eval'] = f'{recursive[-1]:.2f}'
  return fields


def _plain(value):
  """A JSON-able Python value of a scalar or array metric."""
  if isinstance(value, (np.ndarray, jax.Array)):
    value = value.item() if value.size == 1 else value.tolist()
  if isinstance(value, np.generic):
    value = value.item()
  return value
