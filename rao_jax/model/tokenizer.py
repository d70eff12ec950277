"""Tokenizers: Hugging Face `tokenizer.json` files and a built-in byte tokenizer.

`ByteTokenizer` serves the synthetic tasks: every UTF-8 byte is a token, and
a short list of special strings (the protocol's tags) are single tokens, so
any string round-trips exactly and a tiny model sees each tag as one symbol.
It is written here rather than built from `tokenizers` because its contract
is exact byte round-tripping with fixed ids, which a BPE model with added
tokens does not promise (normalisers and added-token stripping vary).

`HFTokenizer` reads a checkpoint's tokenizer directory as `transformers`
does: `tokenizer.json`, the special tokens named in `tokenizer_config.json`
and the chat template (`chat_template.jinja`, or the `chat_template` of
`tokenizer_config.json`).
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
import re
from typing import Protocol

import tokenizers

PAD_ID, EOS_ID, BOS_ID = 0, 1, 2  # Gemma's ids for the three
_BYTE_TOKENIZER_FILE = 'rao_byte_tokenizer.json'


class Tokenizer(Protocol):
  """What rao_jax needs of a tokenizer (an id is None where it has none)."""

  pad_id: int | None
  bos_id: int | None
  eos_id: int | None
  vocab_size: int

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...

  def token_id(self, piece: str) -> int:
    """Id of a string that is a single token (a special tag)."""
    ...


class ByteTokenizer:
  """UTF-8 bytes plus single-token special strings.

  Ids: 0 pad, 1 eos, 2 bos, then the special strings in order, then the 256
  bytes; the vocabulary is padded up to a multiple of `pad_to_multiple` so it
  splits evenly over a tensor-parallel mesh axis.
  """

  def __init__(self, special_tokens: Sequence[str] = (),
               pad_to_multiple: int = 128):
    specials = list(dict.fromkeys(special_tokens))
    for s in specials:
      if not s:
        raise ValueError('special tokens must be non-empty strings')
    self.special_tokens = tuple(specials)
    self.pad_id, self.eos_id, self.bos_id = PAD_ID, EOS_ID, BOS_ID
    self._special_ids = {s: 3 + i for i, s in enumerate(specials)}
    self._byte_offset = 3 + len(specials)
    used = self._byte_offset + 256
    self.vocab_size = -(-used // pad_to_multiple) * pad_to_multiple
    # Longest first, so a special that extends another wins.
    ordered = sorted(specials, key=len, reverse=True)
    self._split = (re.compile('(' + '|'.join(map(re.escape, ordered)) + ')')
                   if ordered else None)
    # id -> its bytes (empty for pad/bos/eos and unused ids): decoding is
    # one join, since the sampler's stop rule decodes every chunk.
    self._bytes = [b''] * self.vocab_size
    for s, i in self._special_ids.items():
      self._bytes[i] = s.encode()
    for b in range(256):
      self._bytes[self._byte_offset + b] = bytes([b])

  def encode(self, text: str) -> list[int]:
    parts = self._split.split(text) if self._split else [text]
    ids = []
    for i, part in enumerate(parts):
      if i % 2:  # odd parts are the captured special strings
        ids.append(self._special_ids[part])
      else:
        ids.extend(self._byte_offset + b for b in part.encode('utf-8'))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    """Decodes ids; never raises (invalid UTF-8 becomes U+FFFD)."""
    table, size = self._bytes, self.vocab_size
    return b''.join(table[i] if 0 <= i < size else b''
                    for i in map(int, ids)).decode('utf-8', errors='replace')

  def token_id(self, piece: str) -> int:
    if piece not in self._special_ids:
      raise KeyError(f'{piece!r} is not a special token of this tokenizer')
    return self._special_ids[piece]

  def save(self, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, _BYTE_TOKENIZER_FILE), 'w') as f:
      json.dump({'special_tokens': list(self.special_tokens),
                 'vocab_size': self.vocab_size}, f, indent=2)


# The special tokens `tokenizer_config.json` may name, and the piece looked
# up where it names none (Gemma's spelling).
_SPECIAL_PIECES = {'pad_token': '<pad>', 'eos_token': '<eos>',
                   'bos_token': '<bos>', 'unk_token': '<unk>'}


def _token_text(value) -> str | None:
  """A special token of `tokenizer_config.json`: a string, or an added
  token's record `{"content": ...}` (older files), or null."""
  if isinstance(value, dict):
    value = value.get('content')
  return value if isinstance(value, str) and value else None


class HFTokenizer:
  """A `tokenizer.json` (Hugging Face `tokenizers`) behind the same API.

  Attributes:
    special_tokens_map: 'bos_token', 'eos_token', ... -> its text, for those
      the directory defines (what a chat template sees).
    chat_template: the directory's chat template source, or None.
  """

  def __init__(self, path: str):
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    file = os.path.join(path, 'tokenizer.json') if os.path.isdir(path) else path
    self._tok = tokenizers.Tokenizer.from_file(file)
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    settings = _read_json(os.path.join(directory, 'tokenizer_config.json'))
    self.special_tokens_map = {}
    for name, piece in _SPECIAL_PIECES.items():
      # Named by the config (null: it has none), else Gemma's piece.
      text = (_token_text(settings[name]) if name in settings else
              piece if self._tok.token_to_id(piece) is not None else None)
      if text is not None:
        self.special_tokens_map[name] = text
    self.pad_id = self._id_of('pad_token')
    self.eos_id = self._id_of('eos_token')
    self.bos_id = self._id_of('bos_token')
    self.chat_template = _chat_template(directory, settings)

  def _id_of(self, name: str) -> int | None:
    text = self.special_tokens_map.get(name)
    return None if text is None else self._tok.token_to_id(text)

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def token_id(self, piece: str) -> int:
    found = self._tok.token_to_id(piece)
    if found is None:
      raise KeyError(f'{piece!r} is not a single token of this tokenizer')
    return found


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _chat_template(directory: str, settings: dict) -> str | None:
  """`chat_template.jinja` (what `transformers` writes), else the config's
  `chat_template`: a string, or a list of named templates ('default')."""
  file = os.path.join(directory, 'chat_template.jinja')
  if os.path.exists(file):
    with open(file, encoding='utf-8') as f:
      return f.read()
  template = settings.get('chat_template')
  if isinstance(template, list):
    named = {t.get('name'): t.get('template') for t in template}
    template = named.get('default')
  return template if isinstance(template, str) and template else None


def load_tokenizer(path: str) -> Tokenizer:
  """Loads whichever tokenizer a directory holds."""
  byte_file = os.path.join(path, _BYTE_TOKENIZER_FILE)
  if os.path.exists(byte_file):
    with open(byte_file) as f:
      spec = json.load(f)
    tok = ByteTokenizer(spec['special_tokens'])
    if tok.vocab_size != spec['vocab_size']:
      raise ValueError(f'{byte_file}: vocab_size {spec["vocab_size"]} does '
                       f'not match the rebuilt tokenizer ({tok.vocab_size})')
    return tok
  if os.path.exists(os.path.join(path, 'tokenizer.json')):
    return HFTokenizer(path)
  raise FileNotFoundError(f'{path}: no tokenizer.json or '
                          f'{_BYTE_TOKENIZER_FILE}')
