"""Tools and verifiers against malformed, empty, huge and near-miss input:
a clear observation or a score, never an exception."""

import json
import random

from hypothesis import given
from hypothesis import strategies as st
import pytest

import fuzz_testing

from rao_jax.agent import env as env_lib
from rao_jax.tasks import crafting
from rao_jax.tasks import documents
from rao_jax.tasks import documents_scan
from rao_jax.tasks import jsonl
from rao_jax.tasks import multihop

FUZZ = fuzz_testing.fuzz(150)
# Digits that are not ASCII: '¹' passes str.isdigit() but int() refuses
# it; int('٣') is 3. A model may write either.
UNICODE_DIGITS = ['¹', '²³', '٣', '৪৫', '１']
WORDS = st.sampled_from(['', ' ', '0', '-1', '3', '99999999999999999999',
                         'kelu', 'red', 'ana', 'mentor', 'obtain', 'x' * 5000,
                         '\n', '@0:5', '<answer>', 'ünï', '1e9', '2.5',
                         *UNICODE_DIGITS])
ARGS = st.one_of(st.text(max_size=60),
                 st.lists(WORDS, max_size=5).map(' '.join),
                 st.integers(-10**12, 10**12).map(str),
                 # Numbers in any script (categories Nd, No).
                 st.text(st.characters(categories=['Nd', 'No']),
                         min_size=1, max_size=4))


def _crafting_env(seed=0, depth=4):
  return crafting.CraftingEnv(crafting.make_world(random.Random(seed), depth))


def _document_env(seed=0, num_records=40):
  rng = random.Random(seed)
  while True:
    document = documents.make_document(rng, num_records)
    question = documents.make_question(rng, document)
    if question is not None:
      task, gold = question
      return documents.DocumentEnv(task, document, gold,
                                   documents.FORMATS[task.split()[0]])


def _scan_env(seed=0, num_records=40):
  env = _document_env(seed, num_records)
  return documents_scan.make_env({'task': env.task, 'data': env.document,
                                  'answer': env.answer, 'format': env.format})


def _multihop_env(seed=0, hops=3):
  rng = random.Random(seed)
  graph = multihop.make_graph(rng, 12)
  return multihop.MultihopEnv(graph, sorted(graph)[0],
                              tuple(rng.choice(multihop.RELATIONS)
                                    for _ in range(hops)))


ENVS = [_crafting_env, _document_env, _scan_env, _multihop_env]


@pytest.mark.parametrize('make_env', ENVS)
@FUZZ
@given(args=ARGS, tool_index=st.integers(0, 2))
def test_tools_never_raise(make_env, args, tool_index):
  env = make_env()
  tools = env.tools()
  tool = tools[tool_index % len(tools)]
  result = tool.run(env.root_state(), args)
  assert isinstance(result, env_lib.ToolResult)
  assert result.text and len(result.text) <= 2048 + 64
  assert isinstance(result.error, bool)


@pytest.mark.parametrize('make_env', ENVS)
@FUZZ
@given(answer=ARGS, task=ARGS, data=st.text(max_size=80))
def test_verifiers_never_raise(make_env, answer, task, data):
  env = make_env()
  state = env.root_state()
  root = env.score_root(answer, state)
  assert 0.0 <= root <= 1.0
  spec = env_lib.NodeSpec(task, data, '')
  child = env.score_subtask(spec, answer, env.child_state(state, spec))
  assert child is None or 0.0 <= child <= 1.0


def test_tool_errors_are_clear():
  env = _crafting_env()
  state = env.root_state()
  get_info, craft, _ = env.tools()
  assert craft.run(state, '').text == 'usage: craft N ITEM'
  assert 'unknown item' in get_info.run(state, 'zzzz').text
  assert craft.run(state, '0 kelu').error
  assert craft.run(state, '9' * 40 + ' kelu').error
  target = env.world['target']
  missing = craft.run(state, f'1 {target}')
  assert missing.error and missing.text.startswith('not enough')
  read, add = _document_env().tools()
  assert add.run('', '22 47').text == '69'
  assert add.run('', '').error and add.run('', '3 x').error
  assert add.run('', ' '.join(['1'] * 17)).error
  assert read.run('abc', '2 1').text == 'bad range 2 1 (data has 3 chars)'
  assert read.run('a' * 5000, '0 5000').error
  assert read.run('abc', '0 99999999999999999999').text == (
      'usage: read START END')
  (search,) = _multihop_env().tools()
  assert search.run({'kavo': {}}, 'kav').text == "no page for 'kav'"


def test_scan_answers_a_task_over_one_window_at_most():
  env = _scan_env(num_records=40)
  read, add, scan = env.tools()
  assert (read.name, add.name) == ('read', 'add')
  data = env.root_state()
  for task in ('count red', 'sum ana', 'tally red tan', 'most red tan blu',
               'more tan blu'):
    for start, end in ((0, 80), (10, 50), (320, 400), (7, 7)):
      assert scan.run(data, f'{task} {start} {end}').text == documents.solve(
          *documents.parse_task(task), data[start:end])
  # Longer than one window, outside the data, or not a task: refused.
  assert scan.run(data, 'sum ana 0 90').text == 'scan at most 80 chars'
  assert scan.run(data, 'sum ana 5 3').text == (
      'bad range 5 3 (data has 400 chars)')
  for bad in ('', 'sum ana', 'sum ana 0', 'sum 0 10', 'pick red 0 10',
              'sum ana x 10', 'count red tan 0 10', 'sum ana 0 ١٠'):
    result = scan.run(data, bad)
    assert result.error and result.text == 'usage: scan TASK START END', bad
  # The family's environment is the documents one with the tool added.
  assert env.score_root(env.answer, data) == 1.0
  assert _document_env().tools() == documents.TOOLS


@pytest.mark.parametrize('digits', UNICODE_DIGITS)
def test_only_ascii_digits_are_numbers(digits):
  # Refused as malformed, as any other non-number is: never an exception,
  # and never read as a number.
  read, add = _document_env().tools()
  assert read.run('abc', f'0 {digits}').text == 'usage: read START END'
  assert add.run('', f'1 {digits}').error
  _, craft, _ = _crafting_env().tools()
  assert craft.run(_crafting_env().root_state(),
                   f'{digits} kelu').text == 'usage: craft N ITEM'
  assert documents.parse_tally(f'red {digits} tan 2') == {'tan': 2}
  env = _document_env()
  assert env.score_root(digits, '') == 0.0
  spec = env_lib.NodeSpec('tally red', f'ana red {digits}\n', '')
  assert env.score_subtask(spec, 'red 0', '') == 1.0  # not a record
  assert jsonl.parse_line(json.dumps(
      {'question': 'q', 'document': 'd', 'answer': digits}),
                          'f:1')['format'] == 'text'


def test_crafting_near_misses():
  env = _crafting_env(depth=2)
  state = env.root_state()
  world = env.world
  target, count = world['target'], world['count']
  get_info, craft, _ = env.tools()
  for ingredient, _ in world['recipes'][target]:
    if ingredient in world['recipes']:
      assert not craft.run(state, f'{count} {ingredient}').error
  assert env.score_root('done', state) == 0.0  # said, not crafted
  if count > 1:
    assert not craft.run(state, f'{count - 1} {target}').error
    assert env.score_root('done', state) == 0.0  # one unit short
  # Starting stock of the target would not count either.
  assert not craft.run(state, f'1 {target}').error
  assert env.score_root('', state) == 1.0
  assert 'needs' in get_info.run(state, target).text


def test_document_near_misses():
  env = _document_env()
  kind, args = documents.parse_task(env.task)
  if kind in ('count', 'sum'):
    gold = int(env.answer)
    assert env.score_root(str(gold), '') == 1.0
    assert env.score_root(str(gold + 1), '') == pytest.approx(0.75)
    assert env.score_root(f' {gold} ', '') == 1.0
    assert env.score_root(f'{gold}.0', '') == 0.0
  spec = env_lib.NodeSpec('tally red tan', 'ana red 1\nbob red 2\n', '')
  assert env.score_subtask(spec, 'red 2 tan 0', '') == 1.0
  assert env.score_subtask(spec, 'red 1 tan 0', '') == pytest.approx(0.875)
  assert env.score_subtask(spec, 'tan 0', '') == 0.5
  spec = env_lib.NodeSpec('more red tan', 'ana red 1\n', '')
  assert env.score_subtask(spec, 'red', '') == 1.0
  assert env.score_subtask(spec, 'reds', '') == 0.0
  assert env.score_subtask(env_lib.NodeSpec('count', '', ''), '0', '') is None
  assert env.score_subtask(env_lib.NodeSpec('more red', '', ''), 'red',
                           '') is None


def test_multihop_near_misses():
  env = _multihop_env()
  gold = multihop.walk(env.graph, env.start, env.relations)
  assert env.score_root(gold.upper(), None) == 1.0
  assert env.score_root(gold + 'x', None) == 0.0
  wrong_hop = multihop.walk(env.graph, env.start, env.relations[:-1])
  assert env.score_root(wrong_hop, None) == float(wrong_hop == gold)
  spec = env_lib.NodeSpec(multihop.task_text(env.start, env.relations[:1]))
  assert env.score_subtask(spec, env.graph[env.start][env.relations[0]],
                           None) == 1.0
  unknown = env_lib.NodeSpec(f'follow {env.start} cousin')
  assert env.score_subtask(unknown, 'x', None) is None


@FUZZ
@given(line=st.one_of(st.text(max_size=60),
                      st.dictionaries(st.sampled_from(
                          ['question', 'document', 'answer', 'format']),
                          st.one_of(st.text(max_size=8), st.integers(),
                                    st.none(), st.lists(st.integers()),
                                    st.booleans())).map(json.dumps)))
def test_jsonl_lines_parse_or_say_why(line):
  try:
    example = jsonl.parse_line(line, 'f:1')
  except ValueError as e:
    assert str(e).startswith('f:1: ')
  else:
    assert set(example) >= {'task', 'data', 'format', 'answer'}
    assert all(isinstance(v, str) for v in example.values())
