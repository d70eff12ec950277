"""The run's tokenizer, checked against the model it feeds.

With the byte tokenizer every protocol tag is one token; a Hugging Face
`tokenizer.json` is read from the directory `tokenizer.path` names.
"""

from __future__ import annotations

from rao_jax import config as config_lib
from rao_jax.agent import protocol
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
