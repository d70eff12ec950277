"""The trained policy as a Hugging Face checkpoint directory.

`export(model, tokenizer, ...)` writes `save_hf`'s safetensors and
`config.json` and the tokenizer's files, so `AutoModelForCausalLM` and
`AutoTokenizer.from_pretrained(DIR)` load the policy as it was trained. A
run exports into `<workdir>/hf/` when it ends (`checkpoint.export_hf`), and
`--config.mode=export` (`rao_jax.export`) exports a workdir's newest
checkpoint on demand.

The built-in byte tokenizer has no `tokenizer.json`; it is written as an
equivalent `tokenizers` pipeline: a byte-level BPE without merges whose 256
byte tokens, pad/eos/bos and protocol tags keep their ids, so every string
encodes to the same ids (tested).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from etils import epath
import tokenizers

from rao_jax import config as config_lib
from rao_jax.runtime import multihost
from rao_jax.model import gemma
from rao_jax.model import hf_io
from rao_jax.model import tokenizer as tokenizer_lib

# What AutoTokenizer reads from a checkpoint directory besides the weights.
_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json',
                    'special_tokens_map.json', 'tokenizer.model',
                    'chat_template.jinja', 'generation_config.json')


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table, as `tokenizers`' ByteLevel
  pre-tokenizer and decoder use it."""
  printable = (list(range(ord('!'), ord('~') + 1)) +
               list(range(ord('¡'), ord('¬') + 1)) +
               list(range(ord('®'), ord('ÿ') + 1)))
  chars = printable[:]
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + extra)
      extra += 1
  return dict(zip(printable, map(chr, chars)))


def byte_tokenizer_as_hf(tokenizer: tokenizer_lib.ByteTokenizer
                         ) -> tokenizers.Tokenizer:
  """A `tokenizers.Tokenizer` that encodes and decodes as `tokenizer`."""
  names = {tokenizer.pad_id: '<pad>', tokenizer.eos_id: '<eos>',
           tokenizer.bos_id: '<bos>'}
  vocab = {name: i for i, name in names.items()}
  specials = {piece: tokenizer.token_id(piece)
              for piece in tokenizer.special_tokens}
  vocab.update(specials)
  offset = tokenizer.encode('\x00')[0]  # the id of byte 0
  vocab.update({char: offset + b for b, char in _bytes_to_unicode().items()})
  hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
  # No regex split and no prefix space: every byte is one token, as in
  # ByteTokenizer; the tags are matched in the raw text first.
  hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
      add_prefix_space=False, use_regex=False)
  hf.decoder = tokenizers.decoders.ByteLevel()
  hf.add_special_tokens([tokenizers.AddedToken(n, special=True)
                         for n in names.values()])
  hf.add_tokens([tokenizers.AddedToken(piece, normalized=False)
                 for piece in specials])
  return hf


def _write_tokenizer(tokenizer: tokenizer_lib.Tokenizer,
                     tokenizer_config: config_lib.TokenizerConfig,
                     directory: str) -> None:
  if tokenizer_config.kind == 'hf':
    source = tokenizer_config.path
    for name in _TOKENIZER_FILES:
      if os.path.exists(os.path.join(source, name)):
        shutil.copy(os.path.join(source, name), os.path.join(directory, name))
    return
  byte_tokenizer_as_hf(tokenizer).save(
      os.path.join(directory, 'tokenizer.json'))
  with open(os.path.join(directory, 'tokenizer_config.json'), 'w') as f:
    json.dump({'tokenizer_class': 'PreTrainedTokenizerFast',
               'bos_token': '<bos>', 'eos_token': '<eos>',
               'pad_token': '<pad>', 'add_bos_token': False,
               'clean_up_tokenization_spaces': False}, f, indent=2)


def export(model: gemma.Transformer, tokenizer: tokenizer_lib.Tokenizer,
           tokenizer_config: config_lib.TokenizerConfig,
           out: epath.PathLike) -> epath.Path:
  """Writes the model and its tokenizer into `out` (replacing what was
  there); every process must call it (the weights are gathered
  collectively), process 0 writes. Returns `out`."""
  out = epath.Path(out)
  # Written into a local directory first, then moved or copied into place:
  # a reader never sees half an export, and `out` may be remote (gs://).
  with tempfile.TemporaryDirectory() as staging:
    hf_io.save_hf(model, staging)
    if multihost.is_primary():
      _write_tokenizer(tokenizer, tokenizer_config, staging)
      if out.exists():
        out.rmtree()
      out.mkdir(parents=True)
      for name in sorted(os.listdir(staging)):
        epath.Path(staging, name).copy(out / name)
  multihost.barrier('exported')
  return out
