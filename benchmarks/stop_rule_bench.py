r"""The cost of the stop rule on text: decode with and without it.

  python benchmarks/stop_rule_bench.py          # tiny model, about 2 minutes

With a Hugging Face tokenizer a step ends when its decoded text reaches a
stop tag (`rao_jax.agent.stops`), checked on the host after every decode
chunk. This measures what that check costs against the same decode without
it: the tiny model's random weights, 64 slots each sampling 256 tokens at
temperature 1, for the byte tokenizer and for a byte-level BPE trained here
on protocol text, at decode chunks of 8 and 32 steps. Random weights rarely
write a tag, so the rule runs over every slot's whole turn: its worst case.
Both variants run in one process on the same sampler after a warm-up, so
the ratio is what to read; absolute times on a shared CPU are noise.

Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import json
import random
import tempfile
import time

import jax
from flax import nnx
import tokenizers

from rao_jax import model as model_lib
from rao_jax import sampler as sampler_lib
from rao_jax.agent import protocol
from rao_jax.agent import stops
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.tasks import documents

NUM_SLOTS = 64
NEW_TOKENS = 256
PROMPT_LEN = 16
CHUNKS = (8, 32)


def _bpe(vocab_size: int) -> tokenizer_lib.HFTokenizer:
  """A byte-level BPE over protocol text: tags are several tokens."""
  rng = random.Random(0)
  texts = [protocol.preamble(documents.TOOLS)]
  for _ in range(100):
    texts += [documents.make_document(rng, 3),
              protocol.answer(str(rng.randrange(100))),
              protocol.tool_call('read', f'0 {rng.randrange(300)}')]
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
      add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  bpe.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=['<pad>', '<eos>', '<bos>'],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  path = tempfile.mkdtemp() + '/tokenizer.json'
  bpe.save(path)
  return tokenizer_lib.HFTokenizer(path)


def _run(sampler, prompts, chunk, find_stop) -> tuple[float, int, int]:
  """Seconds to sample every slot's turn, decode calls, turns the rule
  ended."""
  requests = [sampler_lib.Request(p, jax.random.key(i), NEW_TOKENS,
                                  find_stop=find_stop)
              for i, p in enumerate(prompts)]
  start = time.perf_counter()
  sampler.admit(requests)
  turns, calls = {}, 0
  while sampler.num_running:
    turns.update({t.slot: t for t in sampler.decode(chunk)})
    calls += 1
  seconds = time.perf_counter() - start
  stopped = sum(len(t.tokens) < NEW_TOKENS for t in turns.values())
  for slot in turns:
    sampler.release(slot)
  return seconds, calls, stopped


def main() -> None:
  config = model_lib.config.tiny()
  model = model_lib.Transformer(config, rngs=nnx.Rngs(0))
  sampler = sampler_lib.SlotSampler(
      model, num_slots=NUM_SLOTS, max_len=PROMPT_LEN + NEW_TOKENS + 8,
      method=sampler_lib.Temperature(1.0))
  rng = random.Random(0)
  rows, headline = [], {}
  for name, tokenizer in (('byte', tokenizer_lib.ByteTokenizer()),
                          ('BPE', _bpe(config.vocab_size))):
    rule = stops.StopRule(tokenizer)
    prompts = [tokenizer.encode(documents.make_document(rng, 2))[:PROMPT_LEN]
               for _ in range(NUM_SLOTS)]
    for chunk in CHUNKS:
      _run(sampler, prompts, chunk, rule.find)  # warm-up: compiles
      without, calls, _ = min(_run(sampler, prompts, chunk, None)
                              for _ in range(2))
      with_rule, _, stopped = min(_run(sampler, prompts, chunk, rule.find)
                                  for _ in range(2))
      rows.append((chunk, name, 1e3 * without / calls,
                   1e3 * with_rule / calls, with_rule / without, stopped))
      headline[f'{name}_chunk{chunk}_ratio'] = round(with_rule / without, 3)
  print('| decode chunk | tokenizer | ms a chunk, without the rule | '
        'with it | ratio | turns the rule ended |')
  print('|---|---|---|---|---|---|')
  for chunk, name, a, b, ratio, stopped in rows:
    print(f'| {chunk} steps | {name} | {a:.1f} | {b:.1f} | {ratio:.2f} | '
          f'{stopped} of {NUM_SLOTS} |')
  print(json.dumps(headline))


if __name__ == '__main__':
  main()
