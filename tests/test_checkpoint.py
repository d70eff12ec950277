"""Orbax checkpoints: exact round trip on shardings, corrupt newest skipped."""

import os

from flax import nnx
import jax
import numpy as np

from rao_jax.runtime import checkpoint
from rao_jax.model import config as config_lib
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.rl import update


def _train_state(seed):
  mesh = sharding.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  model = params_lib.create_model(config_lib.tiny(), mesh,
                                  sharding.DEFAULT_RULES, seed=seed)
  optimizer = nnx.Optimizer(model, update.make_optimizer(
      update.OptimConfig()), wrt=nnx.Param)
  return nnx.split((model, optimizer))


def _assert_equal_trees(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    if hasattr(x, 'sharding'):
      assert x.sharding == y.sharding


def test_round_trip_restores_values_shardings_and_record(tmp_path):
  _, state = _train_state(seed=0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
  record = {'step': 5, 'data': {'next_index': 17}, 'rng': [1, 2]}
  ckpt.save(5, state, record)
  ckpt.wait()
  _, target_state = _train_state(seed=1)  # other values, same structure
  restored = ckpt.restore_latest(checkpoint.abstract_like(target_state))
  assert restored.step == 5 and restored.record == record
  _assert_equal_trees(state, restored.state)
  ckpt.close()


def test_corrupt_newest_is_reported_and_skipped(tmp_path):
  _, state_a = _train_state(seed=0)
  _, state_b = _train_state(seed=2)
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=3)
  ckpt.save(1, state_a, {'step': 1})
  ckpt.save(2, state_b, {'step': 2})
  ckpt.wait()
  # Truncate every data file of the newest step's state.
  for root, _, files in os.walk(tmp_path / '2' / 'state'):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 64:
        with open(path, 'r+b') as f:
          f.truncate(16)
  restored = checkpoint.Checkpointer(str(tmp_path)).restore_latest(
      checkpoint.abstract_like(state_a))
  assert restored.step == 1
  assert [step for step, _ in restored.skipped] == [2]
  _assert_equal_trees(state_a, restored.state)


def test_empty_directory_restores_nothing(tmp_path):
  _, state = _train_state(seed=0)
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'none'))
  assert ckpt.restore_latest(checkpoint.abstract_like(state)) is None
