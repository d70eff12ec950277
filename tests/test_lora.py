"""LoRA adapters: no-op when fresh, trained alone, merged exactly."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rao_jax import testing
from rao_jax.model import hf_io
from rao_jax.model import lora
from rao_jax.rl import losses
from rao_jax.rl import packing
from rao_jax.rl import update

_CONFIG = lora.LoraConfig(rank=4, alpha=8.0)


def _logits(model, tokens_BT):
  positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]),
                                  tokens_BT.shape)
  return np.asarray(model(tokens_BT, positions_BT)[0])


def _tokens():
  return jnp.asarray(np.random.default_rng(0).integers(3, 300, (2, 24)))


def _randomise_adapters(model, seed=1):
  """B is zero when fresh; give every adapter a visible update."""
  state = nnx.state(model, nnx.LoRAParam)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  nnx.update(model, jax.tree.unflatten(treedef, [
      0.05 * jax.random.normal(k, x.shape, x.dtype)
      for k, x in zip(keys, leaves)]))


def test_fresh_adapters_change_nothing():
  model = testing.tiny_model()
  want = _logits(model, _tokens())
  lora.add_adapters(model, _CONFIG)
  assert lora.num_adapter_params(model) > 0
  np.testing.assert_array_equal(_logits(model, _tokens()), want)


@pytest.mark.parametrize('targets', [lora.TARGETS, ('gate_up',), ('o',)])
def test_merged_model_computes_the_adapted_one(targets, tmp_path):
  model = testing.tiny_model()
  plain = _logits(model, _tokens())
  lora.add_adapters(model, lora.LoraConfig(rank=4, alpha=8.0,
                                           targets=targets))
  _randomise_adapters(model)
  adapted = _logits(model, _tokens())
  assert np.max(np.abs(adapted - plain)) > 1e-2  # the adapters matter
  lora.merged(model)
  assert lora.num_adapter_params(model) == 0
  np.testing.assert_allclose(_logits(model, _tokens()), adapted, atol=2e-5)
  # Merged, it is a plain checkpoint again.
  hf_io.save_hf(model, str(tmp_path))
  np.testing.assert_allclose(
      _logits(hf_io.load_hf(str(tmp_path)), _tokens()), adapted, atol=2e-5)


def test_lora_sft_trains_only_the_adapters():
  model = lora.add_adapters(testing.tiny_model(), _CONFIG)
  base = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.LoRAParam)))
  optimizer = nnx.Optimizer(model, update.make_optimizer(update.OptimConfig(
      learning_rate=3e-3, weight_decay=0.0)), wrt=lora.trained(model))
  # Its moments are the adapters' alone: two per adapter parameter.
  moments = sum(x.size for x in jax.tree.leaves(
      nnx.state(optimizer, nnx.OptState)) if x.ndim)
  assert moments == 2 * lora.num_adapter_params(model)
  tokens = np.arange(40) % 50 + 3
  seqs = [packing.TrainSequence(tokens, np.ones(40, np.int32),
                                np.zeros(40), 1.0, 1.0)]
  (batch,), _ = packing.pack(seqs, buckets=[48], rows_per_batch=1)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  config = losses.LossConfig(estimator='sft', logprob_chunk=16)
  graphdef, state = update.split_train_state(model, optimizer)
  seen = []
  for _ in range(8):
    state, metrics = update.train_step(graphdef, state, batch, config, 3e-3)
    seen.append(float(metrics['loss']))
  assert seen[-1] < 0.8 * seen[0], seen
  model, _ = nnx.merge(graphdef, state)
  after = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.LoRAParam)))
  jax.tree.map(np.testing.assert_array_equal, after, base)


def test_config_is_validated():
  with pytest.raises(ValueError, match='lora.targets'):
    lora.LoraConfig(rank=2, targets=('qkv',))
  with pytest.raises(ValueError, match='lora.rank'):
    lora.LoraConfig(rank=-1)
