"""The `python` action mode: a node acts by writing code, not tags.

A node's step is one fenced block of Python, after an optional thought::

  step := [<think> TEXT </think>] ```python NEWLINE CODE ```

run in the node's own namespace in a sandbox worker (`rao_jax.sandbox`),
which keeps its variables from one block to the next. Its input is the
variable `context`, never shown in its prompt: the prompt says how long it
is, and the code reads what it needs (`print(context[:200])`). The
namespace's functions (`sandbox.namespace`): `spawn(task, data, format)`
asks for a child and returns a handle, `wait(handles)` and `results` give
finished children's answers, `answer(value)` ends the node,
`split(text, n)` cuts text into runs of whole lines.

Where a step ends: at the first token whose decoded text completes a
block (`CodeStopRule`: an opening fence, a newline, then a closing
fence), however the fences were split over tokens; like the tag stop
rule, that token is kept and the rest discarded. The runtime then
injects, with loss mask 0 (`code_runtime`):

  after a block:          <obs> OUTPUT [cut note] [error: ...] </obs>
  after a block that      <obs> OUTPUT <result>ANSWER 1</result>... </obs>
  spawned, once every     (the answers are also in `results` for the
  child is done:          node's next block)
  after a malformed step: <obs>error: WHAT WENT WRONG</obs>

A block that calls `answer` ends the node there (children it asked for
are not started). The prompt (after `<bos>`)::

  <task>TASK</task>[<format>FORMAT</format>]<data>context: N chars</data>
  budget: depth D, steps S, children C
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import re

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib

FENCE = '```'
OPEN_FENCE = FENCE + 'python\n'
# An opening fence with any language word, its newline, code, a closing
# fence: the first complete block ends the step.
_BLOCK_RE = re.compile(r'```[A-Za-z0-9_+-]*\n(.*?)```', re.DOTALL)
_SPACE = ' \t\r\n'
FUNCTIONS = ('spawn(task, data, format)', 'wait(handles)', 'results',
             'answer(value)', 'split(text, n)')


@dataclasses.dataclass(frozen=True)
class Code:
  """A block of code to run in the node's namespace."""

  code: str
  thought: str = ''


CodeAction = Code | protocol.ParseError


class CodeStopRule:
  """The stop rule of the python mode over one tokenizer: the interface
  of `stops.StopRule` (`device_ids`, `host_find`, `find`)."""

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer):
    self.tokenizer = tokenizer
    self.tags = (FENCE,)

  # No single token spells a whole block: the rule runs on the host.
  device_ids: tuple[int, ...] = ()

  @property
  def host_find(self):
    return self.find

  def _ends(self, tokens: Sequence[int]) -> bool:
    return step_end(self.tokenizer.decode(tokens)) is not None

  def find(self, tokens: Sequence[int], checked: int = 0) -> int | None:
    """How many of a step's tokens it keeps, or None if it goes on.

    A block is not a fixed string, so the whole step is decoded (steps
    are a few hundred tokens at most); prefixes decode to prefixes, so
    the shortest prefix holding a block is found by bisection.
    """
    if not self._ends(tokens):
      return None
    low, high = checked, len(tokens)  # tokens[:low] go on, [:high] end
    while high - low > 1:
      middle = (low + high) // 2
      if self._ends(tokens[:middle]):
        high = middle
      else:
        low = middle
    return high


def step_end(text: str) -> int | None:
  """The end of the first complete block in text, or None."""
  match = _BLOCK_RE.search(text)
  return None if match is None else match.end()


def code_step(code: str, thought: str = '') -> str:
  """A step's text: an optional thought, then the fenced block."""
  if FENCE in code:
    raise ValueError('code may not contain a fence (```)')
  if thought and protocol.strip_tags(thought) != thought:
    raise ValueError(f'a thought may not contain a protocol tag: {thought!r}')
  code = code if code.endswith('\n') else code + '\n'
  head = protocol.think(thought) if thought else ''
  return head + OPEN_FENCE + code + FENCE


def parse_step(text: str) -> CodeAction:
  """Parses one generated step; never raises."""
  end = step_end(text)
  try:
    text = text if end is None else text[:end]
    thought, pos = '', 0
    probe = len(text) - len(text.lstrip(_SPACE))
    if text.startswith(protocol.THINK, probe):
      close = text.find(protocol.THINK_END, probe)
      if close < 0:
        return protocol.ParseError('unclosed think')
      thought = text[probe + len(protocol.THINK):close]
      pos = close + len(protocol.THINK_END)
    match = _BLOCK_RE.match(text, pos + len(text[pos:]) -
                            len(text[pos:].lstrip(_SPACE)))
    if match is None:
      return protocol.ParseError('expected a ```python block')
    return Code(match.group(1), thought)
  except Exception as e:  # pylint: disable=broad-except
    # The contract is "never raises"; a parser bug must not kill a rollout.
    return protocol.ParseError(f'unparseable step ({type(e).__name__})')


def render_prompt(spec: env_lib.NodeSpec, budgets: Mapping[str, int]) -> str:
  """The text of a node's prompt: its task, format and the length of its
  `context`, never the context itself."""
  budget_text = ', '.join(f'{k} {v}' for k, v in budgets.items())
  format_text = (f'{protocol.FORMAT}{spec.format}{protocol.FORMAT_END}'
                 if spec.format else '')
  return (f'{protocol.TASK}{spec.task}{protocol.TASK_END}{format_text}'
          f'{protocol.DATA}context: {len(spec.data)} chars'
          f'{protocol.DATA_END}\nbudget: {budget_text}\n')


def results(output: str, answers: Sequence[str]) -> str:
  """Injected when a block's children are done: its output, then one
  result per child."""
  return (protocol.OBS + output + ''.join(
      protocol.RESULT + a + protocol.RESULT_END for a in answers) +
          protocol.OBS_END)


def preamble() -> str:
  """The python mode explained to a pretrained model (a system turn)."""
  example = code_step("h = [spawn('TASK', part) for part in "
                      'split(context, 2)]')
  return (
      'You are one agent of a recursive team. Each of your turns is one '
      f'block of Python, optionally after {protocol.think("REASONING")}:\n'
      f'{code_step("print(context[:200])")}\n'
      'It runs in your own interpreter, which keeps your variables. Your '
      'input is the string `context` (the task says how long it is). What '
      'you print comes back as '
      f'{protocol.observation("OUTPUT")}. Functions: '
      f'{", ".join(FUNCTIONS)}. spawn hands a sub-task to a copy of '
      'yourself and returns a handle; the children of a block start when '
      f'it ends, in parallel, e.g.\n{example}\nand their answers come '
      f'back as {protocol.RESULT}ANSWER{protocol.RESULT_END} and in '
      '`results` (or wait(h)) in your next block. answer(value) ends your '
      'work. The budget line says how much deeper you may spawn (depth 0: '
      'answer yourself), how many steps you have left and how many '
      'children one block may spawn. Only pure-computation modules '
      'import; there are no files, network or processes.')
