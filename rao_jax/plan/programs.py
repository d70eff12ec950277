"""The run's arrays and programs as shapes, and what each costs a device.

Everything here is abstract: `nnx.eval_shape` builds the model and its
optimiser, `jax.eval_shape` the sampler's slot state, and the logical axis
rules give every array its `PartitionSpec`. From these:

  exact      the per-device bytes of each persistent array (parameters,
             optimiser state, the sampler's KV cache) from its shape,
             dtype and sharding;
  compiled   a program lowered with `ShapeDtypeStruct` inputs on a mesh of
             the target's devices and compiled ahead of time; its
             `memory_analysis()` gives arguments, outputs, temporaries and
             generated code;
  estimated  the same program traced on one device's share of the work
             (rows and slots split over the batch axes, heads, MLP and
             vocab over theirs) and walked by `liveness.peak_bytes`, with
             every FSDP-sharded weight counted gathered while in use.

The programs are the ones a run calls: `update.train_step` on a packed
minibatch of each phase, and the slot sampler's decode loop and its
largest prefill (every slot admitting a `max_len` prompt at once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from rao_jax.model import config as model_config
from rao_jax.model import gemma
from rao_jax.model import lora as lora_lib
from rao_jax.model import sharding
from rao_jax.plan import liveness
from rao_jax.rl import losses
from rao_jax.rl import packing
from rao_jax.rl import update
from rao_jax.sampler import decoding
from rao_jax.sampler import sampling
from rao_jax.sampler import slots as slots_lib

_FLOAT_FIELDS = ('sampler_logprobs', 'advantages', 'weights')


@dataclasses.dataclass(frozen=True)
class Abstract:
  """A pytree of `ShapeDtypeStruct`s and the `PartitionSpec` of each leaf."""

  tree: Any
  specs: Any

  def leaves(self) -> list[tuple[jax.ShapeDtypeStruct,
                                 jax.sharding.PartitionSpec]]:
    return list(zip(jax.tree.leaves(self.tree), _spec_leaves(self.specs)))

  def device_bytes(self, mesh_shape) -> int:
    """Bytes one device holds of the whole tree."""
    return sum(shard_bytes(x, s, mesh_shape) for x, s in self.leaves())

  def with_shardings(self, mesh: jax.sharding.Mesh) -> Any:
    """The tree as `ShapeDtypeStruct`s with `NamedSharding`s on `mesh`."""
    return jax.tree.unflatten(jax.tree.structure(self.tree), [
        jax.ShapeDtypeStruct(x.shape, x.dtype,
                             sharding=jax.sharding.NamedSharding(mesh, s))
        for x, s in self.leaves()])


def _spec_leaves(specs) -> list[jax.sharding.PartitionSpec]:
  return jax.tree.leaves(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def shard_shape(shape: Sequence[int], spec: jax.sharding.PartitionSpec,
                mesh_shape) -> tuple[int, ...]:
  """One device's block of an array of `shape` split by `spec`."""
  spec = tuple(spec) + (None,) * (len(shape) - len(spec))
  return tuple(-(-dim // sharding.num_parts(_Sizes(mesh_shape), axes))
               for dim, axes in zip(shape, spec))


def shard_bytes(x: jax.ShapeDtypeStruct, spec: jax.sharding.PartitionSpec,
                mesh_shape) -> int:
  return math.prod(shard_shape(x.shape, spec, mesh_shape)) * x.dtype.itemsize


class _Sizes:
  """Mesh axis sizes in the shape `sharding.num_parts` reads."""

  def __init__(self, mesh_shape):
    self.shape = dict(mesh_shape)


# ------------------------------------------------------------ the arrays


# A plan asks for the same abstract model a dozen times (each program and
# each local shape); tracing a billion-parameter model's construction takes
# seconds, so each is built once. Callers never modify what they get.
def train_state(model: model_config.ModelConfig, optim: update.OptimConfig,
                rules, lora: lora_lib.LoraConfig = lora_lib.LoraConfig()
                ) -> tuple[nnx.GraphDef, Abstract]:
  """The (model, optimiser) train state of `update.split_train_state`;
  with `lora`, the adapters and their optimiser state alone."""
  return _train_state(model, optim, sharding.normalize_rules(rules), lora)


@functools.lru_cache(maxsize=16)
def _train_state(model, optim, rules, lora) -> tuple[nnx.GraphDef, Abstract]:

  def init():
    m = lora_lib.add_adapters(gemma.Transformer(model, rngs=nnx.Rngs(0)),
                              lora)
    return m, nnx.Optimizer(m, update.make_optimizer(optim),
                            wrt=lora_lib.trained(m))

  return _split(init, rules)


def model_state(model: model_config.ModelConfig,
                rules) -> tuple[nnx.GraphDef, Abstract]:
  """The model alone (the samplers' graph and parameters)."""
  return _model_state(model, sharding.normalize_rules(rules))


@functools.lru_cache(maxsize=16)
def _model_state(model, rules) -> tuple[nnx.GraphDef, Abstract]:
  return _split(lambda: gemma.Transformer(model, rngs=nnx.Rngs(0)), rules)


def _split(init: Callable[[], Any], rules) -> tuple[nnx.GraphDef, Abstract]:
  with nnx.logical_axis_rules(rules):
    graphdef, state = nnx.split(nnx.eval_shape(init))
    specs = nnx.get_partition_spec(state)
  return graphdef, Abstract(state, specs)


def parameter_groups(model: model_config.ModelConfig, rules, mesh_shape
                     ) -> list[dict[str, Any]]:
  """The parameters grouped by name with the layer index as '*': shape,
  count, logical axes, mesh axes and bytes a device holds of the group."""
  rules = sharding.normalize_rules(rules)
  _, abstract = model_state(model, rules)
  groups: dict[str, dict[str, Any]] = {}
  for path, var in nnx.to_flat_state(nnx.filter_state(abstract.tree,
                                                      nnx.Param)):
    name = '.'.join('*' if isinstance(p, int) else str(p) for p in path)
    axes = tuple(var.get_metadata().get('out_sharding') or ())
    spec = sharding.logical_to_spec(axes, rules)
    group = groups.setdefault(name, dict(
        name=name, shape=tuple(var.shape), count=0, logical=axes,
        mesh=tuple(spec), dtype=str(var.dtype), device_bytes=0))
    group['count'] += 1
    group['device_bytes'] += shard_bytes(var, spec, mesh_shape)
  return list(groups.values())


def batch(rows: int, length: int, rules) -> Abstract:
  """A packed minibatch `[rows, length]` (`packing.FIELDS`), rows split
  over the batch axes."""
  spec = sharding.logical_to_spec((sharding.BATCH, None), rules)
  tree = {name: jax.ShapeDtypeStruct(
      (rows, length), jnp.float32 if name in _FLOAT_FIELDS else jnp.int32)
          for name in packing.FIELDS}
  return Abstract(tree, {name: spec for name in tree})


def _key_shape() -> tuple[int, ...]:
  # Abstract: computing a key at import would start the XLA backend before
  # a multi-process run's `jax.distributed.initialize`.
  return jax.eval_shape(
      lambda: jax.random.key_data(jax.random.key(0))).shape


def _slot_state_fn(model: model_config.ModelConfig, num_slots: int,
                   max_len: int):
  # The sampler's defaults: 4 stop sequences of up to 8 tokens.
  return functools.partial(decoding.init_state, model, num_slots, max_len,
                           4, 8, _key_shape(), None)


def slot_state(model: model_config.ModelConfig, num_slots: int,
               max_len: int, rules) -> Abstract:
  """One sampler's `SlotState`: the KV cache `[slots, K, max_len, H]` per
  layer and the per-slot fields, slots over the batch axes."""
  tree = jax.eval_shape(_slot_state_fn(model, num_slots, max_len))
  cache_spec = sharding.logical_to_spec(gemma.CACHE_AXES, rules)
  batch_axes = sharding.logical_to_spec((sharding.BATCH,), rules)[0]
  specs = jax.tree.map(
      lambda x: jax.sharding.PartitionSpec(batch_axes,
                                           *(None,) * (x.ndim - 1)), tree)
  specs = specs.replace(cache=tuple(
      gemma.LayerCache(k=cache_spec, v=cache_spec) for _ in tree.cache))
  return Abstract(tree, specs)


# ------------------------------------------------------------ compiled


@dataclasses.dataclass(frozen=True)
class Figures:
  """What one program costs a device, in bytes.

  Attributes:
    arguments: its inputs (the persistent arrays among them included).
    outputs: outputs not written into a donated argument.
    temporaries: buffers alive only during the call.
    code: generated code (0 where the backend reports none).
    compiled: from the compiled program (False: estimated).
  """

  arguments: int
  outputs: int
  temporaries: int
  code: int
  compiled: bool

  @property
  def total(self) -> int:
    return self.arguments + self.outputs + self.temporaries + self.code


def _compiled(lowered) -> Figures:
  stats = lowered.compile().memory_analysis()
  return Figures(
      arguments=stats.argument_size_in_bytes,
      outputs=stats.output_size_in_bytes - stats.alias_size_in_bytes,
      temporaries=stats.temp_size_in_bytes,
      code=stats.generated_code_size_in_bytes, compiled=True)


def compile_train_step(model: model_config.ModelConfig,
                       optim: update.OptimConfig, loss: losses.LossConfig,
                       rows: int, length: int, mesh: jax.sharding.Mesh,
                       rules, lora: lora_lib.LoraConfig = lora_lib.LoraConfig()
                       ) -> Figures:
  """`update.train_step` on a `[rows, length]` minibatch, compiled."""
  graphdef, state = train_state(model, optim, rules, lora)
  with sharding.use_mesh(mesh, rules):
    return _compiled(update.train_step.lower(
        graphdef, state.with_shardings(mesh),
        batch(rows, length, rules).with_shardings(mesh), loss, 1e-6))


def _sampler_inputs(model, num_slots, max_len, mesh, rules):
  graphdef, params = model_state(model, rules)
  state = slot_state(model, num_slots, max_len, rules)
  return graphdef, params.with_shardings(mesh), state.with_shardings(mesh)


def compile_decode(model: model_config.ModelConfig, num_slots: int,
                   max_len: int, decode_steps: int, mesh: jax.sharding.Mesh,
                   rules) -> Figures:
  """The sampler's decode loop over every slot, attending to all
  `max_len` positions (its largest window), compiled."""
  graphdef, params, state = _sampler_inputs(model, num_slots, max_len, mesh,
                                            rules)
  live = jax.ShapeDtypeStruct((num_slots,), jnp.bool_)
  with sharding.use_mesh(mesh, rules):
    return _compiled(slots_lib._decode.lower(  # pylint: disable=protected-access
        graphdef=graphdef, method=sampling.Temperature(1.0),
        num_steps=decode_steps, window=max_len, params=params, state=state,
        live_B=live))


def _prefill_rows(num_slots: int, max_len: int) -> dict[str, Any]:
  """The largest prefill's row inputs by name: every slot, a `max_len`
  chunk."""
  i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  return dict(
      slots_P=i32(num_slots), tokens_PT=i32(num_slots, max_len),
      start_P=i32(num_slots), chunk_len_P=i32(num_slots),
      keys_PK=jax.ShapeDtypeStruct((num_slots,) + _key_shape(), jnp.uint32),
      budget_P=i32(num_slots), stops_PML=i32(num_slots, 4, 8),
      temperature_P=jax.ShapeDtypeStruct((num_slots,), jnp.float32))


def compile_prefill(model: model_config.ModelConfig, num_slots: int,
                    max_len: int, mesh: jax.sharding.Mesh, rules) -> Figures:
  """The largest prefill (every slot, a `max_len` chunk), compiled."""
  graphdef, params, state = _sampler_inputs(model, num_slots, max_len, mesh,
                                            rules)
  with sharding.use_mesh(mesh, rules):
    return _compiled(slots_lib._prefill.lower(  # pylint: disable=protected-access
        graphdef=graphdef, method=sampling.Temperature(1.0), window=max_len,
        params=params, state=state, **_prefill_rows(num_slots, max_len)))


# ------------------------------------------------------------ estimated


def _parts(mesh_shape, rules, name: str) -> int:
  axes = sharding.logical_to_spec((name,), rules)[0]
  return sharding.num_parts(_Sizes(mesh_shape), axes)


def local_model(model: model_config.ModelConfig, mesh_shape,
                rules) -> model_config.ModelConfig:
  """The model one device computes: heads, KV heads, MLP and vocab split
  as the activation rules split them (the width D stays whole)."""
  p = functools.partial(_parts, mesh_shape, rules)
  return model.replace(
      num_heads=model.num_heads // p(sharding.HEADS),
      num_kv_heads=model.num_kv_heads // p(sharding.KV_HEADS),
      mlp_dim=model.mlp_dim // p(sharding.MLP),
      vocab_size=model.vocab_size // p(sharding.VOCAB))


def _gathered_weights(model: model_config.ModelConfig, mesh_shape, rules
                      ) -> tuple[nnx.GraphDef, Any, list[int], dict]:
  """The local model's graph and parameters, per parameter the bytes of
  its gathered copy (0 for one a device holds whole), and the split of
  weight-shaped results (`liveness.peak_bytes`)."""
  local = local_model(model, mesh_shape, rules)
  graphdef, params = model_state(local, rules)
  _, full = model_state(model, rules)
  itemsize = jnp.dtype(model.dtype).itemsize
  held, split = [], {}
  for (x, _), (whole, spec) in zip(params.leaves(), full.leaves()):
    # A device holds a block of the weight but computes with all of `x`.
    block = math.prod(shard_shape(whole.shape, spec, mesh_shape))
    size = math.prod(x.shape)
    held.append(size * itemsize if block < size else 0)
    if block < size:
      split[tuple(x.shape)] = size // block
  return graphdef, params.tree, held, split


def estimate_train_step(model: model_config.ModelConfig,
                        optim: update.OptimConfig, loss: losses.LossConfig,
                        rows: int, length: int, mesh_shape,
                        rules) -> Figures:
  """`update.train_step`'s figures, estimated (see the module doc).

  Two walks: the loss's forward and backward on one device's rows, its
  gradients stored sharded as the parameters are; then the optimiser's
  update on the shards, the gradients alive throughout.
  """
  graphdef, params, held, split = _gathered_weights(model, mesh_shape,
                                                    rules)
  rows_local = -(-rows // _parts(mesh_shape, rules, sharding.BATCH))
  minibatch = batch(rows_local, length, rules).tree
  _, full = model_state(model, rules)
  grad_bytes = [shard_bytes(x, s, mesh_shape) for x, s in full.leaves()]

  def grads(params, minibatch):
    m = nnx.merge(graphdef, params)
    (_, metrics), g = nnx.value_and_grad(update.loss_and_metrics,
                                         has_aux=True)(m, minibatch, loss)
    return g, metrics

  backward = liveness.peak_bytes(
      jax.make_jaxpr(grads)(params, minibatch),
      held_inputs=held, output_bytes=grad_bytes, split=split)
  # The optimiser's update, elementwise on each device's shards; its
  # results are written into the donated state.
  shards = jax.tree.unflatten(jax.tree.structure(full.tree), [
      jax.ShapeDtypeStruct(shard_shape(x.shape, s, mesh_shape), x.dtype)
      for x, s in full.leaves()])
  tx = update.make_optimizer(optim)
  opt_state = jax.eval_shape(tx.init, shards)

  def apply(g, o, p):
    updates, o = tx.update(g, o, p, learning_rate=1e-6)
    return optax.apply_updates(p, updates), o

  step = jax.make_jaxpr(apply)(shards, opt_state, shards)
  optimiser = liveness.peak_bytes(
      step, output_bytes=[0] * len(step.jaxpr.outvars))
  _, state = train_state(model, optim, rules)
  arguments = (state.device_bytes(mesh_shape) +
               batch(rows, length, rules).device_bytes(mesh_shape))
  return Figures(arguments=arguments, outputs=0,
                 temporaries=max(backward, sum(grad_bytes) + optimiser),
                 code=0, compiled=False)


def _estimate_sampler(model, num_slots, max_len, mesh_shape, rules,
                      program, extra_args) -> Figures:
  graphdef, params, held, split = _gathered_weights(model, mesh_shape,
                                                    rules)
  slots_local = -(-num_slots // _parts(mesh_shape, rules, sharding.BATCH))
  local = local_model(model, mesh_shape, rules)
  state = jax.eval_shape(_slot_state_fn(local, slots_local, max_len))
  jaxpr = jax.make_jaxpr(functools.partial(program, graphdef))(
      params, state, *extra_args(slots_local))
  # The state is donated: its outputs overwrite it.
  num_state = len(jax.tree.leaves(state))
  outputs = [0] * num_state + [None] * (len(jaxpr.jaxpr.outvars) - num_state)
  temporaries = liveness.peak_bytes(jaxpr, held_inputs=held,
                                    output_bytes=outputs, split=split)
  arguments = (model_state(model, rules)[1].device_bytes(mesh_shape) +
               slot_state(model, num_slots, max_len,
                          rules).device_bytes(mesh_shape) +
               sum(liveness.nbytes(x) for x in extra_args(slots_local)))
  return Figures(arguments=arguments, outputs=0, temporaries=temporaries,
                 code=0, compiled=False)


def estimate_decode(model: model_config.ModelConfig, num_slots: int,
                    max_len: int, decode_steps: int, mesh_shape,
                    rules) -> Figures:
  """The decode loop's figures (as `compile_decode`), estimated."""
  program = lambda graphdef, params, state, live: decoding.decode(
      graphdef, sampling.Temperature(1.0), decode_steps, max_len, params,
      state, live)
  return _estimate_sampler(
      model, num_slots, max_len, mesh_shape, rules, program,
      lambda slots: (jax.ShapeDtypeStruct((slots,), jnp.bool_),))


def estimate_prefill(model: model_config.ModelConfig, num_slots: int,
                     max_len: int, mesh_shape, rules) -> Figures:
  """The largest prefill's figures (as `compile_prefill`), estimated."""
  names = tuple(_prefill_rows(1, 1))
  program = lambda graphdef, params, state, *rows: decoding.prefill(
      graphdef, sampling.Temperature(1.0), max_len, params, state,
      **dict(zip(names, rows)))
  return _estimate_sampler(
      model, num_slots, max_len, mesh_shape, rules, program,
      lambda slots: tuple(_prefill_rows(slots, max_len).values()))


def suspended_node_bytes(model: model_config.ModelConfig, max_len: int,
                         mesh_shape, rules) -> int:
  """Bytes a device holds of one suspended node's KV copy (`[1, K, W, H]`
  per layer, W up to `max_len`): its one row cannot split over the batch
  axes, so every device of a KV-head group holds it whole."""
  kv_heads = model.num_kv_heads // _parts(mesh_shape, rules, sharding.KV_HEADS)
  itemsize = jnp.dtype(model.dtype).itemsize
  return (model.num_layers * 2 * kv_heads * max_len * model.head_dim *
          itemsize)
