"""The delegation protocol: prompt rendering, step text and step parsing.

A node reads a prompt and acts in steps. Every tag below is one token of
`ByteTokenizer(SPECIAL_TOKENS)`, so a tiny model sees each tag as a symbol::

  step    := [<think> TEXT </think>] action
  action  := <tool> NAME [' ' ARGS] </tool>
           | <spawn> child+ </spawn>        (children of one step: parallel)
           | <answer> TEXT </answer>
  child   := <task> TEXT </task> [<data> DATA </data>] [<format> TEXT </format>]
  DATA    := '@' START ':' END   (the slice [START, END) of the node's data,
                                  in characters, 0 <= START <= END <= len)
           | '#' I '/' N         (part I of N, 1 <= I <= N: the node's data
                                  cut into N runs of whole lines, as even
                                  as the line count allows; `split_parts`)
           | any other TEXT      (literal data handed to the child)

TEXT, NAME, ARGS and DATA never contain a tag; whitespace (spaces and
newlines) between elements is ignored, inside them it is kept.

Where a step ends, over any tokenization (`stops.StopRule`): a generated
step ends with the first token whose text completes a stop tag
(`</tool>`, `</spawn>` or `</answer>`, `STOP_TAGS`), however the tag was
split over tokens or merged with the text around it. That token is kept
with its log-prob, characters it carries past the tag included; tokens
sampled after it are discarded (the slot's sequence is rolled back to end
at it). The parser reads the step's text only up to the end of its first
stop tag (`step_end`). With the byte tokenizer every tag is one token and
the sampler also stops on it inside its decode loop. A step that reaches
its token budget or the window first ends there, reported as such. The
runtime then injects, with loss mask 0:

  after a tool call:  <obs> OBSERVATION </obs>
  after a spawn:      <obs><result> ANSWER 1 </result>...</obs>, once all
                      children are done (a failed child's result is its
                      failure text, e.g. 'error: sub-agent ran out of steps')
  after an error:     <obs>error: WHAT WENT WRONG</obs>, and the node goes on

A node's prompt (loss mask 0) is `<bos>` followed by `render_prompt(...)`::

  <task>TASK</task>[<format>FORMAT</format>]<data>DATA</data>
  budget: depth D, steps S, children C
  tools: USAGE; USAGE

(the format element only when the parent gave one), where DATA is inline
when at most `inline_chars` long, else a handle
`[N chars] HEAD...` (the node reads it with a tool or hands slices of it to
children). 'depth 0' means the node may not spawn: it must answer itself.

With a chat template (`chat.ChatFormat`) the same texts travel as chat
turns: the prompt as the first user turn (after a system turn holding
`preamble`, the protocol explained to a pretrained model, when enabled),
each step as an assistant turn and each injection as a user turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import re

from rao_jax.agent import env as env_lib

THINK, THINK_END = '<think>', '</think>'
TOOL, TOOL_END = '<tool>', '</tool>'
SPAWN, SPAWN_END = '<spawn>', '</spawn>'
ANSWER, ANSWER_END = '<answer>', '</answer>'
TASK, TASK_END = '<task>', '</task>'
DATA, DATA_END = '<data>', '</data>'
FORMAT, FORMAT_END = '<format>', '</format>'
OBS, OBS_END = '<obs>', '</obs>'
RESULT, RESULT_END = '<result>', '</result>'

# Order fixes the token ids of a ByteTokenizer: append, never reorder.
SPECIAL_TOKENS = (THINK, THINK_END, TOOL, TOOL_END, SPAWN, SPAWN_END, ANSWER,
                  ANSWER_END, TASK, TASK_END, DATA, DATA_END, FORMAT,
                  FORMAT_END, OBS, OBS_END, RESULT, RESULT_END)
# A step ends with one of these (the module doc: where a step ends).
STOP_TAGS = (TOOL_END, SPAWN_END, ANSWER_END)

_TAG_RE = re.compile('|'.join(re.escape(t) for t in SPECIAL_TOKENS))
_STOP_RE = re.compile('|'.join(re.escape(t) for t in STOP_TAGS))
_SLICE_RE = re.compile(r'@(\d+):(\d+)')
_PART_RE = re.compile(r'#(\d{1,4})/(\d{1,4})')
_NAME_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_\-]*')
_SPACE = ' \t\r\n'


# ---------------------------------------------------------------- Actions


@dataclasses.dataclass(frozen=True)
class ToolCall:
  """`<tool>NAME ARGS</tool>`: call the environment's tool NAME."""

  name: str
  args: str = ''
  thought: str = ''


@dataclasses.dataclass(frozen=True)
class ChildRequest:
  """One `<task>` of a spawn, before its data reference is resolved.

  Attributes:
    task: task text (non-empty).
    data_ref: '@START:END' (a slice of the parent's data) or literal data.
    format: expected answer format ('' when not given).
  """

  task: str
  data_ref: str = ''
  format: str = ''


@dataclasses.dataclass(frozen=True)
class Spawn:
  """`<spawn>child+</spawn>`: run the children in parallel, then resume."""

  children: tuple[ChildRequest, ...]
  thought: str = ''


@dataclasses.dataclass(frozen=True)
class Answer:
  """`<answer>TEXT</answer>`: end the node with TEXT."""

  text: str
  thought: str = ''


@dataclasses.dataclass(frozen=True)
class ParseError:
  """A step that does not follow the grammar; `error` is injected."""

  error: str
  thought: str = ''


Action = ToolCall | Spawn | Answer | ParseError


# ------------------------------------------------------- Writing steps


def _check_plain(text: str, what: str) -> str:
  if _TAG_RE.search(text):
    raise ValueError(f'{what} may not contain a protocol tag: {text!r}')
  return text


def think(text: str) -> str:
  """Reasoning before the action: `<think>text</think>`."""
  return THINK + _check_plain(text, 'thought') + THINK_END


def tool_call(name: str, args: str = '') -> str:
  """A tool call step action: `<tool>name args</tool>`."""
  if not _NAME_RE.fullmatch(name):
    raise ValueError(f'bad tool name {name!r}')
  _check_plain(args, 'tool arguments')
  return TOOL + name + (' ' + args if args else '') + TOOL_END


def answer(text: str) -> str:
  """The final action of a node: `<answer>text</answer>`."""
  return ANSWER + _check_plain(text, 'answer') + ANSWER_END


def data_slice(start: int, end: int) -> str:
  """A child's data as the slice [start, end) of the parent's data."""
  if not 0 <= start <= end:
    raise ValueError(f'bad slice {start}:{end}')
  return f'@{start}:{end}'


def data_part(index: int, count: int) -> str:
  """A child's data as part `index` (1-based) of `count` line runs.

  The runtime makes the cut (`split_parts`), so a policy can split data it
  only sees as a handle without doing arithmetic on offsets.
  """
  if not 1 <= index <= count:
    raise ValueError(f'bad part {index}/{count}')
  return f'#{index}/{count}'


def split_parts(data: str, count: int) -> list[str]:
  """data cut into `count` runs of whole lines (the last line may lack its
  newline); run k holds lines [k * L // count, (k + 1) * L // count) of the
  L lines, so runs differ by at most one line and may be empty when there
  are fewer lines than runs."""
  lines = data.splitlines(keepends=True)
  return [''.join(lines[k * len(lines) // count:
                        (k + 1) * len(lines) // count])
          for k in range(count)]


ChildLike = env_lib.NodeSpec | ChildRequest | tuple[str, str, str]


def spawn(children: Sequence[ChildLike]) -> str:
  """A spawn action; children run in parallel.

  Args:
    children: each a `NodeSpec` (its data handed over literally), a
      `ChildRequest`, or a (task, data_ref, format) tuple, where data_ref is
      `data_slice(start, end)`, `data_part(index, count)` or literal
      text.

  Returns:
    `<spawn><task>..</task>[<data>..</data>][<format>..</format>]..</spawn>`.
  """
  if not children:
    raise ValueError('spawn needs at least one child')
  parts = [SPAWN]
  for child in children:
    if isinstance(child, env_lib.NodeSpec):
      task, data_ref, fmt = child.task, child.data, child.format
    elif isinstance(child, ChildRequest):
      task, data_ref, fmt = child.task, child.data_ref, child.format
    else:
      task, data_ref, fmt = child
    if not task.strip():
      raise ValueError('a child needs a non-empty task')
    parts += [TASK, _check_plain(task, 'task'), TASK_END]
    if data_ref:
      parts += [DATA, _check_plain(data_ref, 'data'), DATA_END]
    if fmt:
      parts += [FORMAT, _check_plain(fmt, 'format'), FORMAT_END]
  parts.append(SPAWN_END)
  return ''.join(parts)


def observation(text: str) -> str:
  """Injected after a tool call or an error: `<obs>text</obs>`."""
  return OBS + text + OBS_END


def error(text: str) -> str:
  """An error observation: `<obs>error: text</obs>`."""
  return observation('error: ' + text)


def results(answers: Sequence[str]) -> str:
  """Injected when a spawn's children are done, one result per child."""
  return OBS + ''.join(RESULT + a + RESULT_END for a in answers) + OBS_END


def step_end(text: str) -> int | None:
  """The end of the first stop tag in `text` (an index into it), or None:
  a step's text counts up to there."""
  match = _STOP_RE.search(text)
  return None if match is None else match.end()


def strip_tags(text: str) -> str:
  """Drops protocol tags from text injected into a context (an answer
  that reaches a parent), so injections keep the grammar's structure."""
  return _TAG_RE.sub('', text)


# ---------------------------------------------------------------- Prompt


def shown_budgets(budgets: Mapping[str, int],
                  show_depth: bool = True) -> dict[str, int]:
  """The budgets a prompt's budget line shows: `budgets`, less the depth
  where it is hidden (the paper's prompt: a refused spawn tells it)."""
  return {k: v for k, v in budgets.items() if show_depth or k != 'depth'}


def render_data(data: str, inline_chars: int = 64, head_chars: int = 24
                ) -> str:
  """Data inline when short, else a handle with its length and head."""
  if len(data) <= inline_chars:
    return data
  return f'[{len(data)} chars] {data[:head_chars]}...'


def render_prompt(spec: env_lib.NodeSpec, budgets: Mapping[str, int],
                  tools: Sequence[env_lib.Tool], inline_chars: int = 64,
                  head_chars: int = 24) -> str:
  """The text of a node's prompt (the caller prepends the `<bos>` id).

  Args:
    spec: the node's task, data and format.
    budgets: remaining budgets shown to the node, in order, e.g.
      {'depth': 2, 'steps': 10, 'children': 4}.
    tools: the environment's tools (their usages are listed).
    inline_chars: data up to this length is shown whole.
    head_chars: length of the head shown in a data handle.

  Returns:
    Prompt text; tags in spec fields become tag tokens when encoded, so
    environments should keep them out of task text.
  """
  budget_text = ', '.join(f'{k} {v}' for k, v in budgets.items())
  tool_text = '; '.join(t.usage for t in tools) or 'none'
  format_text = f'{FORMAT}{spec.format}{FORMAT_END}' if spec.format else ''
  return (f'{TASK}{spec.task}{TASK_END}{format_text}'
          f'{DATA}{render_data(spec.data, inline_chars, head_chars)}'
          f'{DATA_END}\nbudget: {budget_text}\ntools: {tool_text}\n')


def preamble(tools: Sequence[env_lib.Tool]) -> str:
  """The protocol explained to a pretrained model: its actions, tools and
  injections, written with this module's own writers and tags so that it
  cannot drift from the grammar (the system turn of a chat template).

  Args:
    tools: the environment's tools, listed with their usages.
  """
  tool_lines = ''.join(f'\n  {TOOL}{t.usage}{TOOL_END}' for t in tools)
  child = spawn([('TASK', 'DATA', 'FORMAT')])
  return (
      'You are one agent of a recursive team. Each of your turns is one '
      f'step: optionally {think("REASONING")}, then exactly one action.\n'
      f'- Call a tool:{tool_lines or " (this task has none)"}\n'
      f'  Its output comes back as {observation("OUTPUT")}.\n'
      f'- Hand sub-tasks to copies of yourself: {child} (one {TASK} per '
      f'child, its {DATA} and {FORMAT} optional; children run in '
      f'parallel). Their answers come back together as '
      f'{results(["ANSWER 1", "ANSWER 2"])}.\n'
      f'- Finish: {answer("TEXT")} ends your work with TEXT as the answer.\n'
      f'A child\'s DATA is {data_slice(0, 100)} (characters 0 to 100 of '
      f'your data), {data_part(1, 2)} (the first of 2 runs of whole lines '
      'of it) or any other text, handed over as it is.\n'
      f'A step ends at {", ".join(STOP_TAGS)}. A malformed step comes back '
      f'as {error("WHAT WENT WRONG")}. The budget line of a task says how '
      'much deeper you may spawn (depth 0: answer yourself), how many steps '
      'you have left and how many children one spawn may have.')


# ---------------------------------------------------------------- Parsing


class _Malformed(Exception):
  pass


def _name(tag: str) -> str:
  # Error texts name tags without brackets: they are injected into a
  # context, where a tag token would break the grammar's structure.
  return tag.strip('</>') if not tag.startswith('</') else 'end of ' + (
      tag.strip('</>'))


def _skip_space(text: str, pos: int) -> int:
  while pos < len(text) and text[pos] in _SPACE:
    pos += 1
  return pos


def _block(text: str, pos: int, open_tag: str, close_tag: str
           ) -> tuple[str, int]:
  """Reads `open_tag BODY close_tag` at pos; BODY must hold no tag."""
  if not text.startswith(open_tag, pos):
    raise _Malformed(f'expected {_name(open_tag)}')
  start = pos + len(open_tag)
  tag = _TAG_RE.search(text, start)
  if tag is None:
    raise _Malformed(f'unclosed {_name(open_tag)}')
  if tag.group() != close_tag:
    raise _Malformed(f'{_name(tag.group())} inside {_name(open_tag)}')
  return text[start:tag.start()], tag.end()


def _optional_block(text: str, pos: int, open_tag: str, close_tag: str
                    ) -> tuple[str, int]:
  probe = _skip_space(text, pos)
  if text.startswith(open_tag, probe):
    return _block(text, probe, open_tag, close_tag)
  return '', pos


def _parse_children(text: str, pos: int) -> tuple[list[ChildRequest], int]:
  children = []
  while True:
    pos = _skip_space(text, pos)
    if text.startswith(SPAWN_END, pos):
      return children, pos + len(SPAWN_END)
    if pos >= len(text):
      raise _Malformed('unclosed spawn')
    if not text.startswith(TASK, pos):
      raise _Malformed('expected task or end of spawn')
    task, pos = _block(text, pos, TASK, TASK_END)
    if not task.strip():
      raise _Malformed(f'child {len(children) + 1}: empty task')
    data_ref, pos = _optional_block(text, pos, DATA, DATA_END)
    fmt, pos = _optional_block(text, pos, FORMAT, FORMAT_END)
    children.append(ChildRequest(task.strip(), data_ref, fmt.strip()))


def _parse(text: str) -> Action:
  thought, pos = _optional_block(text, 0, THINK, THINK_END)
  pos = _skip_space(text, pos)
  if text.startswith(TOOL, pos):
    body, pos = _block(text, pos, TOOL, TOOL_END)
    name, _, args = body.strip().partition(' ')
    if not _NAME_RE.fullmatch(name):
      raise _Malformed(f'bad tool name {name!r}')
    action = ToolCall(name, args.strip(), thought)
  elif text.startswith(ANSWER, pos):
    body, pos = _block(text, pos, ANSWER, ANSWER_END)
    action = Answer(body.strip(), thought)
  elif text.startswith(SPAWN, pos):
    children, pos = _parse_children(text, pos + len(SPAWN))
    if not children:
      raise _Malformed('spawn without a task')
    action = Spawn(tuple(children), thought)
  else:
    raise _Malformed('expected tool, spawn or answer')
  if text[pos:].strip(_SPACE):
    raise _Malformed('text after the action')
  return action


def parse_step(text: str) -> Action:
  """Parses one generated step; never raises.

  Args:
    text: the decoded step, from its first generated token on; only the
      text up to the end of its first stop tag is read (`step_end`).

  Returns:
    A `ToolCall`, `Spawn`, `Answer`, or a `ParseError` whose `error` says
    what was wrong (injected as `<obs>error: ...</obs>`).
  """
  end = step_end(text)
  try:
    return _parse(text if end is None else text[:end])
  except _Malformed as e:
    return ParseError(str(e))
  except Exception as e:  # pylint: disable=broad-except
    # The contract is "never raises"; a parser bug must not kill a rollout.
    return ParseError(f'unparseable step ({type(e).__name__})')


def resolve_child(child: ChildRequest, parent_data: str
                  ) -> env_lib.NodeSpec | str:
  """The child's spec, or an error text for a bad slice or part."""
  ref = child.data_ref.strip()
  match = _PART_RE.fullmatch(ref)
  if match is not None:
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
      return f'bad part #{index}/{count} (need 1 <= part <= parts)'
    return env_lib.NodeSpec(child.task, split_parts(parent_data, count)[
        index - 1], child.format)
  match = _SLICE_RE.fullmatch(ref)
  if match is None:
    return env_lib.NodeSpec(child.task, child.data_ref, child.format)
  start, end = int(match.group(1)), int(match.group(2))
  if not start <= end <= len(parent_data):
    return (f'bad slice @{start}:{end} (data has {len(parent_data)} '
            'chars)')
  return env_lib.NodeSpec(child.task, parent_data[start:end], child.format)
