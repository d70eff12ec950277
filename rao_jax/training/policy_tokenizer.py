"""The run's tokenizer and chat format, checked against the model they feed.

With the byte tokenizer every protocol tag is one token; a Hugging Face
`tokenizer.json` is read from the directory `tokenizer.path` names, with
its special tokens and chat template. `check` refuses, before any weight
is read, a tokenizer that cannot serve the protocol or the model, naming
the config field to change.
"""

from __future__ import annotations

import json
import os

import jinja2

from rao_jax import config as config_lib
from rao_jax.agent import chat as chat_lib
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.model import config as model_config
from rao_jax.model import hf_io
from rao_jax.model import tokenizer as tokenizer_lib


def build(config: config_lib.TokenizerConfig,
          vocab_size: int) -> tokenizer_lib.Tokenizer:
  """The tokenizer named by `config`; checks it fits the vocabulary. The
  byte tokenizer carries the protocol's tags as single tokens."""
  if config.kind == 'byte':
    tokenizer = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  else:
    tokenizer = tokenizer_lib.HFTokenizer(config.path)
  if tokenizer.vocab_size > vocab_size:
    raise ValueError(f'model.vocab_size={vocab_size} is smaller than the '
                     f'tokenizer\'s vocabulary ({tokenizer.vocab_size})')
  return tokenizer


def chat_format(config: config_lib.TokenizerConfig,
                tokenizer: tokenizer_lib.Tokenizer) -> chat_lib.ChatFormat:
  """The chat format `config` names over the run's tokenizer.

  Raises:
    ValueError: for 'checkpoint' when the tokenizer directory has no chat
      template, or a template that does not parse; naming the field.
  """
  where = f'tokenizer.chat_template={config.chat_template!r}'
  if config.chat_template == 'none':
    template = None
  elif config.chat_template == 'checkpoint':
    template = getattr(tokenizer, 'chat_template', None)
    if template is None:
      raise ValueError(f'{where}: {config.path} has no chat template '
                       '(chat_template.jinja, or chat_template in '
                       'tokenizer_config.json); name a built-in one '
                       f'({", ".join(chat_lib.BUILT_IN)}) or "none"')
  else:
    template = chat_lib.BUILT_IN[config.chat_template]
  try:
    return chat_lib.ChatFormat(tokenizer, template, preamble=config.preamble)
  except jinja2.TemplateError as e:
    raise ValueError(f'{where}: the template does not parse: {e}') from None


def model_config_of(model: model_config.ModelConfig,
                    init_from_hf: str | None
                    ) -> tuple[model_config.ModelConfig, str]:
  """The config of the model the run will build, and where it comes from:
  `init_from_hf`'s config.json (read without any weight), else `model`."""
  if not init_from_hf:
    return model, 'model'
  path = os.path.join(init_from_hf, 'config.json')
  try:
    with open(path) as f:
      hf_config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'init_from_hf={init_from_hf}: cannot read '
                     f'config.json ({e})') from None
  return (hf_io.config_from_hf(hf_config),
          f'init_from_hf={init_from_hf} (config.json)')


def check_run(tokenizer: tokenizer_lib.Tokenizer,
              tokenizer_config: config_lib.TokenizerConfig,
              model: model_config.ModelConfig, init_from_hf: str | None
              ) -> chat_lib.ChatFormat:
  """`check` against the model the run will build (`model`, or
  `init_from_hf`'s); returns the format."""
  built, source = model_config_of(model, init_from_hf)
  return check(tokenizer, built, tokenizer_config, model_source=source)


# A conversation that exercises every turn a node has.
_PROBE_TOOLS = (env_lib.Tool('read', 'read START END',
                             lambda state, args: env_lib.ToolResult('')),)
_PROBE_STEPS = (protocol.think('plan') + protocol.tool_call('read', '0 9'),
                protocol.spawn([('count a', protocol.data_part(1, 2), '')]),
                protocol.answer('3'))
_PROBE_INJECTIONS = (protocol.observation('a 1\nb 2'),
                     protocol.results(['3']))


def check(tokenizer: tokenizer_lib.Tokenizer,
          model: model_config.ModelConfig,
          config: config_lib.TokenizerConfig,
          model_source: str = 'model') -> chat_lib.ChatFormat:
  """Refuses a tokenizer that cannot serve the protocol or the model.

  Refused, each naming the field to change: a vocabulary larger than the
  model's; a pad, eos or bos id (bos where the raw protocol starts prompts
  with it) missing or outside the model's vocabulary; a protocol tag, or a
  protocol step, whose encoding does not decode back to itself (the stop
  rule and the parser read decoded text); a chat template that does not
  render a node's turns, or whose text does not survive the tokenizer.

  Args:
    tokenizer: the run's tokenizer.
    model: the config of the model it feeds.
    config: the tokenizer section.
    model_source: where `model` comes from, for the messages.

  Returns:
    The run's chat format.
  """
  where = (f'tokenizer.path={config.path}' if config.kind == 'hf' else
           'tokenizer.kind=byte')
  vocab = model.vocab_size
  if tokenizer.vocab_size > vocab:
    raise ValueError(f'{where}: the vocabulary has {tokenizer.vocab_size} '
                     f'tokens, more than model.vocab_size={vocab} of '
                     f'{model_source}')
  needed = ['pad', 'eos'] + (['bos'] if config.chat_template == 'none' else [])
  for name in ('pad', 'eos', 'bos'):
    token_id = getattr(tokenizer, f'{name}_id')
    if token_id is None and name in needed:
      raise ValueError(
          f'{where}: the tokenizer has no {name} token (tokenizer_config.json '
          f'{name}_token, or a "<{name}>" token)' +
          (': the raw protocol starts every prompt with it; set '
           'tokenizer.chat_template' if name == 'bos' else ''))
    if token_id is not None and not 0 <= token_id < vocab:
      raise ValueError(f'{where}: its {name} id {token_id} is outside '
                       f'model.vocab_size={vocab} of {model_source}')
  for text in protocol.SPECIAL_TOKENS + _PROBE_STEPS + _PROBE_INJECTIONS:
    ids = tokenizer.encode(text)
    back = tokenizer.decode(ids)
    if back != text:
      raise ValueError(f'{where}: {text!r} encodes to {ids} which decodes '
                       f'to {back!r}; the protocol needs its text back')
  chat = chat_format(config, tokenizer)
  if chat.source is not None:
    _check_template(chat, f'tokenizer.chat_template={config.chat_template!r}')
  return chat


def _check_template(chat: chat_lib.ChatFormat, where: str) -> None:
  """Renders a node's turns (prompt, steps, injections) and checks that the
  protocol text is in them and that the tokenizer gives them back."""
  spec = env_lib.NodeSpec('count a', 'a 1\nb 2\n', 'an integer')
  prompt = protocol.render_prompt(spec, {'depth': 1}, _PROBE_TOOLS)
  try:
    conversation = chat.start(prompt, _PROBE_TOOLS)
    pieces = [chat.tokenizer.decode(chat.prompt_ids(conversation))]
    for step, injected in zip(_PROBE_STEPS, _PROBE_INJECTIONS):
      conversation.append({'role': chat_lib.ASSISTANT, 'content': step})
      pieces.append(chat.tokenizer.decode(
          chat.injection_ids(conversation, injected)))
      conversation.append({'role': chat_lib.USER, 'content': injected})
  except (jinja2.TemplateError, ValueError, TypeError) as e:
    raise ValueError(f'{where}: the template does not render a node\'s '
                     f'turns: {type(e).__name__}: {e}') from None
  text = ''.join(pieces)
  for part in [prompt.strip()] + [i.strip() for i in _PROBE_INJECTIONS]:
    if part not in text:
      raise ValueError(f'{where}: the rendered turns lose the protocol text '
                       f'{part!r}')
  rendered = chat.render(chat.start(prompt, _PROBE_TOOLS), True)
  if pieces[0] != rendered:
    raise ValueError(f'{where}: the tokenizer does not give the rendered '
                     f'prompt back ({rendered[:80]!r} -> {pieces[0][:80]!r})')
