"""LoRA adapters: no-op when fresh, trained alone, merged exactly."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rao_jax import testing
from rao_jax.model import hf_io
from rao_jax.model import lora
from rao_jax.rl import update

_CONFIG = lora.LoraConfig(rank=4, alpha=8.0)


def _tokens():
  return jnp.asarray(np.random.default_rng(0).integers(3, 300, (2, 24)))


def _randomise_adapters(model, seed=1):
  """B is zero when fresh; give every adapter a visible update."""
  state = nnx.state(model, nnx.LoRAParam)
  leaves, treedef = jax.tree.flatten(state)
  rng = np.random.default_rng(seed)
  nnx.update(model, jax.tree.unflatten(treedef, [
      jnp.asarray(0.05 * rng.standard_normal(x.shape), x.dtype)
      for x in leaves]))


def test_fresh_adapters_change_nothing():
  model = testing.tiny_model()
  want = testing.logits(model, _tokens())
  lora.add_adapters(model, _CONFIG)
  assert lora.num_adapter_params(model) > 0
  np.testing.assert_array_equal(testing.logits(model, _tokens()), want)


@pytest.mark.parametrize('targets', [lora.TARGETS, ('gate_up',), ('o',)])
def test_merged_model_computes_the_adapted_one(targets, tmp_path):
  model = testing.tiny_model()
  plain = testing.logits(model, _tokens())
  lora.add_adapters(model, lora.LoraConfig(rank=4, alpha=8.0,
                                           targets=targets))
  _randomise_adapters(model)
  adapted = testing.logits(model, _tokens())
  assert np.max(np.abs(adapted - plain)) > 1e-2  # the adapters matter
  lora.merged(model)
  assert lora.num_adapter_params(model) == 0
  np.testing.assert_allclose(testing.logits(model, _tokens()), adapted,
                             atol=2e-5)
  # Merged, it is a plain checkpoint again.
  hf_io.save_hf(model, str(tmp_path))
  np.testing.assert_allclose(
      testing.logits(hf_io.load_hf(str(tmp_path)), _tokens()), adapted,
      atol=2e-5)


def test_lora_sft_trains_only_the_adapters():
  model = lora.add_adapters(testing.tiny_model(), _CONFIG)
  base = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.LoRAParam)))
  optimizer = nnx.Optimizer(model, update.make_optimizer(update.OptimConfig(
      learning_rate=3e-3, weight_decay=0.0)), wrt=lora.trained(model))
  # Its moments are the adapters' alone: two per adapter parameter.
  moments = sum(x.size for x in jax.tree.leaves(
      nnx.state(optimizer, nnx.OptState)) if x.ndim)
  assert moments == 2 * lora.num_adapter_params(model)
  model, seen = testing.sft_losses(model, optimizer, [np.arange(40) % 50 + 3],
                                   bucket=48, logprob_chunk=16,
                                   learning_rate=3e-3, steps=8)
  assert seen[-1] < 0.8 * seen[0], seen
  after = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.LoRAParam)))
  jax.tree.map(np.testing.assert_array_equal, after, base)


def test_config_is_validated():
  with pytest.raises(ValueError, match='lora.targets'):
    lora.LoraConfig(rank=2, targets=('qkv',))
  with pytest.raises(ValueError, match='lora.rank'):
    lora.LoraConfig(rank=-1)


@pytest.mark.slow
def test_the_entry_point_trains_adapters_only_and_exports_them_merged(
    tmp_path):
  # SFT and RL through `python -m rao_jax.main` with rank-4 adapters: the
  # checkpoints hold the adapters and their optimiser state, not the base
  # weights; the adapters moved; the export is the initial model with the
  # saved adapters merged. (No held-out evaluation or figures: not checked.)
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  import config_testing  # pylint: disable=g-import-not-at-top
  import xla_env  # pylint: disable=g-import-not-at-top
  from configs import cpu_tiny  # pylint: disable=g-import-not-at-top
  from rao_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from rao_jax.model import params as params_lib  # pylint: disable=g-import-not-at-top
  from rao_jax.model import sharding  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, '-m', 'rao_jax.main',
       '--config=configs/cpu_tiny.py:smoke', f'--workdir={tmp_path}',
       '--config.lora.rank=4', '--config.log.progress_bar=False',
       *config_testing.UNEVALUATED],
      cwd=root, env=xla_env.env(8), capture_output=True, text=True,
      timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  steps = [int(d) for d in os.listdir(tmp_path / 'checkpoints')
           if d.isdigit()]
  saved = ocp.StandardCheckpointer().restore(
      tmp_path / 'checkpoints' / str(max(steps)) / 'state')
  model_saved = saved['0']  # (model, optimiser): the model's arrays
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_leaves_with_path(model_saved)]
  assert paths and all('lora' in p for p in paths), paths[:5]

  config = config_lib.from_config_dict(cpu_tiny.get_config('smoke'))
  model = params_lib.create_model(
      config.model, sharding.make_mesh(config.mesh.sizes()),
      config.sharding_rules, seed=config.seed)
  lora.add_adapters(model, lora.LoraConfig(rank=4, alpha=config.lora.alpha,
                                           targets=config.lora.targets))
  adapters = nnx.state(model, nnx.LoRAParam)
  flat = dict(jax.tree_util.tree_leaves_with_path(model_saved))
  moved = 0
  for path, variable in nnx.to_flat_state(adapters):
    value = flat[tuple(jax.tree_util.DictKey(str(k)) for k in path) +
                 (jax.tree_util.DictKey('value'),)]
    moved += int(path[-1] == 'lora_b' and np.any(np.asarray(value) != 0))
    variable[...] = jnp.asarray(value)
  assert moved, 'no adapter moved'
  nnx.update(model, adapters)
  want = testing.logits(lora.merged(model), _tokens())
  exported = hf_io.load_hf(str(tmp_path / 'hf'))
  assert not lora.num_adapter_params(exported)
  np.testing.assert_allclose(testing.logits(exported, _tokens()), want,
                             atol=2e-5)
