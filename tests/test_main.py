"""The real entry point, run as a user runs it, and the shipped configs."""

import json
import os
import subprocess
import sys

import pytest

import xla_env

from configs import cpu_tiny
from configs import qwen3_4b_tpu_v4
from configs import tpu_v4
from rao_jax import config as config_lib
from rao_jax.model import config as model_config
from rao_jax.model import params as params_lib
from rao_jax.plan import programs
from rao_jax.plan import targets

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args: str) -> subprocess.CompletedProcess:
  env = xla_env.env(8)
  return subprocess.run(
      [sys.executable, '-m', 'rao_jax.main', *args], cwd=_ROOT, env=env,
      capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_main_generates_on_a_sharded_mesh(tmp_path):
  result = _main('--config=configs/cpu_tiny.py', f'--workdir={tmp_path}',
                 '--config.mode=generate',
                 '--config.generate.max_new_tokens=5',
                 '--config.mesh.tensor=2')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / 'generate.json').read_text())
  assert summary['mesh'] == {'data': 1, 'fsdp': 4, 'tensor': 2}
  assert len(summary['new_token_ids']) == 5
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['mesh']['tensor'] == 2


@pytest.mark.parametrize('override, message', [
    ('--config.mode=nope', "config.mode='nope'"),
    ('--config.model.num_kv_heads=3', 'model.num_heads=4 is not a multiple'),
    ('--config.mesh.tensor=3', 'mesh'),
])
def test_main_names_the_bad_field(tmp_path, override, message):
  result = _main('--config=configs/cpu_tiny.py', f'--workdir={tmp_path}',
                 '--config.mode=generate', override)
  assert result.returncode != 0
  assert message in result.stderr
  # Refused before any work: nothing was generated.
  assert not (tmp_path / 'generate.json').exists()


def test_configs_build_valid_models():
  for module in (cpu_tiny, tpu_v4, qwen3_4b_tpu_v4):
    config = module.get_config()
    cfg = model_config.from_dict(config.model.to_dict())
    assert cfg.num_layers == len(cfg.layer_types)
  tiny = model_config.from_dict(cpu_tiny.get_config().model.to_dict())
  assert tiny.num_params() < 2_000_000


@pytest.mark.parametrize('module, arg', [
    (tpu_v4, None), (tpu_v4, 'v4-8'), (qwen3_4b_tpu_v4, None),
    (qwen3_4b_tpu_v4, 'v4-8')])
def test_tpu_configs_shard_evenly_and_their_arrays_fit_hbm(module, arg):
  # The arrays a run holds throughout, from shapes and shardings; the full
  # plan, programs included, is tests/test_plan.py's (slow).
  config = module.get_config(arg)
  config.tokenizer.path = '/checkpoints/model'
  config = config_lib.from_config_dict(config)
  target = targets.target(config.plan.topology, config.plan.hbm_gib, False)
  mesh = targets.make_mesh(config.mesh.sizes(), target)
  shape, rules = dict(mesh.shape), config.sharding_rules
  params_lib.check_shardable(config.model, mesh, rules)
  state = programs.train_state(config.model, config.optim, rules)[1]
  caches = programs.slot_state(config.model, config.sampler.num_slots,
                               config.sampler.max_len, rules)
  arrays = state.device_bytes(shape) + 2 * caches.device_bytes(shape)
  assert arrays < target.hbm_bytes / 2, arrays / targets.GIB
