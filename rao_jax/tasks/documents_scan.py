"""Documents with a window-sized `scan` tool: when to delegate, learnable.

The documents family's data and questions (the same `rao_documents`
dataset), with one more tool: `scan TASK START END` answers any question
of the grammar over a slice of at most `SCAN_CHARS` characters, the 8
records a direct reader holds in `cpu_tiny`'s 256-token window (the
`window*` levels' unit). Inside that window a direct answer takes two
steps a tiny model learns exactly: scan the whole data with the node's
own task, copy the result. Beyond it one scan covers the first window
only (a truncated answer, as the direct reader of `documents` gives), so
only delegating answers exactly. Whether to delegate then depends on the
input's length alone, with a crossover at the window that RL can find
(claim 5: `benchmarks/claims/delegation.py --task=documents_scan`).

A scan is what a one-line program over the slice computes in the python
action mode, where a node runs code over its data anyway: this family has
reference solvers for the tag mode only.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.tasks import context
from rao_jax.tasks import documents
from rao_jax.tasks import numbers
from rao_jax.tasks import registry

# One window of records: what `documents.DirectSolver` reads in cpu_tiny.
SCAN_CHARS = documents.DIRECT_RECORDS * 10


def _scan(data: str, args: str) -> env_lib.ToolResult:
  """'sum ana 0 80' -> the answer to 'sum ana' over data[0:80]."""
  parts = args.split()
  parsed = documents.parse_task(' '.join(parts[:-2])) if len(parts) > 2 else (
      None)
  if parsed is None or not all(numbers.is_number(p, 9) for p in parts[-2:]):
    return env_lib.ToolResult('usage: scan TASK START END', error=True)
  start, end = int(parts[-2]), int(parts[-1])
  return documents.range_refusal('scan', data, start, end, SCAN_CHARS) or (
      env_lib.ToolResult(documents.solve(*parsed, data[start:end])))


TOOLS = documents.TOOLS + (env_lib.Tool('scan', 'scan TASK START END', _scan),)


def make_env(example: Mapping[str, str]) -> documents.DocumentEnv:
  """The documents environment of `example`, offering `scan` as well."""
  return dataclasses.replace(documents.make_env(example), offered=TOOLS)


class DirectSolver:
  """Answers inline data itself; otherwise scans the first window of whole
  records with its own task and copies the result (beyond the window, the
  first window's answer: it truncates)."""

  def __init__(self, window: context.Window):
    self.window = window

  def __call__(self, view: env_lib.StepView) -> str:
    parsed = documents.parse_task(view.spec.task)
    if parsed is None:
      return protocol.answer('cannot parse the task')
    data = context.visible_data(view, self.window)
    if data is not None:
      return protocol.answer(documents.solve(*parsed, data))
    if view.step == 0:
      width = documents.record_chars(
          context.visible_head(view, self.window)) or 1
      end = min(len(view.spec.data), SCAN_CHARS) // width * width
      task = ' '.join((parsed[0],) + parsed[1])
      return protocol.tool_call('scan', f'{task} 0 {end}')
    seen = view.observations[-1]
    return protocol.answer('unknown' if seen.startswith('error:') else seen)


def recursive_solver(window: context.Window) -> documents.RecursiveSolver:
  """The documents recursive solver (2-record leaves, answered inline)
  whose direct fallback (no depth left, no record width) scans."""
  return documents.RecursiveSolver(window, direct=DirectSolver(window))


TASK = registry.register(registry.Task(
    name='documents_scan', tfds_name=documents.TASK.tfds_name,
    builder=documents.RaoDocuments, make_env=make_env,
    recursive_solver=recursive_solver, direct_solver=DirectSolver,
    levels=documents.TASK.levels))
