"""Chat formats: how a node's protocol texts become its token sequence.

A node's sequence is a conversation. Its prompt is the first user turn
(after a system turn holding `protocol.preamble` when the preamble is
on), each generated step is an assistant turn, and each injection (a tool's
observation, the children's results, an error) is the next user turn. The
policy samples only the steps' tokens (loss mask 1); everything else is
injected text, tokenized on its own (loss mask 0).

- `ChatFormat(tokenizer)` is the raw protocol (`tokenizer.chat_template =
  'none'`): the prompt is `<bos>` and its text, an injection its text.
- `ChatFormat(tokenizer, template)` renders the conversation with a jinja
  chat template as `transformers`' `apply_chat_template` does (the same
  sandboxed environment, globals and special-token variables). The prompt
  is the rendering of [system, user] with the generation prompt. The text
  injected after step k is what the rendering of the conversation with the
  next user turn (and the generation prompt) holds after step k's content:
  where a template renders earlier turns unchanged, exactly the difference
  between the renderings of the longer and the shorter conversation, so a
  node's decoded tokens equal `apply_chat_template` of its conversation.
  Templates that rewrite earlier turns (Qwen3 drops the thoughts of past
  assistant turns) still get the right injections; the node keeps its
  sampled tokens, thoughts included.

`BUILT_IN` holds the Gemma and Qwen (ChatML) formats for checkpoints that
ship no template; 'checkpoint' uses the tokenizer directory's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import datetime
import json

import jinja2
import jinja2.ext
import jinja2.sandbox

from rao_jax.agent import code_protocol
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.agent import stops as stops_lib
from rao_jax.model import tokenizer as tokenizer_lib

SYSTEM, USER, ASSISTANT = 'system', 'user', 'assistant'
# The action modes (`rollout.actions`): the tag protocol, or code blocks.
TAGS, PYTHON = 'tags', 'python'
ACTIONS = (TAGS, PYTHON)
Message = dict[str, str]  # {'role': ..., 'content': ...}

# Gemma's turns: a system text opens the first user turn, contents are
# trimmed, the assistant's role is 'model'.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + "
    "(first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}")
# Qwen's ChatML turns, without its tool-call and thinking extensions.
QWEN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}"
    "{%- endif -%}")
BUILT_IN = {'gemma': GEMMA_TEMPLATE, 'qwen': QWEN_TEMPLATE}

# The content a step is rendered with when an injection is cut out after
# it: private-use characters, which no template trims, splits or escapes.
_STEP = '\ue000rao-step\ue001'


class _Generation(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`, which `transformers` uses to
  mark assistant text: rendered as its body."""

  tags = {'generation'}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(('name:endgeneration',), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method('_body'), [], [],
                                  body).set_lineno(lineno)

  def _body(self, caller):
    return caller()


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None,
            sort_keys=False):
  # transformers' filter: jinja's own escapes HTML characters.
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                    separators=separators, sort_keys=sort_keys)


def compile_template(source: str) -> jinja2.Template:
  """A chat template compiled as `transformers` compiles it.

  Raises:
    jinja2.TemplateError: on a template that does not parse.
  """
  environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True,
      extensions=[_Generation, jinja2.ext.loopcontrols])
  environment.filters['tojson'] = _tojson
  environment.globals['raise_exception'] = _raise_exception
  environment.globals['strftime_now'] = (
      lambda fmt: datetime.datetime.now().strftime(fmt))
  return environment.from_string(source)


class ChatFormat:
  """The run's tokenizer, chat template (None: the raw protocol) and
  preamble switch: it builds every injected token of a node."""

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer,
               template: str | None = None, preamble: bool = False,
               special_tokens: Mapping[str, str] | None = None,
               actions: str = TAGS):
    """Builds the format.

    Args:
      tokenizer: the run's tokenizer.
      template: a jinja chat template's source, or None for the raw
        protocol.
      preamble: open every node with `protocol.preamble` (a system turn;
        where the template refuses one, the head of the first user turn).
      special_tokens: the template's variables `bos_token`, `eos_token`,
        ... (default: the tokenizer's `special_tokens_map`, if any).
      actions: 'tags' (the tag protocol) or 'python' (`code_protocol`):
        where a step ends and what the preamble explains.
    """
    if actions not in ACTIONS:
      raise ValueError(f'actions={actions!r}: one of {ACTIONS}')
    self.tokenizer = tokenizer
    self.actions = actions
    self.stops = (stops_lib.StopRule(tokenizer) if actions == TAGS else
                  code_protocol.CodeStopRule(tokenizer))
    self._special_tokens = special_tokens
    self.preamble = preamble
    self.source = template
    self._template = None if template is None else compile_template(template)
    if special_tokens is None:
      special_tokens = getattr(tokenizer, 'special_tokens_map', {})
    self._variables = dict(special_tokens)
    self._system_turn = self._template is not None and self._takes_system()

  def for_actions(self, actions: str) -> ChatFormat:
    """The same format for another action mode."""
    if actions == self.actions:
      return self
    return ChatFormat(self.tokenizer, self.source, self.preamble,
                      self._special_tokens, actions)

  def _takes_system(self) -> bool:
    try:
      self.render([{'role': SYSTEM, 'content': 's'},
                   {'role': USER, 'content': 'u'}], True)
    except jinja2.TemplateError:
      return False
    return True

  def render(self, messages: Sequence[Message],
             add_generation_prompt: bool) -> str:
    """The template's text of a conversation (`apply_chat_template`)."""
    if self._template is None:
      raise ValueError('the raw protocol has no chat template to render')
    return self._template.render(
        messages=[dict(m) for m in messages], tools=None, documents=None,
        add_generation_prompt=add_generation_prompt, **self._variables)

  def start(self, prompt: str,
            tools: Sequence[env_lib.Tool]) -> list[Message]:
    """A node's conversation before its first step: the preamble (when
    on) and the prompt text (`protocol.render_prompt`)."""
    if not self.preamble:
      return [{'role': USER, 'content': prompt}]
    text = (protocol.preamble(tools) if self.actions == TAGS else
            code_protocol.preamble())
    if self._system_turn:
      return [{'role': SYSTEM, 'content': text},
              {'role': USER, 'content': prompt}]
    return [{'role': USER, 'content': text + '\n\n' + prompt}]

  def prompt_ids(self, conversation: Sequence[Message]) -> list[int]:
    """The token ids of a node's prompt: `<bos>` and the text in the raw
    protocol, else the rendering with the generation prompt."""
    if self._template is None:
      (message,) = conversation
      bos = [] if self.tokenizer.bos_id is None else [self.tokenizer.bos_id]
      return bos + self.tokenizer.encode(message['content'])
    return self.tokenizer.encode(self.render(conversation, True))

  def injection_ids(self, conversation: Sequence[Message],
                    text: str) -> list[int]:
    """The token ids injected after a step for the user turn `text`.

    Args:
      conversation: the node's conversation, ending with that step.
      text: the injection in protocol form (`protocol.observation(...)`).
    """
    if self._template is None:
      return self.tokenizer.encode(text)
    if not conversation or conversation[-1]['role'] != ASSISTANT:
      raise ValueError('an injection follows a step: the conversation must '
                       'end with an assistant turn')
    rendered = self.render(
        list(conversation[:-1]) + [{'role': ASSISTANT, 'content': _STEP},
                                   {'role': USER, 'content': text}], True)
    at = rendered.rfind(_STEP)
    if at < 0:
      raise ValueError('the chat template drops the assistant turn\'s text')
    return self.tokenizer.encode(rendered[at + len(_STEP):])

  def step_ids(self, text: str) -> list[int]:
    """The tokens of a scripted step: its text encoded and cut after the
    token that completes its first stop tag (the stop rule)."""
    ids = self.tokenizer.encode(text)
    end = self.stops.find(ids)
    return ids if end is None else ids[:end]
