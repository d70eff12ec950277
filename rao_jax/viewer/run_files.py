"""Reading what a run wrote: its tree files, metrics and tokenizer.

A workdir holds `trees/*.jsonl` (one call tree a line, `tree.save`),
`metrics.jsonl` (one record a logged step) and `config.json`. Tree files
are named by phase and step (`sft_000050`, `rl_000010`) or by evaluation
and level (`after_sft_moderate`, `after_rl_moderate`, `eval_moderate`).

The viewer works on the JSON records themselves (`Tree.to_json`), not on
`Tree` objects: a record keeps the `turns` a trainer stored with its own
tokenizer, and records without them get turns decoded here.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import os
import re
from typing import Any

from rao_jax.agent import protocol
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib

TRAINING_PHASES = ('sft', 'rl')
EVAL_PHASES = ('after_sft', 'after_rl', 'eval')
_TRAINING_RE = re.compile(r'(sft|rl)_(\d+)')
_EVAL_RE = re.compile(r'(after_sft|after_rl|eval)_(.+)')


@dataclasses.dataclass(frozen=True)
class TreeFile:
  """One saved tree file and what its name and the metrics say of it.

  Attributes:
    path: the file.
    name: its name without `.jsonl`.
    phase: 'sft', 'rl', 'after_sft', 'after_rl', 'eval', or '' for a name
      in neither form.
    level: the evaluated level ('' for training files).
    step: the trainer step it was written at (None if unknown).
    run_root_success: root success the metrics logged for it (over the
      whole step's batch or the whole evaluation, of which the file keeps a
      few trees); None if not logged.
  """

  path: str
  name: str
  phase: str
  level: str
  step: int | None
  run_root_success: float | None = None


def parse_name(name: str) -> tuple[str, str, int | None]:
  """(phase, level, step) from a tree file's name without `.jsonl`."""
  match = _TRAINING_RE.fullmatch(name)
  if match:
    return match.group(1), '', int(match.group(2))
  match = _EVAL_RE.fullmatch(name)
  if match:
    return match.group(1), match.group(2), None
  return '', '', None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` ([] when there is none)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  return _read_json_lines(path)


def list_tree_files(workdir: str) -> list[TreeFile]:
  """The tree files of a workdir, by step (evaluations after their step).

  Raises:
    FileNotFoundError: the workdir has no `trees/` folder.
  """
  trees_dir = os.path.join(workdir, 'trees')
  if not os.path.isdir(trees_dir):
    raise FileNotFoundError(f'{workdir}: no trees/ folder (is it a '
                            'rao_jax workdir?)')
  metrics = read_metrics(workdir)
  files = []
  for file_name in os.listdir(trees_dir):
    if not file_name.endswith('.jsonl'):
      continue
    name = file_name[:-len('.jsonl')]
    phase, level, step = parse_name(name)
    run_success = None
    if phase in TRAINING_PHASES:
      record = next((m for m in metrics if m.get('step') == step), {})
      run_success = record.get('root_success')
    elif phase:
      # An evaluation logs '<tag>/<level>/recursive/root_success' at the
      # step it ran; the file holds that evaluation's first trees.
      key = f'{phase}/{level}/recursive/root_success'
      record = next((m for m in reversed(metrics) if key in m), {})
      step, run_success = record.get('step'), record.get(key)
    files.append(TreeFile(os.path.join(trees_dir, file_name), name, phase,
                          level, step, run_success))
  phase_order = {p: i for i, p in enumerate(TRAINING_PHASES + EVAL_PHASES)}
  # A file of unknown step is an evaluation whose metrics are gone: last.
  files.sort(key=lambda f: (f.step if f.step is not None else float('inf'),
                            phase_order.get(f.phase, 99), f.name))
  return files


def default_file(files: Sequence[TreeFile]) -> TreeFile:
  """The file a viewer opens first: the newest RL step, else the newest."""
  if not files:
    raise ValueError('the workdir has no tree files')
  rl_files = [f for f in files if f.phase == 'rl']
  return (rl_files or list(files))[-1]


def run_tokenizer(workdir: str) -> tokenizer_lib.Tokenizer | None:
  """The tokenizer `<workdir>/config.json` names, where it can be rebuilt.

  Returns:
    The byte tokenizer for `tokenizer.kind='byte'`, the tokenizer in
    `tokenizer.path` for 'hf' when that path exists, else None (records
    without stored turns then show none).
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    config = json.load(f)
  spec = config.get('tokenizer') or {}
  if spec.get('kind') == 'byte':
    return tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  if spec.get('kind') == 'hf' and spec.get('path') and os.path.exists(
      spec['path']):
    return tokenizer_lib.HFTokenizer(spec['path'])
  return None


def workdir_of(trees_file: str) -> str | None:
  """The workdir a `<workdir>/trees/NAME.jsonl` file belongs to, if any."""
  trees_dir = os.path.dirname(os.path.abspath(trees_file))
  if os.path.basename(trees_dir) != 'trees':
    return None
  return os.path.dirname(trees_dir)


def read_trees(path: str, tokenizer: tokenizer_lib.Tokenizer | None = None
               ) -> list[dict[str, Any]]:
  """The tree records of a file, each node with a `turns` list.

  Args:
    path: a file written by `tree.save`.
    tokenizer: decodes the turns of nodes stored without them; None leaves
      their `turns` None.

  Raises:
    ValueError: a line is not a tree record (the record is named).
  """
  records = _read_json_lines(path)
  for index, record in enumerate(records):
    if not isinstance(record, dict) or not isinstance(
        record.get('nodes'), list) or not record['nodes']:
      raise ValueError(f'{path}: record {index + 1} is not a call tree (no '
                       'list of nodes)')
    for node in record['nodes']:
      if 'turns' in node:
        continue
      if tokenizer is None:
        node['turns'] = None
        continue
      try:
        node['turns'] = tree_lib.turns(tree_lib.Node.from_json(node),
                                       tokenizer)
      except (KeyError, TypeError) as e:
        raise ValueError(f'{path}: record {index + 1}: a node is not a '
                         f'call-tree node ({e!r})') from e
  return records


def root_success(trees: Sequence[dict[str, Any]]) -> float | None:
  """Mean root success of tree records (a root not done counts 0), as the
  trainer's metrics count it; None for no trees."""
  if not trees:
    return None
  scores = [(t['nodes'][0].get('success') or 0.0)
            if t['nodes'] and t['nodes'][0]['status'] == tree_lib.DONE
            else 0.0 for t in trees]
  return sum(scores) / len(scores)


def _read_json_lines(path: str) -> list[Any]:
  records = []
  with open(path, encoding='utf-8') as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{line_number}: not JSON ({e.msg})') from e
  return records
