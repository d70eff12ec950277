"""Plan mode: the liveness estimate, its agreement with XLA's own figures,
the shipped TPU configs, and the refusal of a run that does not fit."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs import cpu_tiny
from configs import gemma3_270m
from configs import qwen3_4b_tpu_v4
from configs import tpu_v4
from rao_jax import config as config_lib
from rao_jax import plan as plan_lib
from rao_jax import main as main_lib
from rao_jax.plan import liveness
from rao_jax.plan import programs
from rao_jax.plan import targets
from tests import config_testing

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MIB = 2**20


def _peak(f, *args, **kwargs):
  return liveness.peak_bytes(jax.make_jaxpr(f)(*args), **kwargs)


# ------------------------------------------------------------ the walk


def test_an_elementwise_chain_stores_only_its_result():
  x = jax.ShapeDtypeStruct((256, 256), jnp.float32)
  size = 256 * 256 * 4
  assert _peak(lambda x: jnp.tanh(x * 2.0 + 1.0), x) == size

  def read_twice(x):
    y = x + 1.0
    return y * y.sum()

  # A value read twice is stored: it, its sum and the result are alive.
  assert _peak(read_twice, x) == size * 2 + 4


def test_a_donated_output_costs_nothing_and_a_gathered_weight_is_held():
  x = jax.ShapeDtypeStruct((64, 128), jnp.float32)
  w = jax.ShapeDtypeStruct((128, 128), jnp.float32)
  out = 64 * 128 * 4
  assert _peak(lambda x, w: x @ w, x, w) == out
  assert _peak(lambda x, w: x @ w, x, w, output_bytes=[0]) == 0
  # A weight gathered for the matmul is alive until its last use.
  held = 128 * 128 * 4
  assert _peak(lambda x, w: x @ w, x, w, held_inputs=[0, held]) == held + out


def test_updates_in_place_and_loops_reuse_their_operand():
  cache = jax.ShapeDtypeStruct((8, 1024), jnp.float32)
  row = jax.ShapeDtypeStruct((1, 1024), jnp.float32)
  write = lambda c, r: jax.lax.dynamic_update_slice(c * 2.0, r, (3, 0))
  # The doubled cache is the one buffer: the update writes into it.
  assert _peak(write, cache, row) == 8 * 1024 * 4

  def loop(c):
    return jax.lax.fori_loop(0, 4, lambda i, c: c.at[i].set(c[i] + 1.0),
                             c * 1.0)

  # The loop's carry is the copy `c * 1.0`, updated in place (a copy per
  # step would double it); each step's row is transient.
  carry, row_bytes = 8 * 1024 * 4, 1024 * 4
  assert carry < _peak(loop, cache) <= carry + 2 * row_bytes


def test_a_split_shape_costs_its_share():
  g = jax.ShapeDtypeStruct((512, 64), jnp.float32)
  assert _peak(lambda g: g * 3.0, g, split={(512, 64): 8}) == 512 * 64 * 4 // 8


# ------------------------------------------------ estimate vs the compiler


def _within(estimated, compiled, tolerance=0.10):
  return abs(estimated - compiled) <= tolerance * compiled


def test_estimate_agrees_with_xla_on_this_cpu():
  config = config_testing.run_config(None)
  mesh = targets.make_mesh(config.mesh.sizes(),
                           targets.target('', 1.0, True))
  shape, rules = dict(mesh.shape), config.sharding_rules
  rl, sampler = config.rl, config.sampler
  compiled = programs.compile_train_step(
      config.model, config.optim, rl.loss, rl.rows_per_batch,
      max(rl.pack_lengths), mesh, rules)
  estimated = programs.estimate_train_step(
      config.model, config.optim, rl.loss, rl.rows_per_batch,
      max(rl.pack_lengths), shape, rules)
  assert compiled.compiled and not estimated.compiled
  # Inputs are the sharded arrays (XLA counts a few scalars otherwise);
  # temporaries the walk's estimate.
  assert _within(estimated.arguments, compiled.arguments, 0.01)
  assert _within(estimated.total, compiled.total), (estimated, compiled)
  compiled = programs.compile_decode(config.model, sampler.num_slots,
                                     sampler.max_len, sampler.decode_steps,
                                     mesh, rules)
  estimated = programs.estimate_decode(config.model, sampler.num_slots,
                                       sampler.max_len, sampler.decode_steps,
                                       shape, rules)
  assert _within(estimated.arguments, compiled.arguments, 0.01)
  assert _within(estimated.total, compiled.total), (estimated, compiled)


def test_exact_figures_are_the_sharded_arrays():
  config = config_testing.run_config(None)
  shape = {'data': 1, 'fsdp': 8, 'tensor': 1}
  p = plan_lib.plan(config_testing.run_config(
      None, mode='plan', **{'plan.compile': False}))
  persistent = {i.name: i.device_bytes for i in p.phases[-1].persistent}
  model = config.model
  # fp32 weights split 8 ways, norm scales whole on every device.
  norms = sum(g['count'] * g['shape'][0] for g in p.groups
              if g['logical'] == ('norm',))
  assert persistent['parameters'] == ((model.num_params() - norms) * 4 // 8
                                      + norms * 4)
  # Adam's two moments, fp32 like the parameters (plus scalar counts).
  assert 2 * persistent['parameters'] <= persistent[
      'optimiser state (adamw)'] < 2 * persistent['parameters'] + 64
  cache = (model.num_layers * 2 * config.sampler.num_slots *
           model.num_kv_heads * config.sampler.max_len * model.head_dim * 4)
  # One sampler's: greedy and sampled rollouts share its slots.
  assert cache // 8 <= persistent['KV cache'] < 2 * cache // 8
  assert sum(g['device_bytes'] for g in p.groups) == persistent['parameters']
  assert p.mesh == shape and p.fits


# ------------------------------------------------ the shipped TPU configs


def _tpu_plan(module, arg):
  config = module.get_config(arg)
  config.mode = 'plan'
  config.plan.compile = False  # estimates: no libtpu needed
  return plan_lib.plan(config_lib.from_config_dict(config))


# Each traces a 1B-4B model's programs: 15-30 s on 2 cores.
@pytest.mark.slow
@pytest.mark.parametrize('module, arg', [
    (tpu_v4, 'v4-8'), (tpu_v4, None), (qwen3_4b_tpu_v4, 'v4-8'),
    (qwen3_4b_tpu_v4, 'v4-32'), (gemma3_270m, 'v4-8')])
def test_shipped_tpu_configs_fit_their_slice(module, arg):
  p = _tpu_plan(module, arg)
  assert p.target.name == (arg or 'v4-32')
  assert p.target.hbm_bytes == 32 * targets.GIB
  assert [ph.name for ph in p.phases] == ['sft', 'rl']
  assert p.fits, p.text()
  assert plan_lib.refusal(p) == ''


@pytest.mark.slow
def test_an_oversized_config_is_refused_naming_its_fields():
  config = tpu_v4.get_config('v4-8')
  config.mode = 'plan'
  config.plan.compile = False
  config.sampler.num_slots *= 4
  with pytest.raises(ValueError) as refused:
    plan_lib.run(config_lib.from_config_dict(config))
  message = str(refused.value)
  assert 'does not fit v4-8' in message
  assert 'sampler.num_slots' in message and 'sampler.max_len' in message


def test_variants_are_named_as_in_cpu_tiny():
  assert tpu_v4.get_config().plan.topology == 'v4-32'
  assert tpu_v4.get_config('v4-8').mesh.fsdp == 4
  assert qwen3_4b_tpu_v4.get_config('v4-8').model.num_layers == 36
  with pytest.raises(ValueError, match='unknown variant'):
    tpu_v4.get_config('v5e-8')


def test_lora_plans_the_adapters_optimiser_state_alone():
  def optimiser_state(rank):
    config = cpu_tiny.get_config('smoke')
    config.mode = 'plan'
    config.plan.compile = False
    config.lora.rank = rank
    config.lora.targets = ('q', 'v')
    p = plan_lib.plan(config_lib.from_config_dict(config))
    (item,) = [i for i in p.phases[0].persistent
               if i.name.startswith('optimiser state')]
    return item.device_bytes

  full, adapters = optimiser_state(0), optimiser_state(2)
  assert 0 < adapters < full / 5


# ------------------------------------------------------- the plan mode


def test_plan_mode_needs_no_tokenizer_and_joins_no_slice():
  config = tpu_v4.get_config()
  config.mode = 'plan'
  run = config_lib.from_config_dict(config)  # tokenizer.path is ''
  assert run.mode == 'plan' and not run.distributed


def test_plan_config_is_checked():
  with pytest.raises(ValueError, match='plan.headroom'):
    config_testing.run_config(None, **{'plan.headroom': 1.5})
  config = config_testing.run_config(None, mode='plan',
                                     **{'plan.topology': 'v9-8'})
  with pytest.raises(ValueError, match="plan.topology='v9-8'"):
    plan_lib.plan(config)


def test_plan_mode_is_dispatched_without_a_workdir(tmp_path):
  config = config_testing.run_config(None, mode='plan',
                                     **{'plan.compile': False})
  summary = main_lib.run(config, str(tmp_path / 'unused'))
  assert summary['fits'] and summary['target'] == 'this machine'
  assert set(summary['phases']) == {'sft', 'rl'}
  assert not (tmp_path / 'unused').exists()


@pytest.mark.slow
def test_main_refuses_a_run_that_does_not_fit(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  result = subprocess.run(
      [sys.executable, '-m', 'rao_jax.main', '--config=configs/cpu_tiny.py',
       f'--workdir={tmp_path}', '--config.mode=plan',
       '--config.plan.compile=False', '--config.plan.hbm_gib=0.01'],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert 'DOES NOT FIT' in result.stdout
  assert 'does not fit this machine' in result.stderr
  assert 'rl.rows_per_batch' in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not targets.libtpu_present(),
                    reason='libtpu is not installed: nothing compiles for TPU')
def test_libtpu_compiles_for_a_v4_slice():
  config = config_testing.run_config(
      None, mode='plan', **{'plan.topology': 'v4-8', 'plan.hbm_gib': 0.0})
  p = plan_lib.plan(config)
  assert p.target.devices is not None and p.target.platform == 'tpu'
  assert p.mesh == {'data': 1, 'fsdp': 4, 'tensor': 1}
  for phase in p.phases:
    assert {i.how for i in phase.programs} == {plan_lib.planner.COMPILED}
  assert p.fits
