"""The train state: the model and a phase's optimiser, created and restored.

The state is one nnx split of (model, optimiser): a graphdef, which holds
the optimiser's hyper-parameters and is static to the jitted steps, and the
arrays, donated to each update. Parameters are created (or loaded) directly
sharded over the mesh; a checkpoint restores onto the same shardings.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

from absl import logging
from flax import nnx
import jax

from rao_jax import checkpoint as checkpoint_lib
from rao_jax import config as config_lib
from rao_jax import model as model_lib
from rao_jax import phases as phases_lib
from rao_jax.model import gemma
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.rl import update


def initial_model(config: config_lib.RunConfig, mesh: jax.sharding.Mesh,
                  rules: Sequence[Any]) -> gemma.Transformer:
  """From `init_from_hf`, else randomly initialised; sharded either way."""
  if config.init_from_hf:
    return model_lib.load_hf(config.init_from_hf, mesh=mesh, rules=rules,
                             dtype=config.model.dtype,
                             param_dtype=config.model.param_dtype)
  return params_lib.create_model(config.model, mesh, rules, seed=config.seed)


def fresh(model: gemma.Transformer, optim: update.OptimConfig,
          mesh: jax.sharding.Mesh, rules: Sequence[Any]
          ) -> tuple[nnx.GraphDef, nnx.State]:
  """The model with a fresh optimiser, split for `update.train_step`."""
  with sharding.use_mesh(mesh, rules):
    optimizer = nnx.Optimizer(model, update.make_optimizer(optim),
                              wrt=nnx.Param)
  return update.split_train_state(model, optimizer)


def restore(ckpt: checkpoint_lib.Checkpointer,
            config: config_lib.RunConfig,
            phases: Sequence[phases_lib.Phase], graphdef: nnx.GraphDef,
            state: nnx.State, mesh: jax.sharding.Mesh, rules: Sequence[Any]
            ) -> tuple[int, nnx.GraphDef, nnx.State, dict[str, Any]]:
  """(step, graphdef, state, record) of the newest good checkpoint, or of
  the given fresh state (step 0, the layout of the mode's first phase, or
  RL's when the mode trains nothing).

  A step restores into the train state of the phase its record names
  (whatever the mode now: an evaluation of an SFT run restores SFT's
  state): SFT with AdamW and RL with SGD hold different optimiser states,
  and a phase's hyper-parameters live in its graphdef. Another phase's
  layout is built only when a checkpoint of it is tried.
  """
  optims = {phases_lib.SFT: config.sft.optim, phases_lib.RL: config.optim}
  fresh_name = phases[0].name if phases else phases_lib.RL

  @functools.cache
  def layout(name):
    if name == fresh_name or optims[name] == optims[fresh_name]:
      return graphdef, checkpoint_lib.abstract_like(state)
    other_graphdef, other_state = fresh(nnx.merge(graphdef, state)[0],
                                        optims[name], mesh, rules)
    return other_graphdef, checkpoint_lib.abstract_like(other_state)

  def name_of(step):
    name = ckpt.record(step).get('phase')
    if name in optims:
      return name
    # Checkpoints written before records named their phase: by the step.
    if phases and step <= phases[-1].last_step:
      return phases_lib.phase_at(phases, step).name
    return fresh_name

  names = {}
  restored = ckpt.restore_latest(
      lambda step: layout(names.setdefault(step, name_of(step)))[1])
  if restored is None:
    return 0, graphdef, state, {}
  logging.info('resumed from step %d (newer ones skipped: %s)', restored.step,
               restored.skipped)
  return (restored.step, layout(names[restored.step])[0], restored.state,
          restored.record)
