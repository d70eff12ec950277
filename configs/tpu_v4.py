r"""A Gemma-3-1B-class model on a Cloud TPU v4-32 slice (16 chips, 32 GiB each).

Run on every host of the slice (see launch/):

  python -m rao_jax.main --config=configs/tpu_v4.py --workdir=gs://BUCKET/run

Memory plan per chip (16-way FSDP, parameters and Adam state in fp32):
  parameters 1.0 B x 4 B / 16            = 0.25 GiB
  Adam moments 2 x 1.0 B x 4 B / 16      = 0.5  GiB
  gradients 1.0 B x 4 B / 16             = 0.25 GiB
  KV cache, bf16: 256 slots x 4096 positions x 26 layers x 2 (K, V)
    x 1 KV head x 256 head dim x 2 B / 16 = 1.6  GiB
  training activations (rematerialised per layer) for 64 rows of 4096
    tokens x 1152 width x 26 layers x 2 B / 16 = 0.9 GiB, plus the vocab
    projection done in chunks.
That leaves most of the 32 GiB HBM for XLA's temporaries; tests check that
the sharding plan divides evenly on this mesh.
"""

import dataclasses

import ml_collections

from rao_jax.model import config as model_config
from rao_jax.model import sharding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.mode = 'generate'

  config.model = dataclasses.asdict(
      model_config.gemma3_1b(dtype='bfloat16', param_dtype='float32'))
  # Weights and tokenizer of a Hugging Face Gemma 3 1B checkpoint directory,
  # copied next to the run (nothing is downloaded at run time).
  config.tokenizer = dict(kind='hf', path='')
  config.init_from_hf = ''

  config.generate = dict(prompt='<task>sum 3 4</task>', max_new_tokens=64,
                         max_len=4096)

  # One host-local axis for FSDP over all 16 chips; MQA (1 KV head) leaves
  # nothing for a tensor axis to split.
  config.mesh = dict(data=1, fsdp=16, tensor=1)
  config.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
  return config
