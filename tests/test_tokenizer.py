"""Tokenizers: exact round trips, single-token specials, tokenizer.json."""

import json

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest
import tokenizers

from rao_jax.model import tokenizer as tokenizer_lib

_SPECIALS = ('<task>', '</task>', '<answer>', '</answer>', '<ans')


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(), st.sampled_from(_SPECIALS))))
def test_byte_tokenizer_round_trips_any_string(pieces):
  tok = tokenizer_lib.ByteTokenizer(_SPECIALS)
  text = ''.join(pieces)
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert all(3 <= i < tok.vocab_size for i in ids)


def test_specials_are_single_tokens_longest_first():
  tok = tokenizer_lib.ByteTokenizer(_SPECIALS)
  ids = tok.encode('<answer>7</answer>')
  assert ids[0] == tok.token_id('<answer>')
  assert ids[-1] == tok.token_id('</answer>')
  assert len(ids) == 3
  assert tok.encode('<ans')[0] == tok.token_id('<ans')
  assert tok.vocab_size % 128 == 0
  with pytest.raises(KeyError, match='<nope>'):
    tok.token_id('<nope>')


@given(st.lists(st.integers(min_value=-5, max_value=1000)))
def test_decode_never_raises(ids):
  tok = tokenizer_lib.ByteTokenizer(_SPECIALS)
  assert isinstance(tok.decode(ids), str)


def test_save_and_load_byte_tokenizer(tmp_path):
  tok = tokenizer_lib.ByteTokenizer(_SPECIALS)
  tok.save(str(tmp_path))
  loaded = tokenizer_lib.load_tokenizer(str(tmp_path))
  text = 'x <task>go</task> é'
  assert loaded.encode(text) == tok.encode(text)


def _small_bpe(specials):
  """A byte-level BPE trained offline, a stand-in for a checkpoint's."""
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
      add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=list(specials),
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  bpe.train_from_iterator(['the cat sat on the mat'] * 50, trainer)
  return bpe


def test_hf_tokenizer_json(tmp_path):
  _small_bpe(['<pad>', '<eos>', '<bos>']).save(str(tmp_path / 'tokenizer.json'))
  tok = tokenizer_lib.load_tokenizer(str(tmp_path))
  assert isinstance(tok, tokenizer_lib.HFTokenizer)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  text = 'the cat sat, é!'
  assert tok.decode(tok.encode(text)) == text
  assert tok.token_id('<eos>') == 1


def _bpe_dir(path, settings, template=None, in_config=False):
  _small_bpe(['<|endoftext|>', '<|im_end|>', '<s>']).save(
      str(path / 'tokenizer.json'))
  if template is not None and in_config:
    settings = dict(settings, chat_template=template)
  elif template is not None:
    (path / 'chat_template.jinja').write_text(template)
  (path / 'tokenizer_config.json').write_text(json.dumps(settings))
  return tokenizer_lib.HFTokenizer(str(path))


def test_hf_special_tokens_come_from_tokenizer_config(tmp_path):
  # Qwen's spelling: no bos, eos and pad named by the config (an older file
  # writes a token as its added-token record).
  tok = _bpe_dir(tmp_path, {'bos_token': None,
                            'eos_token': {'content': '<|im_end|>'},
                            'pad_token': '<|endoftext|>'})
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, None)
  assert tok.special_tokens_map == {'eos_token': '<|im_end|>',
                                    'pad_token': '<|endoftext|>'}
  assert tok.chat_template is None
  # A named token the vocabulary lacks has no id (the checks refuse it).
  tok = _bpe_dir(tmp_path, {'bos_token': '<s>', 'eos_token': '<nope>'})
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (2, None, None)


@pytest.mark.parametrize('in_config', [False, True])
def test_hf_chat_template_from_its_file_or_the_config(tmp_path, in_config):
  tok = _bpe_dir(tmp_path, {}, '{{ messages }}', in_config)
  assert tok.chat_template == '{{ messages }}'
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(
      {'chat_template': [{'name': 'tool_use', 'template': 'a'},
                         {'name': 'default', 'template': 'b'}]}))
  if not in_config:
    (tmp_path / 'chat_template.jinja').unlink()
  assert tokenizer_lib.HFTokenizer(str(tmp_path)).chat_template == 'b'
