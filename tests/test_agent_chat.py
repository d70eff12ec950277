"""Chat formats: a node's decoded tokens are `transformers`' rendering of
its conversation, and only the policy's own tokens carry loss."""

import pytest
import transformers

from rao_jax.agent import chat as chat_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import scripted_engine
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib

import agent_testing
import tokenizer_testing

# A Gemma 2 style template: no system turn (the preamble then opens the
# first user turn).
_NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
_FAMILIES = {
    'gemma': (chat_lib.GEMMA_TEMPLATE, tokenizer_testing.GEMMA_SPECIALS,
              tokenizer_testing.GEMMA_CONFIG),
    'qwen': (chat_lib.QWEN_TEMPLATE, tokenizer_testing.QWEN_SPECIALS,
             tokenizer_testing.QWEN_CONFIG),
    'no_system': (_NO_SYSTEM, tokenizer_testing.GEMMA_SPECIALS,
                  tokenizer_testing.GEMMA_CONFIG),
}
_BUDGETS = scheduler_lib.Budgets(max_depth=2, max_children=2, max_steps=4,
                                 max_new_tokens=96)


@pytest.fixture(scope='module')
def bpes():
  return {specials: tokenizer_testing.train_bpe(500, specials)
          for specials in (tokenizer_testing.GEMMA_SPECIALS,
                           tokenizer_testing.QWEN_SPECIALS)}


def _tokenizer_dir(path, bpes, family, in_config=False):
  template, specials, settings = _FAMILIES[family]
  return tokenizer_testing.write_tokenizer_dir(
      str(path), bpes[specials], settings, template, in_config)


class _RecordingEngine(scripted_engine.ScriptedEngine):
  """Records every node's views and step texts by (tree seed, path)."""

  def step_text(self, request):
    text = super().step_text(request)
    self.steps.setdefault((request.seed, request.path), []).append(
        (request.view, text))
    return text


def _rollout(tokenizer, chat):
  engine = _RecordingEngine(agent_testing.split_policy, tokenizer,
                            protocol.STOP_TAGS, num_slots=3, max_len=1024)
  engine.steps = {}
  scheduler = scheduler_lib.FrontierScheduler(engine, tokenizer, _BUDGETS,
                                              chat=chat)
  envs = [agent_testing.SumEnv(d) for d in ('1234', '56')]
  trees, _ = scheduler.run(envs, [1, 2])
  assert all(t.root.success == 1.0 for t in trees)
  return trees, engine.steps


def _messages(chat, tools, steps):
  """A node's conversation, from what its policy saw and wrote."""
  first_view = steps[0][0]
  budgets = {k: first_view.budgets[k] for k in ('depth', 'steps',
                                                 'children')}
  prompt = protocol.render_prompt(first_view.spec, budgets, tools)
  messages = chat.start(prompt, tools)
  last_view = steps[-1][0]
  for i, (_, text) in enumerate(steps):
    messages.append({'role': 'assistant', 'content': text})
    if i < len(steps) - 1:
      messages.append({'role': 'user', 'content': protocol.observation(
          last_view.observations[i])})
  return messages


@pytest.mark.parametrize('family, in_config', [
    ('gemma', False), ('qwen', False), ('no_system', True)])
@pytest.mark.parametrize('preamble', [False, True])
def test_a_node_is_its_conversation_rendered_by_transformers(
    bpes, tmp_path, family, in_config, preamble):
  directory = _tokenizer_dir(tmp_path, bpes, family, in_config)
  tokenizer = tokenizer_lib.HFTokenizer(directory)
  assert tokenizer.chat_template == _FAMILIES[family][0]
  chat = chat_lib.ChatFormat(tokenizer, tokenizer.chat_template, preamble)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  trees, steps = _rollout(tokenizer, chat)
  tools = agent_testing.SumEnv('').tools()
  for tree in trees:
    for node in tree.nodes:
      _check_node(node, steps[tree.seed, node.path], chat, reference, tools)


def _check_node(node, steps, chat, reference, tools):
  messages = _messages(chat, tools, steps)
  expected = reference.apply_chat_template(
      messages[:-1], tokenize=False, add_generation_prompt=True)
  text = chat.tokenizer.decode(node.tokens)
  # Byte-identical: the prompt, every injection and every step.
  assert text == expected + messages[-1]['content']
  if chat.preamble:
    assert protocol.preamble(tools) in text
  # Loss only on the policy's own tokens: its runs are exactly the steps,
  # tokenized as the stop rule cut them; everything else is injected.
  policy = [node.tokens[t['start']:t['end']]
            for t in tree_lib.turns(node, chat.tokenizer)
            if t['kind'] == tree_lib.POLICY]
  assert policy == [chat.step_ids(s) for _, s in steps]
  assert sum(node.loss_mask) == sum(map(len, policy))


def test_a_template_that_rewrites_past_turns_still_injects_its_turns(
    bpes, tmp_path):
  # As Qwen3's: an assistant turn loses its thought once a later turn
  # follows. The node keeps its sampled thoughts; the injections are the
  # template's own turns.
  dropping = chat_lib.QWEN_TEMPLATE.replace(
      "message['content'] + ", "message['content'].split('</think>')[-1] + ")
  assert dropping != chat_lib.QWEN_TEMPLATE
  directory = _tokenizer_dir(tmp_path, bpes, 'qwen')
  tokenizer = tokenizer_lib.HFTokenizer(directory)
  plain = chat_lib.ChatFormat(tokenizer, chat_lib.QWEN_TEMPLATE)
  rewriting = chat_lib.ChatFormat(tokenizer, dropping)
  trees_plain, _ = _rollout(tokenizer, plain)
  trees_rewriting, _ = _rollout(tokenizer, rewriting)
  assert [t.to_json() for t in trees_plain] == [
      t.to_json() for t in trees_rewriting]
  assert any(protocol.THINK_END in tokenizer.decode(n.tokens)
             for t in trees_plain for n in t.nodes)


def test_the_raw_protocol_is_bos_and_text():
  tok = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  chat = chat_lib.ChatFormat(tok)
  conversation = chat.start('<task>t</task>', [])
  assert chat.prompt_ids(conversation) == [tok.bos_id] + tok.encode(
      '<task>t</task>')
  conversation.append({'role': 'assistant', 'content': '<answer>1</answer>'})
  assert chat.injection_ids(conversation, '<obs>x</obs>') == tok.encode(
      '<obs>x</obs>')
  with_preamble = chat_lib.ChatFormat(tok, preamble=True)
  (message,) = with_preamble.start('<task>t</task>', [])
  assert message['content'] == protocol.preamble([]) + '\n\n<task>t</task>'
  with pytest.raises(ValueError, match='raw protocol'):
    chat.render(conversation, True)


def test_an_injection_must_follow_a_step(bpes, tmp_path):
  tokenizer = tokenizer_lib.HFTokenizer(_tokenizer_dir(tmp_path, bpes,
                                                       'gemma'))
  chat = chat_lib.ChatFormat(tokenizer, chat_lib.GEMMA_TEMPLATE)
  with pytest.raises(ValueError, match='end with an assistant turn'):
    chat.injection_ids(chat.start('p', []), '<obs>x</obs>')
  drops = chat_lib.ChatFormat(tokenizer, "{% for m in messages %}"
                              "{% if m['role'] == 'user' %}{{ m['content'] }}"
                              "{% endif %}{% endfor %}")
  conversation = drops.start('p', []) + [{'role': 'assistant',
                                          'content': 'a'}]
  with pytest.raises(ValueError, match='drops the assistant'):
    drops.injection_ids(conversation, 'x')


def test_demonstrations_are_unchanged_with_the_raw_byte_format():
  # The scheduler's default format is the raw protocol over its tokenizer.
  tok = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  default, _ = _rollout(tok, None)
  explicit, _ = _rollout(tok, chat_lib.ChatFormat(tok))
  assert [t.to_json() for t in default] == [t.to_json() for t in explicit]
  assert default[0].root.tokens[0] == tok.bos_id
