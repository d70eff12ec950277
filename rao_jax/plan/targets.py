"""The slice a plan is for: its chips, their memory, and a mesh over them.

A Cloud TPU slice is named as `gcloud` names it ('v4-32'). Its devices come
from libtpu's topology description, which needs no TPU: XLA then compiles
for the slice ahead of time on this host, as MaxText's `train_compile.py`
does. Without libtpu the mesh is abstract (shapes only) and the plan
estimates. `topology=''` plans for this machine's own devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import importlib.util
import math
import os

import jax

from rao_jax.model import sharding

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice as libtpu describes it (MaxText's names)."""

  chips: int
  topology_name: str  # libtpu's chip grid, e.g. 'v4:2x2x4'
  hbm_gib: float  # per chip
  chip_config_name: str = 'megacore'
  chips_per_host_bounds: tuple[int, int, int] = (2, 2, 1)

  @property
  def hosts(self) -> int:
    return max(1, self.chips // math.prod(self.chips_per_host_bounds))


# TPU v4: one megacore per chip, 32 GiB of HBM, 4 chips a host.
TOPOLOGIES: Mapping[str, Topology] = {
    'v4-8': Topology(4, 'v4:2x2x1', 32.0),
    'v4-16': Topology(8, 'v4:2x2x2', 32.0),
    'v4-32': Topology(16, 'v4:2x2x4', 32.0),
    'v4-64': Topology(32, 'v4:2x4x4', 32.0),
    'v4-128': Topology(64, 'v4:4x4x4', 32.0),
}


@dataclasses.dataclass(frozen=True)
class Target:
  """Where the run is planned for.

  Attributes:
    name: the topology ('v4-32') or 'this machine'.
    devices: the devices to compile for; None: no compiler for them here
      (the mesh is abstract and every figure is estimated).
    num_devices: chips (or this machine's devices).
    platform: 'tpu', or this machine's ('cpu', 'gpu').
    hbm_bytes: memory a device has.
    why_not_compiled: why `devices` is None ('' when it is not).
  """

  name: str
  devices: Sequence[jax.Device] | None
  num_devices: int
  platform: str
  hbm_bytes: int
  why_not_compiled: str = ''


def libtpu_present() -> bool:
  """Whether libtpu (the TPU compiler) is installed."""
  return importlib.util.find_spec('libtpu') is not None


def target(topology: str, hbm_gib: float, want_compile: bool) -> Target:
  """The target of `plan.topology` ('' = this machine), `plan.hbm_gib`
  (0 = the target's own memory) and `plan.compile`."""
  if not topology:
    devices = jax.devices()
    hbm = hbm_gib * GIB or _device_memory(devices[0])
    if not hbm:
      raise ValueError(
          f'plan.hbm_gib=0: this machine\'s {devices[0].platform} devices '
          'report no memory limit; set plan.hbm_gib (GiB a device)')
    return Target('this machine', devices if want_compile else None,
                  len(devices), devices[0].platform, int(hbm),
                  '' if want_compile else 'plan.compile=False')
  if topology not in TOPOLOGIES:
    raise ValueError(f'plan.topology={topology!r}: expected \'\' (this '
                     f'machine) or one of {sorted(TOPOLOGIES)}')
  topo = TOPOLOGIES[topology]
  hbm = int((hbm_gib or topo.hbm_gib) * GIB)
  if not want_compile:
    return Target(topology, None, topo.chips, 'tpu', hbm,
                  'plan.compile=False')
  if not libtpu_present():
    return Target(topology, None, topo.chips, 'tpu', hbm,
                  'libtpu is not installed (pip install -c constraints.txt '
                  'libtpu)')
  # The plan describes the slice and opens no TPU: it may load libtpu while
  # another process (a run, another plan) holds libtpu's lock file.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  # Imported here: the module loads libtpu's topology support on first use.
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  description = topologies.get_topology_desc(
      platform='tpu', topology_name=topo.topology_name,
      chip_config_name=topo.chip_config_name,
      chips_per_host_bounds=topo.chips_per_host_bounds, num_slices=1)
  return Target(topology, list(description.devices), topo.chips, 'tpu', hbm)


def _device_memory(device: jax.Device) -> int:
  try:
    stats = device.memory_stats() or {}
  except (NotImplementedError, RuntimeError):  # CPU devices keep none
    stats = {}
  return int(stats.get('bytes_limit', 0))


def mesh_sizes(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """`config.mesh` with its -1 axis resolved for `num_devices`."""
  sizes = {name: int(shape.get(name, 1)) for name in sharding.MESH_AXES}
  known = math.prod(s for s in sizes.values() if s != -1)
  for name, size in sizes.items():
    if size == -1:
      if num_devices % known:
        raise ValueError(f'mesh={dict(shape)}: the target\'s {num_devices} '
                         f'devices do not divide by the fixed axes ({known})')
      sizes[name] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f'mesh={dict(shape)} needs {math.prod(sizes.values())} '
                     f'devices; the target has {num_devices} (set mesh.*)')
  return sizes


def make_mesh(shape: Mapping[str, int], t: Target):
  """A concrete mesh over the target's devices, or an abstract one."""
  sizes = mesh_sizes(shape, t.num_devices)
  if t.devices is not None:
    return sharding.make_mesh(sizes, devices=t.devices)
  return jax.sharding.AbstractMesh(
      tuple(sizes.values()), tuple(sizes),
      axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))
