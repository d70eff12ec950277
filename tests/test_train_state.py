"""The train state restores into the layout of the phase its step names."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

import config_testing

from rao_jax.model import lora
from rao_jax.runtime import checkpoint as checkpoint_lib
from rao_jax.training import phases as phases_lib
from rao_jax.training import setup as setup_lib
from rao_jax.training import train_state


def _saved_sft_step(tmp_path, config):
  """An SFT-phase (AdamW) state saved at step 2, as the trainer saves it."""
  s = setup_lib.setup(config)
  sft = phases_lib.phases(config, ('sft', 'rl'))[0]
  state = train_state.fresh(_model(config, s), sft.optim, s.mesh, s.rules)
  ckpt = checkpoint_lib.Checkpointer(tmp_path / 'checkpoints')
  ckpt.save(2, state.arrays, {'step': 2, 'phase': sft.name})
  ckpt.close()
  return s, state.graphdef, state.arrays


def _model(config, s):
  return train_state.initial_model(config.model, config.init_from_hf,
                                   config.seed, s.mesh, s.rules)


def _optims(config):
  return {'sft': config.sft.optim, 'rl': config.optim}


def test_an_evaluation_restores_an_sft_step_with_sfts_optimiser(tmp_path):
  # RL with SGD: a fresh eval-mode state holds SGD's layout, the SFT
  # checkpoint AdamW's; the record's phase picks the layout.
  training = config_testing.run_config(**{'optim.optimizer': 'sgd'})
  s, sft_graphdef, sft_state = _saved_sft_step(tmp_path, training)
  evaluating = config_testing.run_config(
      **{'optim.optimizer': 'sgd', 'mode': 'eval'})
  initial = train_state.fresh(_model(evaluating, s), evaluating.optim, s.mesh,
                              s.rules)
  assert (jax.tree.structure(initial.arrays) !=
          jax.tree.structure(sft_state))  # the layouts differ
  ckpt = checkpoint_lib.Checkpointer(tmp_path / 'checkpoints')
  restored, record = train_state.restore(
      ckpt, initial, optims=_optims(evaluating), phases=(), mesh=s.mesh,
      rules=s.rules)
  ckpt.close()
  graphdef, state = restored.graphdef, restored.arrays
  assert restored.step == 2 and record['phase'] == 'sft'
  assert jax.tree.structure(state) == jax.tree.structure(sft_state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(sft_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The graphdef is SFT's too: it merges with the restored state into an
  # optimiser with Adam's moments.
  _, optimizer = nnx.merge(graphdef, state)
  _, sft_optimizer = nnx.merge(sft_graphdef, sft_state)
  assert (jax.tree.structure(nnx.state(optimizer)) ==
          jax.tree.structure(nnx.state(sft_optimizer)))
  assert 'mu' in repr(jax.tree_util.tree_structure(nnx.state(optimizer)))


def test_nothing_to_restore_keeps_the_fresh_state(tmp_path):
  config = config_testing.run_config()
  s = setup_lib.setup(config)
  phases = phases_lib.phases(config, ('sft', 'rl'))
  initial = train_state.fresh(_model(config, s), phases[0].optim, s.mesh,
                              s.rules)
  ckpt = checkpoint_lib.Checkpointer(tmp_path / 'checkpoints')
  restored, record = train_state.restore(
      ckpt, initial, optims=_optims(config), phases=phases, mesh=s.mesh,
      rules=s.rules)
  ckpt.close()
  assert (restored.step, record) == (0, {})
  assert restored is initial


def test_a_lora_checkpoint_holds_what_trains_and_restores_whole(tmp_path):
  # The adapters and their moments are saved; the base weights are not,
  # and come back from the initial model.
  config = config_testing.run_config(**{'lora.rank': 4})
  s = setup_lib.setup(config)
  phases = phases_lib.phases(config, ('sft', 'rl'))
  model = lora.add_adapters(_model(config, s), config.lora)
  state = train_state.fresh(model, phases[0].optim, s.mesh, s.rules)
  # Moved adapters (B is zero when fresh), and a step's optimiser state.
  arrays = jax.tree.map(
      lambda x: x + 1 if x.dtype == jnp.float32 else x,
      nnx.filter_state(state.arrays, nnx.Not(nnx.Param)))
  arrays = nnx.merge_state(state.arrays, arrays, jax.tree.map(
      lambda x: x + 0.5, nnx.filter_state(state.arrays, nnx.LoRAParam)))
  state = state.replace(arrays=arrays, step=3)
  saved = state.checkpointed()
  size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  # Adapters, Adam's two moments of them, and the optimiser's scalars.
  assert 3 * lora.num_adapter_params(model) <= size(saved) < 0.2 * size(
      state.arrays)
  ckpt = checkpoint_lib.Checkpointer(tmp_path / 'checkpoints')
  ckpt.save(3, saved, {'step': 3, 'phase': 'sft'})
  ckpt.close()

  initial = train_state.fresh(
      lora.add_adapters(_model(config, s), config.lora), phases[0].optim,
      s.mesh, s.rules)
  ckpt = checkpoint_lib.Checkpointer(tmp_path / 'checkpoints')
  restored, _ = train_state.restore(ckpt, initial, optims=_optims(config),
                                    phases=phases, mesh=s.mesh, rules=s.rules)
  ckpt.close()
  assert restored.step == 3
  assert jax.tree.structure(restored.arrays) == jax.tree.structure(
      state.arrays)
  for a, b in zip(jax.tree.leaves(restored.arrays),
                  jax.tree.leaves(state.arrays)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
