"""Creating the model's parameters directly sharded, and checking that they can be.

`create_model` runs the initialiser under jit inside the mesh, so every
parameter is born on its shards and no host ever holds a full copy.
`abstract_model` gives the same structure as shapes with shardings, the
target for loading weights (Hugging Face import, Orbax restore).
"""

from __future__ import annotations

from flax import nnx
import jax

from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.model import sharding

# Which config field sets each logical parameter axis: errors name the field.
_FIELD_OF_AXIS = {
    'vocab': 'model.vocab_size',
    'embed': 'model.embed_dim',
    'heads': 'model.num_heads',
    'kv_heads': 'model.num_kv_heads',
    'head_dim': 'model.head_dim',
    'mlp': 'model.mlp_dim',
    'norm': 'model.embed_dim or model.head_dim',
}


def param_axes(model_or_state) -> dict[tuple, tuple[str, ...]]:
  """Maps each parameter path to its logical axis names."""
  state = nnx.state(model_or_state, nnx.Param)
  axes = {}
  for path, var in nnx.to_flat_state(state):
    axes[path] = tuple(var.get_metadata().get('out_sharding') or ())
  return axes


def _abstract(config: config_lib.ModelConfig) -> gemma.Transformer:
  return nnx.eval_shape(lambda: gemma.Transformer(config, rngs=nnx.Rngs(0)))


def check_shardable(config: config_lib.ModelConfig, mesh: jax.sharding.Mesh,
                    rules: sharding.Rules) -> None:
  """Raises ValueError, naming the field, if a parameter cannot be sharded.

  Runs on abstract shapes (nothing is allocated or compiled), so a bad
  config fails before any work starts.
  """
  rules = sharding.normalize_rules(rules)
  sharding.validate_rules(rules, mesh)
  table = dict(rules)
  for name in sharding.ACTIVATION_AXES:
    if name not in table:
      raise ValueError(
          f'activation axis {name!r} has no entry in sharding_rules; add '
          f'({name!r}, <mesh axes or None>)')
  for path, var in nnx.to_flat_state(nnx.state(_abstract(config), nnx.Param)):
    names = tuple(var.get_metadata().get('out_sharding') or ())
    where = '.'.join(map(str, path))
    for dim, name in zip(var.shape, names):
      if name not in table:
        raise ValueError(
            f'parameter {where}: logical axis {name!r} has no entry in '
            f'sharding_rules; add ({name!r}, <mesh axes or None>)')
      parts = sharding.num_parts(mesh, table[name])
      if dim % parts:
        raise ValueError(
            f'{_FIELD_OF_AXIS.get(name, name)}={dim} does not divide over '
            f'mesh axes {table[name]!r} of size {parts} (sharding_rules maps '
            f'{name!r} there; parameter {where})')


def create_model(config: config_lib.ModelConfig, mesh: jax.sharding.Mesh,
                 rules: sharding.Rules, seed: int = 0) -> gemma.Transformer:
  """Randomly initialised model whose parameters are created sharded."""
  check_shardable(config, mesh, rules)

  @nnx.jit
  def init():
    model = gemma.Transformer(config, rngs=nnx.Rngs(params=seed))
    state = nnx.state(model)
    # Inside jit the constraint makes XLA produce each parameter already
    # split over its shards: no device ever holds a full copy.
    nnx.update(model, jax.lax.with_sharding_constraint(
        state, nnx.get_partition_spec(state)))
    return model

  with sharding.use_mesh(mesh, rules):
    return init()


def abstract_model(
    config: config_lib.ModelConfig, mesh: jax.sharding.Mesh,
    rules: sharding.Rules) -> tuple[nnx.GraphDef, nnx.State]:
  """The model as (graphdef, state of ShapeDtypeStructs with shardings)."""
  check_shardable(config, mesh, rules)
  with nnx.logical_axis_rules(sharding.normalize_rules(rules)):
    return nnx.get_abstract_model(
        lambda: gemma.Transformer(config, rngs=nnx.Rngs(0)), mesh)
