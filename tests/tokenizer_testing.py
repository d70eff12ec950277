"""Real tokenizers for the tests, trained offline: byte-level BPEs whose
merges cross tag boundaries (as SentencePiece's do), written as checkpoint
tokenizer directories with Gemma's or Qwen's special tokens."""

from __future__ import annotations

import json
import os
import random

import tokenizers

from rao_jax.agent import protocol
from rao_jax.tasks import crafting
from rao_jax.tasks import documents
from rao_jax.tasks import multihop

GEMMA_SPECIALS = ('<pad>', '<eos>', '<bos>', '<unk>', '<start_of_turn>',
                  '<end_of_turn>')
QWEN_SPECIALS = ('<|endoftext|>', '<|im_start|>', '<|im_end|>')
# tokenizer_config.json's special tokens of each family (Qwen has no bos).
GEMMA_CONFIG = {'bos_token': '<bos>', 'eos_token': '<eos>',
                'pad_token': '<pad>', 'unk_token': '<unk>'}
QWEN_CONFIG = {'bos_token': None, 'eos_token': '<|im_end|>',
               'pad_token': '<|endoftext|>'}


def corpus(seed: int = 0) -> list[str]:
  """Protocol text as the tasks write it: preambles, prompts, steps and
  observations, so BPE learns merges inside and across tags."""
  rng = random.Random(seed)
  texts = [protocol.preamble(t.TOOLS) for t in (crafting, documents,
                                                 multihop)]
  for _ in range(200):
    document = documents.make_document(rng, rng.randint(2, 6))
    number = str(rng.randrange(100))
    texts += [
        document,
        protocol.answer(number),
        protocol.think('split') + protocol.spawn(
            [('count red', protocol.data_part(1, 2), ''),
             ('count red', protocol.data_part(2, 2), '')]),
        protocol.tool_call('read', f'0 {rng.randrange(300)}'),
        protocol.observation(document) + protocol.answer(number),
        protocol.results([number, str(rng.randrange(9))]),
    ]
  return texts


def train_bpe(vocab_size: int, specials: tuple[str, ...] = GEMMA_SPECIALS,
              split_words: bool = True, seed: int = 0) -> tokenizers.Tokenizer:
  """A byte-level BPE over `corpus`, `specials` first (ids 0, 1, ...).

  With `split_words` (GPT-2's pre-tokenizer) letters and punctuation are
  never merged, so every tag is several tokens (`</answer>` is `['</',
  'answer', '>']`) and only punctuation joins across a tag's ends ('></');
  without it merges cross everything, as SentencePiece's do: whole steps
  become tokens ('2</tool>', 'data></spawn>').
  """
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
      add_prefix_space=False, use_regex=split_words)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(specials),
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False)
  bpe.train_from_iterator(corpus(seed), trainer)
  return bpe


def write_tokenizer_dir(path: str, bpe: tokenizers.Tokenizer,
                        special_tokens: dict, chat_template: str | None = None,
                        template_in_config: bool = False) -> str:
  """A checkpoint's tokenizer files: tokenizer.json, tokenizer_config.json
  and the chat template (in chat_template.jinja as `transformers` 5 writes
  it, or in tokenizer_config.json as older checkpoints have it)."""
  os.makedirs(path, exist_ok=True)
  bpe.save(os.path.join(path, 'tokenizer.json'))
  settings = dict(special_tokens, tokenizer_class='PreTrainedTokenizerFast')
  if chat_template is not None and template_in_config:
    settings['chat_template'] = chat_template
  elif chat_template is not None:
    with open(os.path.join(path, 'chat_template.jinja'), 'w') as f:
      f.write(chat_template)
  with open(os.path.join(path, 'tokenizer_config.json'), 'w') as f:
    json.dump(settings, f, indent=2)
  return path
