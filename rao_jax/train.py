"""The outer loop: turns a config into a mesh, a model and a tokenizer, runs a mode.

Modes:
  generate: greedy continuation of `config.generate.prompt` with the KV
    cache; the smoke run of a fresh install and of a new config.

Every config value is checked before anything is compiled, and errors name
the field (`config.mode`, `model.num_heads`, `sharding_rules[3]`, ...).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from rao_jax import model as model_lib
from rao_jax.model import config as model_config
from rao_jax.model import gemma
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.model import tokenizer as tokenizer_lib

MODES = ('generate',)


def build_tokenizer(config: ml_collections.ConfigDict,
                    vocab_size: int) -> tokenizer_lib.Tokenizer:
  """The tokenizer named by `config.tokenizer`; checks it fits the vocab."""
  if config.kind == 'byte':
    tok = tokenizer_lib.ByteTokenizer()
  elif config.kind == 'hf':
    if not config.path:
      raise ValueError('tokenizer.path must name a directory with '
                       'tokenizer.json when tokenizer.kind="hf"')
    tok = tokenizer_lib.HFTokenizer(config.path)
  else:
    raise ValueError(f'tokenizer.kind={config.kind!r}: expected "byte" or '
                     '"hf"')
  if tok.vocab_size > vocab_size:
    raise ValueError(f'model.vocab_size={vocab_size} is smaller than the '
                     f'tokenizer\'s vocabulary ({tok.vocab_size})')
  return tok


def _check_config(config: ml_collections.ConfigDict) -> None:
  if config.mode not in MODES:
    raise ValueError(f'config.mode={config.mode!r}: expected one of {MODES}')
  gen = config.generate
  if gen.max_new_tokens <= 0:
    raise ValueError(f'generate.max_new_tokens={gen.max_new_tokens}: must be '
                     '> 0')
  if gen.max_len <= gen.max_new_tokens:
    raise ValueError(f'generate.max_len={gen.max_len} leaves no room for a '
                     f'prompt and {gen.max_new_tokens} new tokens')


def generate_greedy(model: gemma.Transformer, prompt_ids: list[int], *,
                    max_new_tokens: int, max_len: int, eos_id: int,
                    num_rows: int = 1) -> tuple[list[int], dict[str, float]]:
  """Greedy continuation of one prompt, token by token with the KV cache.

  The prompt is repeated on `num_rows` rows so the batch splits evenly over
  the mesh's data axes; every row computes the same continuation.
  """
  if not prompt_ids or len(prompt_ids) + max_new_tokens > max_len:
    raise ValueError(f'prompt of {len(prompt_ids)} tokens plus '
                     f'{max_new_tokens} new ones does not fit max_len='
                     f'{max_len}')
  # Parameters are an argument, not constants baked into the program.
  graphdef, state = nnx.split(model)

  # The cache is donated: XLA updates it in place instead of copying it.
  @functools.partial(jax.jit, donate_argnames=('cache',))
  def step(state, tokens_BT, positions_BT, cache):
    logits_BTV, cache = nnx.merge(graphdef, state)(tokens_BT, positions_BT,
                                                   None, cache)
    return jnp.argmax(logits_BTV[:, -1], axis=-1), cache

  cache = gemma.init_cache(model.config, batch_size=num_rows, max_len=max_len)
  start = time.perf_counter()
  prompt_BT = jnp.tile(jnp.asarray([prompt_ids]), (num_rows, 1))
  next_B, cache = step(state, prompt_BT,
                       jnp.broadcast_to(jnp.arange(len(prompt_ids)),
                                        prompt_BT.shape), cache)
  new_ids = [int(next_B[0])]
  first_token_s = time.perf_counter() - start
  while len(new_ids) < max_new_tokens and new_ids[-1] != eos_id:
    position = len(prompt_ids) + len(new_ids) - 1
    next_B, cache = step(state, next_B[:, None],
                         jnp.full((num_rows, 1), position), cache)
    new_ids.append(int(next_B[0]))
  total_s = time.perf_counter() - start
  return new_ids, {'time_to_first_token_s': first_token_s,
                   'total_s': total_s,
                   'tokens_per_s': len(new_ids) / total_s}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.mode` in `workdir`; returns the mode's summary."""
  # ---- Config: everything is validated before anything compiles.
  _check_config(config)
  model_cfg = model_config.from_dict(config.model.to_dict())
  mesh = sharding.make_mesh(config.mesh.to_dict())
  rules = sharding.normalize_rules(config.sharding_rules)
  params_lib.check_shardable(model_cfg, mesh, rules)
  tokenizer = build_tokenizer(config.tokenizer, model_cfg.vocab_size)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  logging.info('mesh %s, model %.2fM parameters', dict(mesh.shape),
               model_cfg.num_params() / 1e6)

  # ---- Model: created (or loaded) directly sharded.
  if config.init_from_hf:
    model = model_lib.load_hf(config.init_from_hf, mesh=mesh, rules=rules,
                              dtype=model_cfg.dtype,
                              param_dtype=model_cfg.param_dtype)
  else:
    model = params_lib.create_model(model_cfg, mesh, rules, seed=config.seed)

  # ---- Mode.
  with sharding.use_mesh(mesh, rules):
    prompt_ids = [tokenizer.bos_id] + tokenizer.encode(config.generate.prompt)
    new_ids, timing = generate_greedy(
        model, prompt_ids, max_new_tokens=config.generate.max_new_tokens,
        max_len=config.generate.max_len, eos_id=tokenizer.eos_id,
        num_rows=mesh.shape['data'] * mesh.shape['fsdp'])
  summary = {
      'mode': config.mode,
      'devices': len(mesh.devices.flat),
      'mesh': dict(mesh.shape),
      'num_params': model_cfg.num_params(),
      'prompt': config.generate.prompt,
      'new_token_ids': [int(i) for i in new_ids],
      'continuation': tokenizer.decode(new_ids),
      **timing,
  }
  with open(os.path.join(workdir, 'generate.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(f'{model_cfg.num_params() / 1e6:.2f}M-parameter model on '
        f'{summary["devices"]} device(s), mesh {summary["mesh"]}')
  print(f'prompt: {config.generate.prompt!r}')
  print(f'greedy continuation ({len(new_ids)} tokens in '
        f'{timing["total_s"]:.1f} s including compilation): '
        f'{summary["continuation"]!r}')
  print(f'wrote {os.path.join(workdir, "generate.json")}')
  return summary
