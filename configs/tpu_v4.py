r"""A Gemma-3-1B-class recursive agent on a Cloud TPU v4-32 slice.

16 chips with 32 GiB HBM each. Run on every host of the slice:

  python -m rao_jax.main --config=configs/tpu_v4.py --workdir=gs://BUCKET/run \
      --config.init_from_hf=/path/to/gemma-3-1b --config.tokenizer.path=...

It has the sections of configs/cpu_tiny.py with the paper's scale: 16 root
tasks x 8 trees a step, lr 3e-6, betas (0.9, 0.95), wd 0.017, grad clip 1.

Memory plan per chip (16-way FSDP, parameters and Adam state in fp32):
  parameters 1.0 B x 4 B / 16            = 0.25 GiB
  Adam moments 2 x 1.0 B x 4 B / 16      = 0.5  GiB
  gradients 1.0 B x 4 B / 16             = 0.25 GiB
  two samplers' KV caches, bf16: 2 x 256 slots x 4096 positions x 26 layers
    x 2 (K, V) x 1 KV head x 256 head dim x 2 B / 16 = 3.25 GiB
  training activations for 32 rows of 4096 tokens x 1152 width x 26
    layers x 2 B / 16 = 0.45 GiB per saved tensor kind, plus the vocab
    projection done 256 tokens at a time.
That leaves most of the 32 GiB HBM for XLA's temporaries; tests check that
the sharding plan divides evenly on this mesh.
"""

import dataclasses

from configs import cpu_tiny
from rao_jax.model import config as model_config
from rao_jax.rl import update


def get_config(arg: str | None = None):
  del arg
  config = cpu_tiny.get_config()
  config.distributed = True  # a v4-32 slice has 4 hosts
  config.model = dataclasses.asdict(
      model_config.gemma3_1b(dtype='bfloat16', param_dtype='float32'))
  # Weights and tokenizer of a Hugging Face Gemma 3 1B checkpoint directory,
  # copied next to the run (nothing is downloaded at run time).
  # Its turns in the checkpoint's own chat template, opened by the
  # protocol explained (docs/tokenizers.md).
  config.tokenizer = dict(kind='hf', path='', chat_template='checkpoint',
                          preamble=True)

  # The paper's protocol: train on medium, evaluate on easy/medium/hard.
  config.tasks.train_level = 'medium'
  config.tasks.sft_level = ''  # SFT on medium too
  config.tasks.task_kinds = ()  # every question kind
  config.tasks.eval_levels = ('easy', 'medium', 'hard')
  config.tasks.num_eval = 256
  config.sampler.num_slots = 256
  config.sampler.max_len = 4096
  config.sampler.decode_steps = 32
  config.rollout.budgets.max_new_tokens = 512
  config.rollout.window.inline_chars = 4096
  config.rollout.window.head_chars = 512
  config.rollout.budgets.max_tokens = 1 << 20
  config.rl.roots_per_step = 16
  config.rl.group_size = 8
  config.rl.credit.baseline = 'leave_one_out'  # the paper's Eq. 3
  config.rl.steps = 200
  config.rl.rows_per_batch = 32
  config.rl.pack_lengths = (1024, 2048, 4096)
  config.sft.rows_per_batch = 32
  config.sft.pack_lengths = (1024, 2048, 4096)
  config.rl.loss.logprob_chunk = 256
  config.sft.steps = 500
  config.sft.roots_per_step = 64
  config.sft.aggregation = 'token_mean'
  config.sft.optim = dataclasses.asdict(update.OptimConfig(
      learning_rate=1e-5, warmup_steps=50, decay_steps=450))
  config.optim = dataclasses.asdict(update.OptimConfig(
      learning_rate=3e-6, weight_decay=0.017))
  config.generate.max_len = 4096
  config.generate.max_new_tokens = 64

  # FSDP over all 16 chips; MQA (1 KV head) leaves nothing for a tensor axis
  # to split.
  config.mesh = dict(data=1, fsdp=16, tensor=1)
  config.checkpoint.every_steps = 20
  return config
