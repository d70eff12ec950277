"""The tokenizer checks: a tokenizer that cannot serve the protocol or the
model is refused, naming the field, before any weight is read."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import tokenizers

from rao_jax import config as config_lib
from rao_jax.training import policy_tokenizer
from rao_jax.agent import chat as chat_lib
from rao_jax.model import config as model_config
from rao_jax.model import tokenizer as tokenizer_lib

import tokenizer_testing
import xla_env

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODEL = model_config.tiny(vocab_size=512)


@pytest.fixture(scope='module')
def bpe():
  return tokenizer_testing.train_bpe(500)


def _hf(path, bpe, template=chat_lib.GEMMA_TEMPLATE, settings=None):
  """A tokenizer directory (its chat template `template`, None for none)
  and its config section, which uses that template and the preamble."""
  tokenizer_testing.write_tokenizer_dir(
      str(path), bpe, tokenizer_testing.GEMMA_CONFIG if settings is None
      else settings, template)
  config = config_lib.TokenizerConfig(kind='hf', path=str(path),
                                      chat_template='checkpoint',
                                      preamble=True)
  return tokenizer_lib.HFTokenizer(str(path)), config


def test_a_good_tokenizer_passes(bpe, tmp_path):
  tokenizer, config = _hf(tmp_path, bpe)
  chat = policy_tokenizer.check(tokenizer, _MODEL, config)
  assert chat.source == chat_lib.GEMMA_TEMPLATE and chat.preamble
  byte = config_lib.TokenizerConfig()
  policy_tokenizer.check(policy_tokenizer.build(byte, 384),
                         model_config.tiny(), byte)


def test_a_vocabulary_larger_than_the_model_is_refused(bpe, tmp_path):
  tokenizer, config = _hf(tmp_path, bpe)
  with pytest.raises(ValueError, match=r'tokenizer\.path=.*model\.vocab_size'
                     r'=256 of init_from_hf=X'):
    policy_tokenizer.check(tokenizer, model_config.tiny(vocab_size=256),
                           config, model_source='init_from_hf=X')


def test_missing_or_outside_special_ids_are_refused(bpe, tmp_path):
  no_eos = dict(tokenizer_testing.GEMMA_CONFIG, eos_token='<nope>')
  tokenizer, config = _hf(tmp_path / 'eos', bpe, settings=no_eos)
  with pytest.raises(ValueError, match='no eos token'):
    policy_tokenizer.check(tokenizer, _MODEL, config)
  # Qwen's tokenizers have no bos: fine with a template, not for the raw
  # protocol, which starts every prompt with it.
  no_bos = dict(tokenizer_testing.GEMMA_CONFIG, bos_token=None)
  tokenizer, config = _hf(tmp_path / 'bos', bpe, settings=no_bos)
  assert tokenizer.bos_id is None
  policy_tokenizer.check(tokenizer, _MODEL, config)
  raw = dataclasses.replace(config, chat_template='none')
  with pytest.raises(ValueError, match='no bos token.*tokenizer.chat_template'):
    policy_tokenizer.check(tokenizer, _MODEL, raw)
  tokenizer.pad_id = 600
  with pytest.raises(ValueError, match='pad id 600 is outside model'):
    policy_tokenizer.check(tokenizer, _MODEL, config)


def test_a_tag_that_does_not_come_back_is_refused(bpe, tmp_path):
  bpe = tokenizers.Tokenizer.from_str(bpe.to_str())
  bpe.normalizer = tokenizers.normalizers.Replace('/', '|')
  tokenizer, config = _hf(tmp_path, bpe)
  with pytest.raises(ValueError, match=r"tokenizer\.path=.*'</think>' "
                     'encodes to'):
    policy_tokenizer.check(tokenizer, _MODEL, config)


@pytest.mark.parametrize('template, message', [
    ("{{ raise_exception('no') }}", 'does not render'),
    ('{% for m in messages %}', 'does not parse'),
    ("{% for m in messages %}{{ m['role'] }}{% endfor %}", 'drops the '
     'assistant'),
    ("{% for m in messages %}{{ m['content'] if m['role'] == 'assistant' "
     "else 'hi' }}{% endfor %}", 'lose the protocol'),
])
def test_a_template_that_does_not_render_is_refused(bpe, tmp_path, template,
                                                    message):
  tokenizer, config = _hf(tmp_path, bpe, template)
  with pytest.raises(ValueError, match="tokenizer.chat_template='checkpoint'"
                     f'.*{message}'):
    policy_tokenizer.check(tokenizer, _MODEL, config)


def test_checkpoint_without_a_template_is_refused(bpe, tmp_path):
  tokenizer, config = _hf(tmp_path, bpe, None)
  assert tokenizer.chat_template is None
  with pytest.raises(ValueError, match="chat_template='checkpoint'.*no chat "
                     'template'):
    policy_tokenizer.check(tokenizer, _MODEL, config)


def test_byte_tokenizer_takes_no_template():
  with pytest.raises(ValueError, match=r'tokenizer\.chat_template=.gemma. '
                     'needs tokenizer.kind="hf"'):
    config_lib.TokenizerConfig(chat_template='gemma')
  with pytest.raises(ValueError, match='tokenizer.chat_template=.jinja.'):
    config_lib.TokenizerConfig(kind='hf', path='x', chat_template='jinja')


def _gemma3_config(vocab_size):
  return {'architectures': ['Gemma3ForCausalLM'], 'model_type': 'gemma3_text',
          'vocab_size': vocab_size, 'hidden_size': 64,
          'intermediate_size': 96, 'num_hidden_layers': 2,
          'num_attention_heads': 2, 'num_key_value_heads': 1, 'head_dim': 32,
          'query_pre_attn_scalar': 32, 'sliding_window': 16,
          'layer_types': ['sliding_attention', 'full_attention'],
          'rope_parameters': {
              'full_attention': {'rope_type': 'default', 'rope_theta': 1e6},
              'sliding_attention': {'rope_type': 'default',
                                    'rope_theta': 1e4}}}


def _main(directory, *overrides):
  env = xla_env.env(8)
  return subprocess.run(
      [sys.executable, '-m', 'rao_jax.main', '--config=configs/tpu_v4.py',
       f'--workdir={directory}/run', f'--config.init_from_hf={directory}',
       f'--config.tokenizer.path={directory}', '--config.distributed=False',
       '--config.mesh.fsdp=-1', '--config.sampler.num_slots=8', *overrides],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_entry_point_refuses_the_tokenizer_before_the_weights(bpe,
                                                                  tmp_path):
  # Weights that cannot load: only the checks can say anything first.
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(_gemma3_config(512), f)
  (tmp_path / 'model.safetensors').write_bytes(b'\x00garbage' * 64)
  broken = tokenizers.Tokenizer.from_str(bpe.to_str())
  broken.normalizer = tokenizers.normalizers.Replace('<', '[')
  tokenizer_testing.write_tokenizer_dir(
      str(tmp_path), broken, tokenizer_testing.GEMMA_CONFIG,
      chat_lib.GEMMA_TEMPLATE)
  result = _main(tmp_path)
  assert result.returncode != 0
  assert f'tokenizer.path={tmp_path}' in result.stderr, result.stderr[-3000:]
  assert 'encodes to' in result.stderr
  assert 'safetensors' not in result.stderr.lower()
  # The vocabulary is checked against init_from_hf's config.json.
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(_gemma3_config(256), f)
  tokenizer_testing.write_tokenizer_dir(
      str(tmp_path), bpe, tokenizer_testing.GEMMA_CONFIG,
      chat_lib.GEMMA_TEMPLATE)
  result = _main(tmp_path)
  assert 'model.vocab_size=256 of init_from_hf' in result.stderr, (
      result.stderr[-3000:])
  # With the tokenizer fixed, the garbage weights are what fails.
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(_gemma3_config(512), f)
  result = _main(tmp_path)
  assert result.returncode != 0
  assert 'SafetensorError' in result.stderr.splitlines()[-1], (
      result.stderr[-3000:])
