"""The stop rule over adversarial tokenizations: tags split over tokens,
merged with their neighbours, inside other text, or never written.

A `PieceTokenizer`'s tokens are arbitrary substrings, so one token may end
a tag and start the next word ('r>mo'), or hold a whole tag and more. The
rule (`protocol` module doc): a step ends with the first token whose text
completes a stop tag; a step without one runs to its budget or the window.
"""

import random
import re

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import numpy as np
import pytest

from rao_jax import sampler as sampler_lib
from rao_jax import testing
from rao_jax.agent import engine as engine_lib
from rao_jax.agent import model_engine
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import scripted_engine
from rao_jax.agent import stops as stops_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib

import agent_testing

# Text with tags inside words, near misses ('</answe', '</answers'), and
# the tags' pieces.
_FRAGMENTS = ('text', 'more', ' ', '\n', 'x', '<', '/', '>', '</', 'answer',
              'answe', 'r>', 's>', '</answer>', '</tool>', '</spawn>',
              '<answer>', 'tool', '7')
_MODEL_VOCAB = 384  # testing.tiny_model's
_MAX_LEN = 384


class PieceTokenizer:
  """Token i is the text `pieces[i]`: encode is greedy longest match, decode
  joins (unknown ids carry no text). Pieces must cover every character."""

  def __init__(self, pieces):
    self.pieces = list(dict.fromkeys(pieces))
    self.vocab_size = len(self.pieces)
    self.pad_id = self.eos_id = self.bos_id = None
    self._ids = {p: i for i, p in enumerate(self.pieces)}
    self._longest = max(len(p) for p in self.pieces)

  def encode(self, text):
    ids, at = [], 0
    while at < len(text):
      for size in range(min(self._longest, len(text) - at), 0, -1):
        if text[at:at + size] in self._ids:
          ids.append(self._ids[text[at:at + size]])
          at += size
          break
      else:
        raise ValueError(f'no piece for {text[at]!r}')
    return ids

  def decode(self, ids):
    return ''.join(self.pieces[i] for i in ids if 0 <= i < self.vocab_size)

  def token_id(self, piece):
    return self._ids[piece]


def _reference_end(pieces):
  """The shortest prefix whose text holds a stop tag, by brute force."""
  for k in range(1, len(pieces) + 1):
    if protocol.step_end(''.join(pieces[:k])) is not None:
      return k
  return None


@st.composite
def _segmented(draw):
  """Random text cut into pieces at random boundaries."""
  text = ''.join(draw(st.lists(st.sampled_from(_FRAGMENTS), max_size=16)))
  cuts = sorted(draw(st.sets(st.integers(1, max(len(text) - 1, 1)))))
  bounds = [0] + [c for c in cuts if c < len(text)] + [len(text)]
  return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


_NO_TEXT = 10**6  # an id outside every vocabulary: it decodes to nothing


@settings(max_examples=500, deadline=None)
@given(_segmented(), st.data())
def test_a_step_ends_at_the_token_that_completes_its_first_tag(pieces, data):
  tokenizer = PieceTokenizer(pieces + list(''.join(_FRAGMENTS)))
  rule = stops_lib.StopRule(tokenizer)
  # Tokens without text inside a tag stretch it over more tokens.
  silent = data.draw(st.lists(st.booleans(), min_size=len(pieces),
                              max_size=len(pieces)))
  pieces = [q for p, s in zip(pieces, silent) for q in ([p, ''] if s else [p])]
  tokens = [_NO_TEXT if not p else tokenizer.token_id(p) for p in pieces]
  expected = _reference_end(pieces)
  assert rule.find(tokens) == expected
  # What the sampler passes as known to go on: any prefix short of the end.
  checked = data.draw(st.integers(
      0, (expected - 1) if expected else len(tokens)))
  assert rule.find(tokens, checked) == expected
  if expected is not None:
    # The parser reads the text up to the tag's end, inside that token.
    text = tokenizer.decode(tokens[:expected])
    end = protocol.step_end(text)
    assert text[:end].endswith(protocol.STOP_TAGS)
    assert protocol.step_end(tokenizer.decode(tokens[:expected - 1])) is None


def test_single_token_tags_stop_in_the_decode_loop():
  tok = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
  assert stops_lib.StopRule(tok).device_ids == tuple(
      tok.token_id(t) for t in protocol.STOP_TAGS)
  split = PieceTokenizer(['</', 'answer', '>', '</tool>', 'spawn'] +
                         list('</spawnx'))
  # '</tool>' is one token; the others are spelled in pieces.
  assert stops_lib.StopRule(split).device_ids == (split.token_id('</tool>'),)
  # Only a tokenizer that spells some tag in pieces needs the host rule.
  assert stops_lib.StopRule(tok).host_find is None
  assert stops_lib.StopRule(split).host_find is not None


def _piece_vocab(seed: int) -> PieceTokenizer:
  """The model's vocabulary as random substrings of a random text of tags
  and words (every printable character among them, so any prompt
  encodes)."""
  rng = random.Random(seed)
  base = ''.join(rng.choice(_FRAGMENTS) for _ in range(200))
  pieces = [chr(c) for c in range(32, 127)] + ['\n']
  # A fifth of the vocabulary ends a stop tag, with what follows it
  # ('r>mo', 'x</tool>t'), so that sampled steps stop often.
  ends = [m.end() for m in re.finditer('|'.join(protocol.STOP_TAGS), base)]
  while len(set(pieces)) < _MODEL_VOCAB * 2 // 5:
    end = rng.choice(ends)
    pieces.append(base[end - rng.randint(1, 10):end + rng.randint(0, 3)])
  while len(set(pieces)) < _MODEL_VOCAB:
    start = rng.randrange(len(base))
    pieces.append(base[start:start + rng.randint(2, 12)])
  return PieceTokenizer(pieces)


@pytest.fixture(scope='module')
def model():
  # Small weight noise: a spread-out next-token distribution (at 0.2 the
  # tiny model repeats one token), so sampled text holds tags often.
  return testing.tiny_model(scale=0.05)


def _check_turn(tokenizer, turn, budget):
  text = tokenizer.decode(turn.tokens)
  if turn.stop_reason == 'stop':
    assert protocol.step_end(text) is not None
    assert protocol.step_end(tokenizer.decode(turn.tokens[:-1])) is None
  else:  # never stops without a tag, except at its budget or max_len
    assert protocol.step_end(text) is None
    assert turn.stop_reason == 'max_len' or len(turn.tokens) == budget


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**16))
def test_the_sampler_rolls_a_slot_back_to_its_stop(model, seed):
  tokenizer = _piece_vocab(seed)
  rule = stops_lib.StopRule(tokenizer)
  sampler = sampler_lib.SlotSampler(model, num_slots=4, max_len=64,
                                    method=sampler_lib.Temperature(1.0))
  prompt = tokenizer.encode('<task>go</task>')
  keys = [jax.random.key(seed * 4 + i) for i in range(4)]
  budget = 24
  sampler.admit([sampler_lib.Request(prompt, k, budget, find_stop=rule.find)
                 for k in keys])
  turns = []
  while sampler.num_running:
    turns += sampler.decode(8)
  for turn in turns:
    _check_turn(tokenizer, turn, budget)
    # The slot holds exactly the prompt and the kept tokens.
    assert sampler.tokens(turn.slot) == prompt + turn.tokens.tolist()
    assert sampler.sequence_length(turn.slot) == len(prompt) + len(
        turn.tokens)
  # Some turn ended by the host rule inside a chunk of 8: the loop ran
  # past its end and the slot was rolled back.
  assert any(t.stop_reason == 'stop' and (len(t.tokens) - 1) % 8 and
             t.tokens[-1] not in rule.device_ids for t in turns)
  # Extending a rolled-back slot samples what a fresh admit of the same
  # context samples: the dropped tokens' cache entries are never read.
  first = sorted(turns, key=lambda t: t.slot)
  injected = tokenizer.encode('<obs>ok</obs>')
  live = [t for t in first if t.stop_reason != 'max_len']
  sampler.extend([t.slot for t in live],
                 [sampler_lib.Request(injected, None, 6) for _ in live])
  extended = {t.slot: t for t in _drain(sampler)}
  fresh = sampler_lib.SlotSampler(model, num_slots=4, max_len=64,
                                  method=sampler_lib.Temperature(1.0))
  fresh.admit([sampler_lib.Request(
      prompt + t.tokens.tolist() + injected, keys[t.slot], 6) for t in live],
              slots=[t.slot for t in live])
  for turn in _drain(fresh):
    np.testing.assert_array_equal(turn.tokens, extended[turn.slot].tokens)
    np.testing.assert_allclose(turn.sampler_logprobs,
                               extended[turn.slot].sampler_logprobs,
                               atol=1e-5)


def _drain(sampler):
  turns = []
  while sampler.num_running:
    turns += sampler.decode(8)
  return turns


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**16))
def test_no_step_runs_past_its_stop_tag_in_a_rollout(model, seed):
  tokenizer = _piece_vocab(seed)
  rule = stops_lib.StopRule(tokenizer)
  sampler = sampler_lib.SlotSampler(model, num_slots=4, max_len=_MAX_LEN,
                                    method=sampler_lib.Temperature(1.0))
  engine = model_engine.ModelEngine(sampler, rule.device_ids, decode_steps=8,
                                    find_stop=rule.find)
  budgets = scheduler_lib.Budgets(max_depth=1, max_steps=3,
                                  max_new_tokens=20)
  scheduler = scheduler_lib.FrontierScheduler(engine, tokenizer, budgets)
  trees, _ = scheduler.run(
      [agent_testing.SumEnv(d) for d in ('12', '3456', '7', '890')],
      [seed + i for i in range(4)])
  stops = 0
  for node in (n for t in trees for n in t.nodes):
    assert node.status in tree_lib.TERMINAL
    for turn in tree_lib.turns(node, tokenizer):
      if turn['kind'] != tree_lib.POLICY:
        continue
      step = node.tokens[turn['start']:turn['end']]
      ended = protocol.step_end(tokenizer.decode(step)) is not None
      stops += ended
      assert protocol.step_end(tokenizer.decode(step[:-1])) is None
      room = _MAX_LEN - turn['start']
      assert ended or len(step) == min(budgets.max_new_tokens, room)
  assert stops  # the vocabulary makes tags common: some steps end on one


@settings(max_examples=200, deadline=None)
@given(_segmented())
def test_scripted_steps_follow_the_same_rule(pieces):
  tokenizer = PieceTokenizer(pieces + list(''.join(_FRAGMENTS)))
  text = ''.join(pieces)
  engine = scripted_engine.ScriptedEngine(
      lambda view: text, tokenizer, protocol.STOP_TAGS, num_slots=1,
      max_len=1024)
  engine.admit({0: engine_lib.StepRequest((0,), 0, (), 0, 512)})
  finished = {}
  while not finished:
    finished = engine.decode().finished
  output = finished[0]
  ids = tokenizer.encode(text)
  end = stops_lib.StopRule(tokenizer).find(ids)
  assert list(output.tokens) == (ids if end is None else ids[:end])
  assert output.stop_reason == (engine_lib.EOS if end is None else
                                engine_lib.STOP)
