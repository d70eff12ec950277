"""The python mode's step grammar, parser and stop rule."""

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from rao_jax.agent import code_protocol
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.tasks import context

TOKENIZER = context.TOKENIZER
_CODE = st.text(st.characters(blacklist_categories=('Cs',)), max_size=80
                ).filter(lambda c: '`' not in c)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_raises(text):
  action = code_protocol.parse_step(text)
  assert isinstance(action, (code_protocol.Code, protocol.ParseError))


@settings(max_examples=200, deadline=None)
@given(_CODE, st.sampled_from(['', 'plan it']))
def test_written_steps_parse_back(code, thought):
  step = code_protocol.code_step(code, thought)
  action = code_protocol.parse_step(step)
  expected = code if code.endswith('\n') else code + '\n'
  assert action == code_protocol.Code(expected, thought)


@settings(max_examples=100, deadline=None)
@given(_CODE, st.text(max_size=30))
def test_the_stop_rule_keeps_the_block_and_drops_the_rest(code, tail):
  step = code_protocol.code_step(code)
  ids = TOKENIZER.encode(step + tail)
  end = code_protocol.CodeStopRule(TOKENIZER).find(ids)
  assert TOKENIZER.decode(ids[:end]) == step


def test_an_unfinished_block_goes_on():
  rule = code_protocol.CodeStopRule(TOKENIZER)
  assert rule.find(TOKENIZER.encode('```python\nx = 1\n``')) is None
  assert rule.host_find == rule.find and not rule.device_ids


def test_the_prompt_shows_the_length_not_the_context():
  spec = env_lib.NodeSpec('count red', 'kim red 4\n' * 3, 'an integer')
  prompt = code_protocol.render_prompt(spec, {'depth': 2, 'steps': 6})
  assert prompt == ('<task>count red</task><format>an integer</format>'
                    '<data>context: 30 chars</data>\nbudget: depth 2, '
                    'steps 6\n')


def test_malformed_steps_say_what_is_wrong():
  assert code_protocol.parse_step('print(1)').error == (
      'expected a ```python block')
  assert code_protocol.parse_step('<think>x ```python\n1\n```').error == (
      'unclosed think')
