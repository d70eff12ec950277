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

`STEP_FILE` (`rao_export.json`) records the trainer step exported; an
export of an older step than the directory holds is refused, and so are
parameters that are not finite: a good export is never replaced by a
worse one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from etils import epath
from flax import nnx
import tokenizers

from rao_jax import config as config_lib
from rao_jax.runtime import errors
from rao_jax.runtime import checkpoint as checkpoint_lib
from rao_jax.runtime import multihost
from rao_jax.model import gemma
from rao_jax.model import hf_io
from rao_jax.model import lora
from rao_jax.model import tokenizer as tokenizer_lib

STEP_FILE = 'rao_export.json'  # {"step": the trainer step exported}
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


def exported_step(out: epath.PathLike) -> int | None:
  """The trainer step `out` holds (None: no export, or one without a
  record)."""
  path = epath.Path(out) / STEP_FILE
  if not path.exists():
    return None
  return int(json.loads(path.read_text())['step'])


def export(model: gemma.Transformer, tokenizer: tokenizer_lib.Tokenizer,
           tokenizer_config: config_lib.TokenizerConfig,
           out: epath.PathLike, *, step: int) -> epath.Path:
  """Writes the model of trainer step `step` and its tokenizer into `out`
  (replacing what was there); every process must call it (the weights are
  gathered collectively), process 0 writes. Returns `out`.

  Raises:
    errors.Refusal: `out` holds a newer step.
    FloatingPointError: the parameters hold a NaN or an infinity.
  """
  out = epath.Path(out)
  if lora.num_adapter_params(model):
    # Into the base weights: a plain checkpoint, as transformers loads it.
    # `merged` changes `model` in place; the caller's arrays are untouched.
    model = lora.merged(model)
  held = exported_step(out)
  if held is not None and held > step:
    raise errors.Refusal(
        f'{out} holds the export of step {held}, newer than step {step} '
        'this run would write; nothing was changed. (Is a newer checkpoint '
        f'in checkpoints/{checkpoint_lib.CORRUPT_DIR}/? Remove {out} to '
        'export an older step anyway.)')
  checkpoint_lib.check_finite(nnx.state(model, nnx.Param),
                              f'export of step {step} into {out}')
  # Written into a local directory first, then moved or copied into place:
  # a reader never sees half an export, and `out` may be remote (gs://).
  with tempfile.TemporaryDirectory() as staging:
    hf_io.save_hf(model, staging)
    if multihost.is_primary():
      _write_tokenizer(tokenizer, tokenizer_config, staging)
      with open(os.path.join(staging, STEP_FILE), 'w') as f:
        json.dump({'step': step}, f)
      if out.exists():
        out.rmtree()
      out.mkdir(parents=True)
      for name in sorted(os.listdir(staging)):
        epath.Path(staging, name).copy(out / name)
  multihost.barrier('exported')
  return out
