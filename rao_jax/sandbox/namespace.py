"""What model code sees: a node's namespace and the functions in it.

A node's code runs in its own namespace, kept across its blocks:

  context              the node's input (its data), a str
  spawn(task, data='', format='') -> int
                       asks for a child (a copy of the policy) on `task`
                       with `data` as its context; returns a handle. The
                       children of a block start when the block has run to
                       its end, in parallel; the node waits for them.
  wait(handle | handles) -> str | list[str]
                       the answer of a finished child (its failure text,
                       'error: ...', if it failed); a child asked for in
                       this very block has not run yet: an error says so.
  results              every finished child's answer, by handle
  answer(value)        ends the node with str(value) as its answer
  split(text, n)       text cut into n runs of whole lines
  print(...)           what it prints comes back as the observation

Only the modules of the allow-list import; `open`, `exec`, `eval`,
`compile`, `input` and `breakpoint` are gone. These Python-level limits
keep honest code on its path; `confine` is what holds against dishonest
code. Standard library only: the worker loads it before confining itself.
"""

from __future__ import annotations

import builtins
import io
from typing import Any

# Builtins model code does not get: file and code loading, interaction.
REMOVED_BUILTINS = ('open', 'exec', 'eval', 'compile', 'input', 'breakpoint',
                    'help', 'exit', 'quit', '__import__', 'memoryview')


class Answered(BaseException):
  """Raised by `answer`: the block stops there. A BaseException, so a
  bare `except Exception` in model code does not swallow it."""


class BoundedWriter(io.TextIOBase):
  """A stdout that keeps its first `limit` characters and counts the
  rest, so an output flood costs neither memory nor pipe bandwidth."""

  def __init__(self, limit: int):
    super().__init__()
    self.limit = limit
    self.parts: list[str] = []
    self.kept = 0
    self.dropped = 0

  def write(self, text: str) -> int:
    text = str(text)
    room = self.limit - self.kept
    if room > 0:
      self.parts.append(text[:room])
      self.kept += min(room, len(text))
    self.dropped += max(0, len(text) - max(room, 0))
    return len(text)

  def getvalue(self) -> str:
    return ''.join(self.parts)


def split(text: str, n: int) -> list[str]:
  """text cut into n runs of whole lines (`protocol.split_parts`)."""
  if not isinstance(text, str) or not isinstance(n, int) or n < 1:
    raise ValueError('split(text, n) needs a str and an int n >= 1')
  lines = text.splitlines(keepends=True)
  return [''.join(lines[k * len(lines) // n:(k + 1) * len(lines) // n])
          for k in range(n)]


class NodeState:
  """One node's namespace and its pending requests."""

  def __init__(self, context: str, modules: dict[str, Any],
               answer_chars: int):
    self.modules = modules
    self.answer_chars = answer_chars
    self.results: list[str] = []
    self.num_children = 0  # handles given out so far
    self.pending: list[dict[str, str]] = []
    self.answer: str | None = None
    safe = {k: v for k, v in vars(builtins).items()
            if k not in REMOVED_BUILTINS}
    safe['__import__'] = self._import
    self.globals: dict[str, Any] = {
        '__builtins__': safe, '__name__': '__node__', 'context': context,
        'spawn': self.spawn, 'wait': self.wait, 'answer': self.answer_with,
        'split': split, 'results': self.results}

  def _import(self, name, globals_=None, locals_=None, fromlist=(),
              level=0):
    del globals_, locals_
    if level or name not in self.modules:
      allowed = ', '.join(sorted(self.modules))
      raise ImportError(f'import of {name!r} is not allowed (allowed: '
                        f'{allowed})')
    module = self.modules[name]
    if not fromlist and '.' in name:
      return self.modules[name.partition('.')[0]]
    return module

  def spawn(self, task: str, data: str = '', format: str = '') -> int:  # pylint: disable=redefined-builtin
    """Asks for a child; its handle indexes `results`."""
    for what, value in (('task', task), ('data', data), ('format', format)):
      if not isinstance(value, str):
        raise TypeError(f'spawn: {what} must be a str, not '
                        f'{type(value).__name__}')
    if not task.strip():
      raise ValueError('spawn: a child needs a non-empty task')
    self.pending.append({'task': task.strip(), 'data': data,
                         'format': format.strip()})
    self.num_children += 1
    return self.num_children - 1

  def wait(self, handles):
    """A finished child's answer, or a list of them."""
    if isinstance(handles, (list, tuple)):
      return [self.wait(h) for h in handles]
    if not isinstance(handles, int) or not 0 <= handles < self.num_children:
      raise ValueError(f'wait: {handles!r} is not a handle from spawn')
    if handles >= len(self.results):
      raise RuntimeError(
          f'wait: child {handles} has not run yet; children start when '
          'this block ends and their answers are in the next block')
    return self.results[handles]

  def answer_with(self, value: Any) -> None:
    """Ends the node with str(value)."""
    self.answer = str(value)[:self.answer_chars]
    raise Answered()
