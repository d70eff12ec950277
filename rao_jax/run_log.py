"""What a run writes as it goes: metrics, TensorBoard events, call trees.

`<workdir>/metrics.jsonl` holds one JSON record per logged step, `tb/` the
same scalars as TensorBoard events (tensorboardX: clu's writers would pull
in tensorflow), `trees/<name>.jsonl` sampled call trees, and at the end
`summary.json`, the run's evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
from typing import Any

import jax
import numpy as np
import tensorboardX

from rao_jax import config as config_lib
from rao_jax import plots
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib


class RunLog:
  """Writes metrics to TensorBoard and `metrics.jsonl`, trees to `trees/`."""

  def __init__(self, workdir: str, resume_step: int,
               tokenizer: tokenizer_lib.Tokenizer):
    """Opens the workdir's logs for a run that continues after
    `resume_step` (0: a fresh run); trees are saved with their turns
    decoded by `tokenizer`, so a viewer needs no tokenizer."""
    self.workdir = workdir
    self.tokenizer = tokenizer
    self.metrics_path = os.path.join(workdir, 'metrics.jsonl')
    # A resumed run rewrites what the killed one logged past its checkpoint.
    if os.path.exists(self.metrics_path):
      with open(self.metrics_path) as f:
        kept = [line for line in f
                if line.strip() and json.loads(line)['step'] <= resume_step]
      with open(self.metrics_path, 'w') as f:
        f.writelines(kept)
    self.writer = tensorboardX.SummaryWriter(os.path.join(workdir, 'tb'))
    os.makedirs(os.path.join(workdir, 'trees'), exist_ok=True)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """Appends one record; numeric values also go to TensorBoard."""
    record = {'step': step, **{k: _plain(v) for k, v in metrics.items()}}
    with open(self.metrics_path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in record.items():
      if isinstance(value, (int, float)) and name != 'step':
        self.writer.add_scalar(name, value, step)
    self.writer.flush()

  def trees(self, name: str, trees: Sequence[tree_lib.Tree]) -> None:
    """Saves trees as `trees/<name>.jsonl` (one tree a line)."""
    tree_lib.save(trees, os.path.join(self.workdir, 'trees', name + '.jsonl'),
                  self.tokenizer)

  def summary(self, config: config_lib.RunConfig, evals: dict[str, float],
              steps: int) -> dict[str, Any]:
    """Draws the run's plots into `plots/`, writes `summary.json` and prints
    root success per evaluation, level and agent; returns the summary."""
    summary = {'mode': config.mode, 'evals': evals, 'steps': steps,
               'plots': plots.plot_run(self.workdir)}
    with open(os.path.join(self.workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2, sort_keys=True)
    print('\nroot success (held-out split '
          f'{config.tasks.eval_split!r}, {config.tasks.num_eval} tasks a '
          'level)')
    for tag in sorted({k.split('/')[0] for k in evals}):
      for level in config.tasks.eval_levels:
        cells = [f'{name}={evals[key]:.3f}'
                 for name in ('recursive', 'recursive_eval_depth',
                              'single_agent')
                 if (key := f'{tag}/{level}/{name}/root_success') in evals]
        print(f'  {tag:10s} {level:8s} ' + '  '.join(cells))
    return summary

  def close(self) -> None:
    self.writer.close()


def _plain(value):
  """A JSON-able Python value of a scalar or array metric."""
  if isinstance(value, (np.ndarray, jax.Array)):
    value = value.item() if value.size == 1 else value.tolist()
  if isinstance(value, np.generic):
    value = value.item()
  return value
