"""Logical-axis sharding: the mesh, the rules table and their checks.

Layers only name logical axes (`vocab`, `embed`, `heads`, ...); one rules
table maps each logical name to mesh axes of the `('data', 'fsdp',
'tensor')` mesh. Every partitioning decision lives here or in the config's
rules table, nowhere in the layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

from flax import nnx
from flax.core import spmd as flax_spmd
import jax
from jax.experimental import multihost_utils
import numpy as np

MESH_AXES = ('data', 'fsdp', 'tensor')

# Logical names of activations; parameters use the model's own names.
BATCH = 'act_batch'
LENGTH = 'act_len'
EMBED = 'act_embed'
HEADS = 'act_heads'
KV_HEADS = 'act_kv_heads'
VOCAB = 'act_vocab'
MLP = 'act_mlp'
CACHE_LEN = 'cache_len'
ACTIVATION_AXES = (BATCH, LENGTH, EMBED, HEADS, KV_HEADS, VOCAB, MLP, CACHE_LEN)

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

# The default table: FSDP over `embed`, tensor parallelism over heads, MLP and
# vocab, batch over data x fsdp. Norm scales and head_dim stay replicated.
DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
    ('norm', None),
    ('fused', None),  # stacks fused projections (the MLP's gate and up)
    (BATCH, ('data', 'fsdp')),
    (LENGTH, None),
    (EMBED, None),
    (HEADS, 'tensor'),
    (KV_HEADS, 'tensor'),
    (VOCAB, 'tensor'),
    (MLP, 'tensor'),
    (CACHE_LEN, None),
)


def make_mesh(shape: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """Builds the `('data', 'fsdp', 'tensor')` mesh; one entry may be -1.

  Axes are `Auto` so GSPMD propagates shardings through ops such as the
  embedding gather (explicit axes would demand `out_sharding` everywhere).
  """
  devices = list(jax.devices() if devices is None else devices)
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f'mesh: unknown axes {unknown}; expected {MESH_AXES}')
  sizes = [int(shape.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'mesh={dict(shape)}: at most one axis may be -1')
  for name, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f'mesh.{name}={size}: must be positive or -1')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f'mesh={dict(shape)}: {len(devices)} devices are not '
                       f'divisible by the fixed axes ({known})')
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f'mesh={dict(shape)} needs {math.prod(sizes)} devices, '
                     f'{len(devices)} are present')
  return jax.make_mesh(
      tuple(sizes), MESH_AXES,
      axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
      devices=devices)


def normalize_rules(rules: Rules) -> tuple[tuple[str, MeshAxes], ...]:
  """Turns a config's rules (lists from ml_collections) into hashable tuples."""
  normalized = []
  for i, rule in enumerate(rules):
    if len(rule) != 2:
      raise ValueError(f'sharding_rules[{i}]={rule!r}: expected '
                       '(logical_name, mesh_axes)')
    name, axes = rule
    if isinstance(axes, list):
      axes = tuple(axes)
    normalized.append((name, axes))
  return tuple(normalized)


def validate_rules(rules: Rules, mesh: jax.sharding.Mesh | None = None) -> None:
  """Checks that every rule names known mesh axes, once each."""
  seen = set()
  for i, (name, axes) in enumerate(rules):
    if name in seen:
      raise ValueError(f'sharding_rules[{i}]: {name!r} is mapped twice')
    seen.add(name)
    for axis in _as_tuple(axes):
      if axis not in MESH_AXES:
        raise ValueError(f'sharding_rules[{i}]: {name!r} -> {axis!r} is not '
                         f'a mesh axis; expected one of {MESH_AXES}')
      if mesh is not None and axis not in mesh.axis_names:
        raise ValueError(f'sharding_rules[{i}]: mesh has no axis {axis!r}')


def logical_to_spec(names: Sequence[str | None],
                    rules: Rules) -> jax.sharding.PartitionSpec:
  """Maps logical axis names to a PartitionSpec; an unmapped name is an error."""
  table = dict(rules)
  spec = []
  for name in names:
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ValueError(
          f'logical axis {name!r} has no entry in sharding_rules; add '
          f'({name!r}, <mesh axes or None>) to config.sharding_rules')
    spec.append(table[name])
  return jax.sharding.PartitionSpec(*spec)


def check_divisible(shape: Sequence[int], names: Sequence[str | None],
                    rules: Rules, mesh: jax.sharding.Mesh, what: str) -> None:
  """Raises if a dimension does not split evenly over its mesh axes."""
  spec = logical_to_spec(names, rules)
  for dim, name, axes in zip(shape, names, spec):
    parts = num_parts(mesh, axes)
    if dim % parts:
      raise ValueError(
          f'{what}: dimension {name!r} of size {dim} does not divide over '
          f'mesh axes {axes} of size {parts} (see config.sharding_rules and '
          'config.mesh)')


def shard(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Constrains an activation's sharding by logical names.

  A no-op outside `use_mesh` (plain single-device calls), so the model runs
  unchanged in tests that build no mesh.
  """
  rules = flax_spmd.get_logical_axis_rules()
  mesh = jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names, rules))


def current_parts(name: str) -> int:
  """How many pieces the current mesh and rules split logical axis `name`
  into; 1 outside `use_mesh` or where the rules leave it unsplit.

  For layers whose fastest formulation on one device needs an axis whole
  (e.g. a reshape that merges it with another axis).
  """
  rules = flax_spmd.get_logical_axis_rules()
  mesh = jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return 1
  axes = logical_to_spec((name,), rules)[0]
  return math.prod(mesh.shape[a] for a in _as_tuple(axes))


class use_mesh:  # pylint: disable=invalid-name
  """Context: sets the mesh and the logical rules together.

  Both are needed for parameters to be created sharded and for `shard` to
  take effect; entering only one is the common mistake this prevents.
  """

  def __init__(self, mesh: jax.sharding.Mesh, rules: Rules):
    self._mesh_ctx = jax.set_mesh(mesh)
    self._rules_ctx = nnx.logical_axis_rules(normalize_rules(rules))

  def __enter__(self):
    self._mesh_ctx.__enter__()
    self._rules_ctx.__enter__()
    return self

  def __exit__(self, *exc: Any):
    self._rules_ctx.__exit__(*exc)
    self._mesh_ctx.__exit__(*exc)


def named_sharding(mesh: jax.sharding.Mesh, names: Sequence[str | None],
                   rules: Rules) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, logical_to_spec(names, rules))


def put(host_array: np.ndarray,
        sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from a host array every process holds alike: each
  process puts only its own devices' shards (nothing crosses hosts)."""
  return jax.make_array_from_callback(host_array.shape, sharding,
                                      lambda index: host_array[index])


def num_parts(mesh: jax.sharding.Mesh, axes: MeshAxes) -> int:
  """How many pieces mesh axes (a name, a tuple of names or None) split into."""
  return math.prod(mesh.shape[a] for a in _as_tuple(axes))


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
  if axes is None:
    return ()
  if isinstance(axes, str):
    return (axes,)
  return tuple(axes)


def host_array(x: jax.Array) -> np.ndarray:
  """Gathers a (possibly sharded) array to a NumPy array on this host.

  An array sharded over several processes is all-gathered: every process
  must call this in the same order (a collective).
  """
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
