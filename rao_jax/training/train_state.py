"""The train state: the model and a phase's optimiser, created and restored.

`TrainState` holds one nnx split of (model, optimiser): a graphdef, which
holds the structure and the optimiser's hyper-parameters and is static to
the jitted steps, and the arrays (parameters and optimiser state), donated
to each update; with the global step they include. Parameters are created
(or loaded) directly sharded over the mesh; a checkpoint restores onto the
same shardings. A checkpoint holds what the run trains (`checkpointed`):
with LoRA adapters, the adapters and their optimiser state, not the base
weights, which a restore takes from the initial model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
from typing import Any

from absl import logging
from flax import nnx
import jax

from rao_jax import model as model_lib
from rao_jax.model import config as model_config
from rao_jax.model import gemma
from rao_jax.model import lora
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.rl import update
from rao_jax.runtime import checkpoint as checkpoint_lib
from rao_jax.training import phases as phases_lib


@dataclasses.dataclass(frozen=True)
class TrainState:
  """The model and its optimiser, split for the jitted update.

  Attributes:
    graphdef: the structure of (model, optimiser) and the optimiser's
      hyper-parameters; static to the jitted steps.
    arrays: parameters and optimiser state; donated to each update.
    step: the last global step these arrays include (0: none yet).
  """

  graphdef: nnx.GraphDef
  arrays: nnx.State
  step: int = 0

  @property
  def model(self) -> gemma.Transformer:
    return nnx.merge(self.graphdef, self.arrays)[0]

  @property
  def optimizer(self) -> nnx.Optimizer:
    return nnx.merge(self.graphdef, self.arrays)[1]

  def params(self) -> nnx.State:
    """The model's state, as the sampler takes it."""
    return nnx.state(self.model)

  def checkpointed(self) -> nnx.State:
    """What a checkpoint of this state holds: every array but the frozen
    base weights of a model with LoRA adapters, which are the initial
    model's bit for bit (`init_from_hf` or the seed) and come from there
    on restore. Without adapters, every array."""
    return split_frozen(self.arrays)[1]

  def replace(self, **changes: Any) -> TrainState:
    return dataclasses.replace(self, **changes)


def _is_frozen(path: tuple[Any, ...], value: Any) -> bool:
  """A base weight of a model with adapters: the model's (the first of
  the (model, optimiser) pair) `nnx.Param` that is not an adapter's."""
  return (path[0] == 0 and isinstance(value, nnx.Param) and
          not isinstance(value, nnx.LoRAParam))


def split_frozen(arrays: nnx.State) -> tuple[nnx.State, nnx.State]:
  """(frozen base weights, the rest) of a train state's arrays; nothing is
  frozen in a model without LoRA adapters (every parameter trains)."""
  if not jax.tree.leaves(nnx.filter_state(arrays, nnx.LoRAParam)):
    return nnx.State({}), arrays
  return nnx.split_state(arrays, _is_frozen, ...)


def initial_model(architecture: model_config.ModelConfig,
                  init_from_hf: str | None, seed: int,
                  mesh: jax.sharding.Mesh, rules: Sequence[Any]
                  ) -> gemma.Transformer:
  """From `init_from_hf` (with `architecture`'s dtypes), else randomly
  initialised as `architecture` from `seed`; sharded either way."""
  if init_from_hf:
    return model_lib.load_hf(init_from_hf, mesh=mesh, rules=rules,
                             dtype=architecture.dtype,
                             param_dtype=architecture.param_dtype)
  return params_lib.create_model(architecture, mesh, rules, seed=seed)


def fresh(model: gemma.Transformer, optim: update.OptimConfig,
          mesh: jax.sharding.Mesh, rules: Sequence[Any], *,
          step: int = 0) -> TrainState:
  """The model with a fresh optimiser of what the run trains: the LoRA
  adapters when the model has any (`model.lora.trained`), else every
  parameter."""
  with sharding.use_mesh(mesh, rules):
    optimizer = nnx.Optimizer(model, update.make_optimizer(optim),
                              wrt=lora.trained(model))
  graphdef, arrays = update.split_train_state(model, optimizer)
  return TrainState(graphdef, arrays, step)


def restore(ckpt: checkpoint_lib.Checkpointer, initial: TrainState, *,
            optims: Mapping[str, update.OptimConfig],
            phases: Sequence[phases_lib.Phase], mesh: jax.sharding.Mesh,
            rules: Sequence[Any]) -> tuple[TrainState, dict[str, Any]]:
  """(state, record) of the newest good checkpoint, or (`initial`, {}).

  `initial` is a fresh state in the layout of the mode's first phase (or
  RL's when the mode trains nothing); `optims` maps each phase name to its
  optimiser. A step restores into the train state of the phase its record
  names (whatever the mode now: an evaluation of an SFT run restores SFT's
  state): SFT with AdamW and RL with SGD hold different optimiser states,
  and a phase's hyper-parameters live in its graphdef. Another phase's
  layout is built only when a checkpoint of it is tried.
  """
  fresh_name = phases[0].name if phases else phases_lib.RL

  # A LoRA run's checkpoints leave out the frozen base weights: the
  # initial model's are merged back in.
  frozen, _ = split_frozen(initial.arrays)

  @functools.cache
  def layout(name):
    if name == fresh_name or optims[name] == optims[fresh_name]:
      return initial.graphdef, checkpoint_lib.abstract_like(
          initial.checkpointed())
    other = fresh(initial.model, optims[name], mesh, rules)
    return other.graphdef, checkpoint_lib.abstract_like(other.checkpointed())

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
    return initial, {}
  logging.info('resumed from step %d (newer ones skipped: %s)', restored.step,
               restored.skipped)
  state = TrainState(layout(names[restored.step])[0],
                     nnx.merge_state(frozen, restored.state), restored.step)
  return state, restored.record
