r"""A tiny Gemma-3-style model on the CPU: the tests, the notebook, newcomers.

Run (about a minute on 2 CPU cores, most of it compilation):

  python -m rao_jax.main --config=configs/cpu_tiny.py --workdir=/tmp/rao_tiny

It builds the ~0.6M-parameter model sharded over all local devices, greedily
continues `generate.prompt` with the KV cache and writes
`<workdir>/generate.json` with the tokens and timings. Override any field:
`--config.model.num_layers=4 --config.generate.max_new_tokens=64`.

The model follows ../shared/FINDINGS.md: 3 layers, width 128, 4 heads; a
byte vocabulary with the protocol tags as single tokens (384 entries).
"""

import dataclasses

import ml_collections

from rao_jax.model import config as model_config
from rao_jax.model import sharding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The cpu_tiny config; `arg` is unused for now (variants go there)."""
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.mode = 'generate'

  # Every field spelled out, so `--config.model.<field>=...` can override it.
  config.model = dataclasses.asdict(model_config.tiny())
  config.tokenizer = dict(kind='byte', path='')
  # A Hugging Face checkpoint directory to start from instead of random init.
  config.init_from_hf = ''

  config.generate = dict(prompt='<task>sum 3 4</task>', max_new_tokens=32,
                         max_len=128)

  config.mesh = dict(data=1, fsdp=-1, tensor=1)
  config.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
  return config
