"""Reference solvers of the documents family in the python action mode.

Both read records the way a policy must when records come in several
phrasings (`documents_prose`): by printing `context` and reading the
output, never by parsing it in code, since a parser written for the
phrasings seen does not generalise. The solvers compute their answers
from the text their node was shown (`view.observations`), so a
demonstration never teaches the impossible.

- `CodeDirectSolver` prints as much of its context as its window holds
  (`print(context[:N])`), then answers over the whole lines it saw.
- `CodeRecursiveSolver` hands halves of its context to children
  (`spawn(task, part) for part in split(context, 2)`) until a node's
  context is at most `leaf_chars` long (its prompt shows the length),
  which reads it whole; a parent combines its children's answers in code.
"""

from __future__ import annotations

from rao_jax.agent import code_protocol
from rao_jax.agent import env as env_lib
from rao_jax.tasks import context
from rao_jax.tasks import documents
from rao_jax.tasks import numbers

ANSWER_RESERVE = 40  # tokens kept free for the answer step
OUTPUT_CHARS = 2000  # `sandbox.Limits.output_chars`: a longer print is cut


def _answer(value: str) -> str:
  """`answer(7)` for a number, `answer('red')` for a label."""
  literal = value if numbers.is_number(value) else repr(value)
  return code_protocol.code_step(f'answer({literal})')


def prompt_tokens(view: env_lib.StepView, window: context.Window) -> int:
  """Tokens of a python-mode node's prompt, as the rollout builds it."""
  chat = window.format
  text = code_protocol.render_prompt(view.spec,
                                     context.prompt_budgets(view, window))
  return len(chat.prompt_ids(chat.start(text, ())))


class CodeDirectSolver:
  """Prints what its window holds of its context, then answers."""

  def __init__(self, window: context.Window):
    self.window = window

  def _readable(self, view: env_lib.StepView) -> int:
    """Characters of context the first print may show: its step and its
    observation fit the window with room for the answer."""
    data = view.spec.data
    budget = (self.window.max_tokens - prompt_tokens(view, self.window) -
              ANSWER_RESERVE)

    def cost(end: int) -> int:
      step = code_protocol.code_step(f'print(context[:{end}])')
      return (context.step_tokens(step, self.window) +
              context.observation_tokens(data[:end], self.window))

    end = min(len(data), OUTPUT_CHARS)
    # A character is at most one token for ASCII text (the byte
    # tokenizer's, a BPE's): start from what that bound allows.
    end = max(0, min(end, budget - cost(0)))
    while end and cost(end) > budget:
      end -= 1
    return end

  def __call__(self, view: env_lib.StepView) -> str:
    parsed = documents.parse_task(view.spec.task)
    if parsed is None:
      return _answer('cannot parse the task')
    data = view.spec.data
    if view.step == 0:
      end = self._readable(view)
      if end >= len(data):
        return code_protocol.code_step('print(context)')
      return code_protocol.code_step(f'print(context[:{end}])')
    seen = view.observations[0] if view.observations else ''
    if seen.startswith('error:'):
      seen = ''
    elif len(seen) < len(data.rstrip('\n')):
      seen = seen[:seen.rfind('\n') + 1]  # a cut last line is not read
    return _answer(documents.solve(*parsed, seen))


def _combine_code(kind: str) -> str:
  """The parent's block that combines its children's answers."""
  if kind in ('count', 'sum'):
    return 'answer(sum(map(int, wait(h))))'
  total = ('t = {}\nfor r in wait(h):\n  w = r.split()\n'
           '  for k, v in zip(w[::2], w[1::2]):\n'
           '    t[k] = t.get(k, 0) + int(v)\n')
  if kind == 'tally':
    return total + "answer(' '.join(f'{k} {v}' for k, v in t.items()))"
  return total + 'answer(max(t, key=t.get))'


class CodeRecursiveSolver:
  """Splits its context in `fanout` runs of lines down to `leaf_chars`,
  then reads (the module doc)."""

  def __init__(self, window: context.Window, leaf_chars: int = 64,
               fanout: int = 2):
    if leaf_chars < 1 or fanout < 2:
      raise ValueError('need leaf_chars >= 1 and fanout >= 2')
    self.window = window
    self.leaf_chars = leaf_chars
    self.fanout = fanout
    self.direct = CodeDirectSolver(window)

  def __call__(self, view: env_lib.StepView) -> str:
    parsed = documents.parse_task(view.spec.task)
    if parsed is None:
      return _answer('cannot parse the task')
    kind, args = parsed
    data = view.spec.data
    if (len(data) <= self.leaf_chars or view.budgets.get('depth', 0) <= 0
        or (view.step > 0 and not view.children_answers)):
      return self.direct(view)  # a leaf, or a node that never spawned
    if view.step == 0:
      child_kind = kind if kind in ('count', 'sum') else 'tally'
      child_task = ' '.join((child_kind,) + args)
      return code_protocol.code_step(
          f'h = [spawn({child_task!r}, p) for p in split(context, '
          f'{self.fanout})]')
    return code_protocol.code_step(_combine_code(kind))
