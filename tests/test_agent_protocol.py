"""Protocol: step writers and the parser agree; the parser never raises."""

from hypothesis import given
from hypothesis import strategies as st
import pytest

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib

import fuzz_testing

# Plain text: no tags, no surrounding whitespace (the parser strips it).
_plain = st.text(st.characters(blacklist_categories=('Cs',)), max_size=20
                 ).filter(lambda s: not protocol._TAG_RE.search(s)).map(
                     lambda s: s.strip())
_word = st.from_regex(r'[a-z_][a-z0-9_]{0,8}', fullmatch=True)


def test_special_tokens_are_single_tokens():
  tok = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  for tag in protocol.SPECIAL_TOKENS:
    assert tok.encode(tag) == [tok.token_id(tag)]
  for tag in protocol.STOP_TAGS:
    assert tag in protocol.SPECIAL_TOKENS


def test_examples():
  step = protocol.think('split it') + protocol.spawn([
      ('sum', protocol.data_slice(0, 2), 'an integer'),
      env_lib.NodeSpec('sum', '34'),
  ])
  action = protocol.parse_step(step)
  assert action == protocol.Spawn(
      (protocol.ChildRequest('sum', '@0:2', 'an integer'),
       protocol.ChildRequest('sum', '34', '')), 'split it')
  assert protocol.parse_step(protocol.tool_call('read', '0 10')) == (
      protocol.ToolCall('read', '0 10'))
  assert protocol.parse_step(' <answer> 7 </answer>\n') == protocol.Answer('7')
  assert protocol.resolve_child(action.children[0], '1234') == (
      env_lib.NodeSpec('sum', '12', 'an integer'))
  assert 'bad slice' in protocol.resolve_child(
      protocol.ChildRequest('t', '@2:9'), '1234')
  assert 'bad slice' in protocol.resolve_child(
      protocol.ChildRequest('t', '@3:2'), '1234')


def test_parts_cut_whole_lines():
  data = 'a 1\nb 2\nc 3\nd 4\ne 5\n'
  parts = protocol.split_parts(data, 2)
  assert parts == ['a 1\nb 2\n', 'c 3\nd 4\ne 5\n']
  assert ''.join(protocol.split_parts(data, 3)) == data
  assert [p.count('\n') for p in protocol.split_parts(data, 3)] == [1, 2, 2]
  assert protocol.split_parts('x\n', 2) == ['', 'x\n']
  assert protocol.split_parts('no newline', 1) == ['no newline']
  child = protocol.parse_step(protocol.spawn(
      [('count', protocol.data_part(2, 2), '')])).children[0]
  assert child.data_ref == '#2/2'
  assert protocol.resolve_child(child, data) == env_lib.NodeSpec(
      'count', 'c 3\nd 4\ne 5\n', '')
  for bad in ('#0/2', '#3/2'):
    assert 'bad part' in protocol.resolve_child(
        protocol.ChildRequest('t', bad), data)
  with pytest.raises(ValueError):
    protocol.data_part(3, 2)


@pytest.mark.parametrize('text, error', [
    ('<answer>7', 'unclosed answer'),
    ('<think>hm<answer>7</answer>', 'answer inside think'),
    ('<think>hm</answer>', 'end of answer inside think'),
    ('<spawn></spawn>', 'spawn without a task'),
    ('<spawn><task> </task></spawn>', 'empty task'),
    ('<spawn><task>a</task>', 'unclosed spawn'),
    ('<spawn>a</spawn>', 'expected task or end of spawn'),
    ('<tool></tool>', 'bad tool name'),
    ('hello', 'expected tool, spawn or answer'),
    ('', 'expected tool'),
])
def test_malformed(text, error):
  action = protocol.parse_step(text)
  assert isinstance(action, protocol.ParseError)
  assert error in action.error


def test_a_step_is_read_up_to_its_first_stop_tag():
  # The stop rule keeps the token that completes the tag whole: what it
  # carries past the tag (or anything after) is not part of the step.
  assert protocol.parse_step('<answer>1</answer><answer>2</answer>') == (
      protocol.Answer('1'))
  assert protocol.parse_step('<tool>read 0 4</tool>\n\nok') == (
      protocol.ToolCall('read', '0 4'))
  assert protocol.step_end('ab</tool>c</answer>') == len('ab</tool>')
  assert protocol.step_end('<answer>1</answer') is None
  # A tag inside a thought still ends the step there (and is malformed).
  assert 'end of answer inside think' in protocol.parse_step(
      '<think>say </answer> later</think><answer>1</answer>').error


def test_preamble_is_written_in_the_grammar():
  tools = [env_lib.Tool('read', 'read START END', lambda s, a: None)]
  text = protocol.preamble(tools)
  assert '<tool>read START END</tool>' in text
  for tag in protocol.SPECIAL_TOKENS:
    assert tag in text, tag
  # Its examples parse as the actions they describe.
  child = protocol.spawn([('TASK', 'DATA', 'FORMAT')])
  assert child in text
  assert protocol.parse_step(child) == protocol.Spawn(
      (protocol.ChildRequest('TASK', 'DATA', 'FORMAT'),))
  assert 'none' in protocol.preamble([])


def test_render_prompt_inline_and_handle():
  tools = [env_lib.Tool('read', 'read <start> <end>', lambda s, a: None)]
  short = protocol.render_prompt(env_lib.NodeSpec('t', 'abc', 'f'),
                                 {'depth': 2, 'steps': 5}, tools)
  assert short == ('<task>t</task><format>f</format><data>abc</data>\n'
                   'budget: depth 2, steps 5\ntools: read <start> <end>\n')
  long = protocol.render_prompt(env_lib.NodeSpec('t', 'x' * 100), {}, [],
                                inline_chars=10, head_chars=3)
  assert '<data>[100 chars] xxx...</data>' in long


@fuzz_testing.fuzz(300)
@given(thought=_plain, name=_word, args=_plain, text=_plain,
       children=st.lists(st.tuples(_plain.filter(bool), _plain, _plain),
                         min_size=1, max_size=4))
def test_round_trip(thought, name, args, text, children):
  prefix = protocol.think(thought) if thought else ''
  assert protocol.parse_step(prefix + protocol.tool_call(name, args)) == (
      protocol.ToolCall(name, args, thought))
  assert protocol.parse_step(prefix + protocol.answer(text)) == (
      protocol.Answer(text, thought))
  expected = tuple(protocol.ChildRequest(t, d, f) for t, d, f in children)
  assert protocol.parse_step(prefix + protocol.spawn(children)) == (
      protocol.Spawn(expected, thought))


_fragments = st.sampled_from(protocol.SPECIAL_TOKENS + (
    'a', ' ', '@1:2', '@9:0', 'read', '\n', 'x y'))


@fuzz_testing.fuzz(2000)
@given(st.lists(_fragments, max_size=14) | st.text(max_size=30).map(
    lambda s: [s]))
def test_parser_never_raises(parts):
  text = ''.join(parts)
  action = protocol.parse_step(text)
  assert isinstance(action, (protocol.ToolCall, protocol.Spawn,
                             protocol.Answer, protocol.ParseError))
  if isinstance(action, protocol.ParseError):
    assert not protocol._TAG_RE.search(action.error)
  if isinstance(action, protocol.Spawn):
    for child in action.children:
      assert child.task.strip()
      assert isinstance(protocol.resolve_child(child, 'abc'),
                        (env_lib.NodeSpec, str))
