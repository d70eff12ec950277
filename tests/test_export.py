"""The byte tokenizer as a Hugging Face tokenizer: the same ids, always."""

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import transformers

from rao_jax.runtime import hf_export as export
from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib

_OURS = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
_THEIRS = export.byte_tokenizer_as_hf(_OURS)
# Text made of tags, pieces of tags, spaces and any characters.
_PIECES = st.sampled_from(list(protocol.SPECIAL_TOKENS) +
                          ['<', '/', '>', 'answer', ' ', '  ', '\n', '\t'])
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=12).map(
    ''.join)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_every_string_encodes_and_decodes_alike(text):
  ids = _OURS.encode(text)
  assert _THEIRS.encode(text, add_special_tokens=False).ids == ids
  assert _THEIRS.decode(ids, skip_special_tokens=False) == text


def test_transformers_loads_it_with_the_special_ids(tmp_path):
  export._write_tokenizer(  # pylint: disable=protected-access
      _OURS, export.config_lib.TokenizerConfig(), str(tmp_path))
  loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id) == (
      _OURS.pad_id, _OURS.eos_id, _OURS.bos_id)
  text = protocol.answer('42') + '\n<tool>x</tool>é'
  assert loaded(text, add_special_tokens=False).input_ids == _OURS.encode(text)
