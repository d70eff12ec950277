"""Long-document aggregation (after Oolong): questions over many records.

A document is fixed-width records, one per line, 'SPEAKER LABEL VALUE'
('kim red 4\n', 10 characters), so any node can cut it on record
boundaries from the head its prompt shows. Lengths run from inside one
512-token window to 16-32 windows beyond it: easy 8-30 records, medium
100-200 (2-4 windows), hard 400-820 (8-16), extreme 820-1640 (16-32).
`moderate` (26-60 records, 260-600 characters) is longer than one window
of `cpu_tiny`'s 256 tokens yet cheap enough to train on with a CPU, and
its totals stay in the two-digit range a tiny model sees in `easy`
demonstrations. `mixed` (2-32 records) and `window1`, `window4`,
`window16` (5-8, 29-32, 125-128 records) are measured in what a direct
reader holds in that window (8 records; `WINDOW_LEVELS`). Task grammar
(the same for roots and children):

  count LABEL          lines with that label            -> an integer
  sum SPEAKER          sum of that speaker's values      -> an integer
  tally L1 L2 ..       count per label ('red 3 tan 0')   -> label counts
  most L1 L2 ..        the most frequent of the labels   -> a label
  more L1 L2           the more frequent of the two      -> a label

Tools: `read START END` shows a slice of the node's own data; `add N N`
sums integers, the parents' arithmetic (a language model would run code
for it; a tiny one learns to copy numbers long before it learns to add
two-digit ones, docs/results.md). Scoring:
numbers get Oolong's partial credit 0.75 ** |error|, a tally the mean of
its labels' credits, labels must match exactly. Any task in this grammar
is checkable on its own data, so every child is verifiable.
"""

from __future__ import annotations

from collections.abc import Mapping
import collections
import dataclasses
import json
import random
import re

import tensorflow_datasets as tfds

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import context
from rao_jax.tasks import numbers
from rao_jax.tasks import registry

SPEAKERS = ('ana', 'bob', 'kim', 'zoe')
LABELS = ('red', 'tan', 'blu')
MAX_READ_CHARS = 2048  # a read longer than any window is refused
_RECORD_RE = re.compile(rf'(\S+) (\S+) ({numbers.DIGITS}+)')
# The same fact in other words (`documents_prose`): a record of speaker S,
# label L and value V may read as any of these. Each one's fields are
# named, so the parser below reads them all; the first is the plain one.
PHRASINGS = ('{s} {l} {v}', '{s}: {l}, {v}', '{v} for {s} ({l})',
             '{l} by {s}, worth {v}', '{s} logged a {l} {v}',
             '{s} - {v} - {l}')
_PHRASING_RES = tuple(
    re.compile(re.escape(p).replace(r'\{s\}', r'(?P<s>[a-z]+)')
               .replace(r'\{l\}', r'(?P<l>[a-z]+)')
               .replace(r'\{v\}', rf'(?P<v>{numbers.DIGITS}{{1,6}})'))
    for p in PHRASINGS[1:])
_WORD = r'[a-z]{1,12}'
_TASK_RE = re.compile(rf'(count|sum|tally|most|more)((?: {_WORD})+)')
FORMATS = {'count': 'an integer', 'sum': 'an integer',
           'tally': 'label counts', 'most': 'a label', 'more': 'a label'}

# -------------------------------------------------------------- Questions


def parse_task(task: str) -> tuple[str, tuple[str, ...]] | None:
  """'tally red tan' -> ('tally', ('red', 'tan')); None if not in grammar."""
  match = _TASK_RE.fullmatch(task.strip())
  if match is None:
    return None
  kind, args = match.group(1), tuple(match.group(2).split())
  arity_ok = {'count': len(args) == 1, 'sum': len(args) == 1,
              'more': len(args) == 2}.get(kind, len(set(args)) == len(args))
  return (kind, args) if arity_ok else None


def _record(line: str) -> tuple[str, str, int] | None:
  """A line's record, in any of the `PHRASINGS`, or None."""
  # The other phrasings first: the plain pattern's \S+ would also take
  # 'kim: blu, 9' with its punctuation.
  for pattern in _PHRASING_RES:
    match = pattern.fullmatch(line)
    if match is not None:
      return match.group('s'), match.group('l'), int(match.group('v'))
  match = _RECORD_RE.fullmatch(line)
  if match is None or len(match.group(3)) > 6:
    return None
  return match.group(1), match.group(2), int(match.group(3))


def records(text: str) -> list[tuple[str, str, int]]:
  """The well-formed records of text, in any phrasing; other lines are
  skipped."""
  found = []
  for line in text.split('\n'):
    record = _record(line.strip())
    if record is not None:
      found.append(record)
  return found


def tally(rows: list[tuple[str, str, int]], labels: tuple[str, ...]
          ) -> dict[str, int]:
  counts = collections.Counter(label for _, label, _ in rows)
  return {label: counts[label] for label in labels}


def format_tally(counts: Mapping[str, int]) -> str:
  return ' '.join(f'{label} {n}' for label, n in counts.items())


def parse_tally(text: str) -> dict[str, int]:
  """'red 3 tan 0' -> {'red': 3, 'tan': 0}; malformed pairs are dropped."""
  words = text.split()
  return {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)
          if numbers.is_number(words[i + 1], 9)}


def most_frequent(counts: Mapping[str, int]) -> str:
  """The label with the highest count (the first one on ties)."""
  return max(counts, key=lambda label: counts[label]) if counts else ''


def solve(kind: str, args: tuple[str, ...], text: str) -> str:
  """The exact answer of a task over text."""
  rows = records(text)
  if kind == 'count':
    return str(sum(label == args[0] for _, label, _ in rows))
  if kind == 'sum':
    return str(sum(value for speaker, _, value in rows if speaker == args[0]))
  if kind == 'tally':
    return format_tally(tally(rows, args))
  return most_frequent(tally(rows, args))  # most, more


def _numeric_credit(answer: str, gold: int) -> float:
  answer = answer.strip()
  if not numbers.is_number(answer, 9):
    return 0.0
  return 0.75 ** abs(int(answer) - gold)


def score(kind: str, args: tuple[str, ...], answer: str, gold: str) -> float:
  """Oolong-style credit of answer against the gold answer."""
  if kind in ('count', 'sum'):
    return _numeric_credit(answer, int(gold))
  if kind == 'tally':
    got, want = parse_tally(answer), parse_tally(gold)
    return sum(_numeric_credit(str(got[k]), want[k]) if k in got else 0.0
               for k in args) / len(args)
  return float(answer.strip().lower() == gold)


# ------------------------------------------------------------ Environment


def _read(data: str, args: str) -> env_lib.ToolResult:
  parts = args.split()
  if len(parts) != 2 or not all(
      numbers.is_number(p, 9) for p in parts):
    return env_lib.ToolResult('usage: read START END', error=True)
  start, end = int(parts[0]), int(parts[1])
  refused = range_refusal('read', data, start, end, MAX_READ_CHARS)
  if refused:
    return refused
  # An empty observation would read as a missing one.
  return env_lib.ToolResult(data[start:end] or '(empty slice)')


def range_refusal(tool: str, data: str, start: int, end: int,
                  most: int) -> env_lib.ToolResult | None:
  """The error a slice tool gives for [start, end) outside the data or
  longer than `most` characters; None for a slice it may take."""
  if not start <= end <= len(data):
    return env_lib.ToolResult(
        f'bad range {start} {end} (data has {len(data)} chars)', error=True)
  if end - start > most:
    return env_lib.ToolResult(f'{tool} at most {most} chars', error=True)
  return None


MAX_ADD_TERMS = 16


def _add(data: str, args: str) -> env_lib.ToolResult:
  del data  # arithmetic needs no document
  terms = args.split()
  if not 0 < len(terms) <= MAX_ADD_TERMS or not all(
      numbers.is_number(t, 9) for t in terms):
    return env_lib.ToolResult(
        f'usage: add N N (1 to {MAX_ADD_TERMS} integers)', error=True)
  return env_lib.ToolResult(str(sum(int(t) for t in terms)))


TOOLS = (env_lib.Tool('read', 'read START END', _read),
         env_lib.Tool('add', 'add N N', _add))


@dataclasses.dataclass
class DocumentEnv:
  """A question over a document; a node's state is its own data.

  Works for any question/document/answer triple: roots outside the task
  grammar are scored exactly (numbers with partial credit), children
  outside it are not checkable (None).
  """

  task: str
  document: str
  answer: str
  format: str = ''
  offered: tuple[env_lib.Tool, ...] = TOOLS  # `documents_scan` adds one

  def root_spec(self) -> env_lib.NodeSpec:
    return env_lib.NodeSpec(self.task, self.document, self.format)

  def tools(self) -> tuple[env_lib.Tool, ...]:
    return self.offered

  def root_state(self) -> str:
    return self.document

  def child_state(self, parent_state: str, spec: env_lib.NodeSpec) -> str:
    del parent_state
    return spec.data

  def score_root(self, answer: str, state: str) -> float:
    del state
    parsed = parse_task(self.task)
    if parsed is not None:
      return score(*parsed, answer, self.answer)
    gold = self.answer.strip()
    if numbers.is_number(gold, 9):
      return _numeric_credit(answer, int(gold))
    return float(answer.strip().lower() == gold.lower())

  def score_subtask(self, spec: env_lib.NodeSpec, answer: str,
                    state: str) -> float | None:
    del state
    parsed = parse_task(spec.task)
    if parsed is None:
      return None
    return score(*parsed, answer, solve(*parsed, spec.data))


def make_env(example: Mapping[str, str]) -> DocumentEnv:
  return DocumentEnv(example['task'], example['data'], example['answer'],
                     example['format'])


# ---------------------------------------------------------------- Solvers


def record_chars(head: str) -> int | None:
  """Record width from the visible head (records are fixed-width)."""
  newline = head.find('\n')
  return newline + 1 if newline >= 0 else None


def _child_number(answer: str | None) -> str:
  """A child's numeric answer, or '0' for a failed or malformed one."""
  return answer if answer and numbers.is_number(answer, 9) else '0'


def _combine(kind: str, args: tuple[str, ...],
             answers: tuple[str | None, ...]) -> str:
  """The parent's answer from its children's (a failed child counts 0)."""
  if kind in ('count', 'sum'):
    return str(sum(int(_child_number(a)) for a in answers))
  totals = {label: 0 for label in args}
  for a in answers:
    for label, n in parse_tally(a or '').items():
      if label in totals:
        totals[label] += n
  return format_tally(totals) if kind == 'tally' else most_frequent(totals)


def _terms(kind: str, args: tuple[str, ...], text: str) -> list[str]:
  """What a direct reader adds: a 1 per record with the label (count) or
  the speaker's values (sum); '0' when no record counts."""
  rows = records(text)
  if kind == 'count':
    terms = ['1' for _, label, _ in rows if label == args[0]]
  else:
    terms = [str(value) for speaker, _, value in rows if speaker == args[0]]
  return terms or ['0']


class DirectSolver:
  """Answers from its inline data, or reads as much as fits, then answers
  (numbers: adds the terms it read with the `add` tool, then copies the
  total).

  Beyond the window it truncates: it reads the longest prefix of whole
  records that leaves room for its answer, and answers over that prefix.
  """

  ANSWER_RESERVE = 40  # tokens kept free for the answer step

  def __init__(self, window: context.Window, fixed_width: bool = True):
    """`fixed_width`: records have the width of the first line (plain
    documents); else reads end anywhere and a cut last line is skipped."""
    self.window = window
    self.fixed_width = fixed_width

  def __call__(self, view: env_lib.StepView) -> str:
    parsed = parse_task(view.spec.task)
    if parsed is None:
      return protocol.answer('cannot parse the task')
    data = context.visible_data(view, self.window)
    if data is not None:
      return protocol.answer(solve(*parsed, data))
    if view.step == 0:
      length = len(view.spec.data)  # the handle shows it
      width = (record_chars(context.visible_head(view, self.window)) or 1
               if self.fixed_width else 1)
      budget = (self.window.max_tokens -
                context.prompt_tokens(view, TOOLS, self.window) -
                self.ANSWER_RESERVE)
      cost = lambda end, shown: (  # the read step and its observation
          context.step_tokens(protocol.tool_call('read', f'0 {end}'),
                              self.window) +
          context.observation_tokens(shown, self.window))
      # From what the node sees: a character is at most one token (the
      # byte tokenizer's, a BPE's of ASCII text), so what the longest call
      # and an empty observation leave fits that many characters...
      room = budget - cost(length, '')
      end = min(length, max(room, 0), MAX_READ_CHARS) // width * width
      # ...unless the run's tokenizer says otherwise (wide characters).
      while end and cost(end, view.spec.data[:end]) > budget:
        end -= width
      return protocol.tool_call('read', f'0 {end}')
    seen = view.observations[0]
    if seen.startswith('error:'):
      seen = ''
    elif not self.fixed_width and len(seen) < len(view.spec.data):
      seen = seen[:seen.rfind('\n') + 1]  # a cut last line is not read
    if parsed[0] not in ('count', 'sum'):
      return protocol.answer(solve(*parsed, seen))
    # Numbers through the `add` tool, as the recursive solver's parents
    # do: the policy copies the terms it read and the tool's total, and
    # never adds up to 8 numbers in its head.
    if view.step == 1:
      return protocol.tool_call('add', ' '.join(_terms(*parsed, seen)))
    total = view.observations[-1]
    return protocol.answer(total if total.isdigit() else solve(*parsed, seen))


class RecursiveSolver:
  """Splits its data into `fanout` parts of whole records (`#I/N`, cut by
  the runtime) until a leaf holds at most `leaf_records` records it can see
  inline (2 by default: every leaf is a 2-operand step, which a tiny model
  learns), then combines the children's answers: numbers through the `add`
  tool, whose result it copies into its answer, label counts itself."""

  def __init__(self, window: context.Window, leaf_records: int = 2,
               fanout: int = 2, leaf_chars: int | None = None,
               direct: env_lib.ScriptedPolicy | None = None):
    """`leaf_chars`: for records of no fixed width (`documents_prose`),
    split by length alone: a node whose data has at most this many
    characters (its prompt shows the length) reads it itself. `direct`:
    what a leaf, or a node with no depth left, does (default: read and
    answer, `DirectSolver`)."""
    if leaf_records < 1 or fanout < 2:
      raise ValueError('need leaf_records >= 1 and fanout >= 2')
    self.window = window
    self.leaf_records = leaf_records
    self.fanout = fanout
    self.leaf_chars = leaf_chars
    self.direct = direct or DirectSolver(window,
                                         fixed_width=leaf_chars is None)

  def __call__(self, view: env_lib.StepView) -> str:
    parsed = parse_task(view.spec.task)
    if parsed is None:
      return protocol.answer('cannot parse the task')
    kind, args = parsed
    data = context.visible_data(view, self.window)
    width = record_chars(context.visible_head(view, self.window))
    length = len(view.spec.data)
    if self.leaf_chars is not None:  # by length alone
      is_leaf, width = length <= self.leaf_chars, 1
    else:
      is_leaf = data is not None and (
          width is None or length // width <= self.leaf_records)
    if is_leaf or width is None or view.budgets.get('depth', 0) <= 0:
      return self.direct(view)
    if view.step == 0:
      parts = min(self.fanout, length // width)
      child_kind = kind if kind in ('count', 'sum') else 'tally'
      child_task = ' '.join((child_kind,) + args)
      # No format: in this grammar the task names it ('count' -> an
      # integer), and every token a node writes is one more to learn.
      return protocol.spawn([(child_task, protocol.data_part(i, parts), '')
                             for i in range(1, parts + 1)])
    if not view.children_answers:  # the spawn was refused
      return protocol.answer('failed: ' + view.observations[-1][:60])
    answers = view.children_answers[-1]
    if kind not in ('count', 'sum'):
      return protocol.answer(_combine(kind, args, answers))
    if view.step == 1:
      return protocol.tool_call(
          'add', ' '.join(_child_number(a) for a in answers))
    total = view.observations[-1]
    return protocol.answer(total if numbers.is_number(total) else
                           _combine(kind, args, answers))


# ---------------------------------------------------------------- Builder

# In `cpu_tiny`'s 256-token window a node's prompt leaves room to read 8
# records (80 characters): the direct solver reads 8 of 9 and answers over
# those. These levels are 1, 4 and 16 such windows long, to measure success
# against length; `mixed` runs from a quarter of that window to 4 windows,
# so a policy trained on it meets inputs that fit and inputs that do not;
# `crossover` (2-16 records) holds about as many inputs that fit as not,
# for training the decision between reading and delegating.
DIRECT_RECORDS = 8
WINDOW_LEVELS = {f'window{n}': (n * DIRECT_RECORDS - 3, n * DIRECT_RECORDS)
                 for n in (1, 4, 16)}


def make_document(rng: random.Random, num_records: int,
                  prose: bool = False) -> str:
  """Records one a line; `prose`: each in a phrasing drawn at random."""
  lines = []
  for _ in range(num_records):
    speaker, label = rng.choice(SPEAKERS), rng.choice(LABELS)
    value = rng.randrange(10)
    phrasing = rng.choice(PHRASINGS) if prose else PHRASINGS[0]
    lines.append(phrasing.format(s=speaker, l=label, v=value) + '\n')
  return ''.join(lines)


def make_question(rng: random.Random, document: str
                  ) -> tuple[str, str] | None:
  """A random (task, answer) over document; None for a tied label pick."""
  kind = rng.choice(('count', 'sum', 'most', 'more'))
  if kind == 'count':
    args = (rng.choice(LABELS),)
  elif kind == 'sum':
    args = (rng.choice(SPEAKERS),)
  else:
    args = tuple(rng.sample(LABELS, 3 if kind == 'most' else 2))
  counts = sorted(tally(records(document), args).values())
  if kind in ('most', 'more') and counts[-1] == counts[-2]:
    return None  # ties would make the label answer ambiguous
  task = ' '.join((kind,) + args)
  return task, solve(kind, args, document)


class RaoDocuments(builder_lib.TaskBuilder):
  """Aggregation over long documents (after Oolong); configs are lengths
  in records."""

  # Enough distinct documents that a training run rarely sees one twice (a
  # CPU run reads ~2,000 root tasks) and held-out splits large enough for a
  # stable success estimate; the long levels, slow to generate, are for
  # evaluation and get fewer.
  BUILDER_CONFIGS = builder_lib.level_configs(
      {'easy': (8, 30), 'moderate': (26, 60), 'medium': (100, 200),
       'mixed': (2, 32), 'crossover': (2, 2 * DIRECT_RECORDS)},
      'records', version='1.1.0', num_train=4096, num_validation=256,
      num_test=256) + builder_lib.level_configs(
          {'hard': (400, 820), 'extreme': (820, 1640)}, 'records',
          version='1.1.0', num_train=512, num_validation=64,
          num_test=64) + builder_lib.level_configs(
              WINDOW_LEVELS, 'records', version='1.1.0', num_train=64,
              num_validation=16, num_test=64)
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'First release.',
                   '1.1.0': '4096 / 256 / 256 examples a level; moderate.'}

  def make_example(self, rng: random.Random,
                   config: builder_lib.LevelConfig) -> dict[str, str]:
    while True:
      document = make_document(rng, rng.randint(config.low, config.high))
      question = make_question(rng, document)
      if question is not None:
        break
    task, gold = question
    kind = task.split()[0]
    return {'task': task, 'data': document, 'format': FORMATS[kind],
            'answer': gold,
            'world': json.dumps({'records': len(document) // 10})}


def _code_recursive_solver(window: context.Window):
  # Imported here: documents_code builds on this module.
  from rao_jax.tasks import documents_code  # pylint: disable=g-import-not-at-top
  # Two plain records are 20 characters: leaves as the tag solver's.
  return documents_code.CodeRecursiveSolver(window, leaf_chars=20)


def _code_direct_solver(window: context.Window):
  from rao_jax.tasks import documents_code  # pylint: disable=g-import-not-at-top
  return documents_code.CodeDirectSolver(window)


TASK = registry.register(registry.Task(
    name='documents', tfds_name='rao_documents', builder=RaoDocuments,
    make_env=make_env, recursive_solver=RecursiveSolver,
    direct_solver=DirectSolver,
    code_recursive_solver=_code_recursive_solver,
    code_direct_solver=_code_direct_solver,
    levels=('easy', 'moderate', 'medium', 'hard', 'extreme', 'mixed',
            'crossover') + tuple(WINDOW_LEVELS)))
