"""The `generate` mode: a greedy continuation of a prompt.

A smoke run of the model on the run's mesh (random weights or
`init_from_hf`): every row of the data-parallel batch decodes the same
prompt, and the continuation, its token ids, the time and the number of
compiled programs go to `<workdir>/generate.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import time
from typing import Any

from etils import epath
import jax

from rao_jax import config as config_lib
from rao_jax.runtime import multihost
from rao_jax.runtime import workdir as workdir_lib
from rao_jax.model import gemma
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.sampler import slots as slots_lib
from rao_jax.training import setup as setup_lib
from rao_jax.training import train_state as train_state_lib


def run(config: config_lib.RunConfig, workdir: str, *,
        start_over: bool = False) -> dict[str, Any]:
  """Decodes `generate.prompt` greedily with the run's initial model
  (random or `init_from_hf`); returns the summary. It reads no checkpoint,
  so any workdir will do."""
  s = setup_lib.setup(config, with_task=False)
  workdir = workdir_lib.prepare(workdir, config, start_over=start_over,
                                refuse_other_runs=False)
  model = train_state_lib.initial_model(config.model, config.init_from_hf,
                                        config.seed, s.mesh, s.rules)
  return generate(config.generate, model, s.tokenizer, s.mesh, s.rules,
                  workdir, seed=config.seed,
                  num_params=config.model.num_params())


def generate(gen: config_lib.GenerateConfig, model: gemma.Transformer,
             tokenizer: tokenizer_lib.Tokenizer, mesh: jax.sharding.Mesh,
             rules: Sequence[Any], workdir: epath.Path, *,
             seed: int, num_params: int) -> dict[str, Any]:
  """Decodes `gen.prompt` greedily (every row's PRNG key from `seed`);
  returns the summary, which reports the model's `num_params`."""
  prompt = [tokenizer.bos_id] + tokenizer.encode(gen.prompt)
  if len(prompt) + gen.max_new_tokens > gen.max_len:
    raise ValueError(f'generate.max_len={gen.max_len} cannot hold the prompt '
                     f'({len(prompt)} tokens) and generate.max_new_tokens='
                     f'{gen.max_new_tokens}')
  # One slot per data-parallel shard, so the batch divides over the mesh.
  rows = mesh.shape['data'] * mesh.shape['fsdp']
  sampler = slots_lib.SlotSampler(model, num_slots=rows, max_len=gen.max_len,
                                  mesh=mesh, rules=rules)
  start = time.perf_counter()
  sampler.admit([slots_lib.Request(prompt, jax.random.key(seed),
                                   gen.max_new_tokens, [tokenizer.eos_id])
                 for _ in range(rows)])
  turns = []
  while sampler.num_running:
    turns += sampler.decode(16)
  total_s = time.perf_counter() - start
  new_ids = [int(t) for t in sorted(turns, key=lambda t: t.slot)[0].tokens]
  summary = {
      'mode': 'generate', 'devices': len(mesh.devices.flat),
      'mesh': dict(mesh.shape), 'num_params': num_params,
      'prompt': gen.prompt, 'new_token_ids': new_ids,
      'continuation': tokenizer.decode(new_ids), 'total_s': total_s,
      'compiles': sampler.num_compiles(),
  }
  if not multihost.is_primary():
    return summary
  (workdir / 'generate.json').write_text(json.dumps(summary, indent=2))
  print(f'{num_params / 1e6:.2f}M-parameter model on {summary["devices"]} '
        f'device(s), mesh {summary["mesh"]}')
  print(f'greedy continuation of {gen.prompt!r} ({len(new_ids)} tokens in '
        f'{total_s:.1f} s including compilation): {summary["continuation"]!r}')
  return summary
