"""The Cloud TPU config end to end on the CPU, from Hugging Face checkpoints.

A tiny Gemma 3 and a tiny Qwen3 are written by `transformers`, each with a
byte-level BPE trained offline (every protocol tag several tokens) and its
family's chat template in the directory. `configs/tpu_v4.py`, shrunk by
overrides, then runs `train` (SFT, eval, RL, eval) from them, the
checkpoint's template and the protocol preamble included.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers

from rao_jax.agent import chat as chat_lib
from rao_jax.agent import protocol
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib

import tokenizer_testing
import xla_env

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VOCAB = 512
_MAX_LEN = 768
_SHAPES = dict(vocab_size=_VOCAB, hidden_size=64, intermediate_size=128,
               num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, head_dim=32)
# configs/tpu_v4.py at CPU size: a couple of steps of each phase, 8 slots,
# short windows, `easy` documents, fp32 (bf16 matmuls are slow on a CPU).
_OVERRIDES = (
    '--config.distributed=False', '--config.mesh.fsdp=-1',
    '--config.model.dtype=float32', '--config.sft.steps=2',
    '--config.sft.roots_per_step=2', '--config.rl.steps=1',
    '--config.rl.roots_per_step=1', '--config.rl.group_size=2',
    '--config.rl.skip_zero_advantage=False', '--config.sampler.num_slots=8',
    f'--config.sampler.max_len={_MAX_LEN}', '--config.sampler.decode_steps=16',
    '--config.rollout.budgets.max_new_tokens=48',
    '--config.rollout.budgets.max_steps=4',
    '--config.rollout.budgets.max_depth=2', '--config.rollout.eval_max_depth=2',
    '--config.rollout.window.inline_chars=48',
    '--config.rollout.window.head_chars=12',
    '--config.tasks.train_level=easy', "--config.tasks.eval_levels=('easy',)",
    '--config.tasks.num_eval=2', f'--config.sft.pack_lengths=({_MAX_LEN},)',
    '--config.sft.rows_per_batch=8', f'--config.rl.pack_lengths=({_MAX_LEN},)',
    '--config.rl.rows_per_batch=8', '--config.rl.loss.logprob_chunk=128',
    '--config.log.trees_every_steps=1', '--config.log.progress_bar=False')


def _gemma3(directory):
  config = transformers.Gemma3TextConfig(
      **_SHAPES, sliding_window=64, query_pre_attn_scalar=32,
      layer_types=['sliding_attention', 'full_attention'],
      rope_parameters={
          'full_attention': {'rope_type': 'default', 'rope_theta': 1e6},
          'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}})
  transformers.Gemma3ForCausalLM(config).save_pretrained(directory)
  return (tokenizer_testing.GEMMA_SPECIALS, tokenizer_testing.GEMMA_CONFIG,
          chat_lib.GEMMA_TEMPLATE, '<bos><start_of_turn>user\n')


def _qwen3(directory):
  config = transformers.Qwen3Config(
      **_SHAPES, tie_word_embeddings=True,
      rope_parameters={'rope_type': 'default', 'rope_theta': 1e6})
  transformers.Qwen3ForCausalLM(config).save_pretrained(directory)
  return (tokenizer_testing.QWEN_SPECIALS, tokenizer_testing.QWEN_CONFIG,
          chat_lib.QWEN_TEMPLATE, '<|im_start|>system\n')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  # Shared by both runs: the generated datasets are deterministic.
  return tmp_path_factory.mktemp('data')


@pytest.mark.slow
@pytest.mark.parametrize('family', [_gemma3, _qwen3],
                         ids=['gemma3', 'qwen3'])
def test_tpu_config_trains_from_a_hf_checkpoint(family, data_dir, tmp_path):
  checkpoint = tmp_path / 'hf'
  torch.manual_seed(0)
  specials, settings, template, opening = family(str(checkpoint))
  bpe = tokenizer_testing.train_bpe(_VOCAB, specials)
  tokenizer_testing.write_tokenizer_dir(str(checkpoint), bpe, settings,
                                        template)
  workdir = tmp_path / 'run'
  env = xla_env.env(8)
  result = subprocess.run(
      [sys.executable, '-m', 'rao_jax.main', '--config=configs/tpu_v4.py',
       f'--workdir={workdir}', f'--config.init_from_hf={checkpoint}',
       f'--config.tokenizer.path={checkpoint}',
       f'--config.tasks.data_dir={data_dir}', *_OVERRIDES],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]

  summary = json.loads((workdir / 'summary.json').read_text())
  for tag in ('after_sft', 'after_rl'):
    for name in ('recursive', 'single_agent'):
      assert f'{tag}/easy/{name}/root_success' in summary['evals']
  steps = sorted(int(d) for d in os.listdir(workdir / 'checkpoints')
                 if d.isdigit())
  assert steps[-1] == 3  # SFT's 2 steps, then RL's 1
  recorded = json.loads((workdir / 'config.json').read_text())
  assert recorded['tokenizer']['chat_template'] == 'checkpoint'

  tokenizer = tokenizer_lib.HFTokenizer(str(checkpoint))
  assert len(tokenizer.encode(protocol.ANSWER_END)) > 1  # tags are split
  trees = tree_lib.load(str(workdir / 'trees' / 'after_sft_easy.jsonl'))
  nodes = [n for t in trees for n in t.nodes]
  assert nodes and all(n.status in tree_lib.TERMINAL for n in nodes)
  for node in nodes:
    assert len(node.tokens) < _MAX_LEN
    # The checkpoint's template and the preamble open every node.
    text = tokenizer.decode(node.tokens)
    assert text.startswith(opening)
    assert protocol.preamble(()).split('\n')[0] in text
  # The demonstrations fit their window: the solvers counted the run's
  # tokens (prompt, preamble and template included).
  demos = [n for f in os.listdir(workdir / 'trees') if f.startswith('sft_')
           for t in tree_lib.load(str(workdir / 'trees' / f)) for n in t.nodes]
  assert all(n.answer != 'error: sub-agent ran out of context' for n in demos)

  # The trained policy went back out: `transformers` loads it and its
  # tokenizer, which encodes as the run's, and the weights moved in training.
  exported = workdir / 'hf'
  model = transformers.AutoModelForCausalLM.from_pretrained(str(exported))
  exported_tokenizer = transformers.AutoTokenizer.from_pretrained(
      str(exported))
  text = 'Find the total.<answer>42</answer>'
  assert exported_tokenizer.encode(text, add_special_tokens=False) == (
      tokenizer.encode(text))
  initial = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint))
  assert type(model) is type(initial)
  moved = [name for name, p in model.state_dict().items()
           if not torch.equal(p, initial.state_dict()[name])]
  assert moved
  ids = torch.tensor([tokenizer.encode(text)])
  assert torch.isfinite(model(ids).logits).all()
