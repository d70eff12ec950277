"""The memory plan of a run on its target slice, and the refusal of one
that does not fit.

Per device, a phase of the run holds its persistent arrays -- the
parameters, the phase's optimiser state and the sampler's slot state (its
KV cache) -- for its whole length, and on top of them one program at a
time: the phase's train step, the sampler's decode loop or its largest
prefill. The plan of a phase is the persistent arrays plus the largest
program's own share (its temporaries, its non-donated inputs and outputs)
plus every program's generated code. A run fits when each phase's plan is
within `plan.headroom x plan.hbm_gib`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
from typing import Any

from rao_jax import config as config_lib
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.plan import programs
from rao_jax.plan import targets
from rao_jax.rl import losses
from rao_jax.rl import update

EXACT, COMPILED, ESTIMATED = 'exact', 'compiled', 'estimated'
_MESH_FIELDS = ('mesh.data', 'mesh.fsdp', 'mesh.tensor')


@dataclasses.dataclass(frozen=True)
class Item:
  """One line of the plan: bytes a device holds for one part of the run.

  Attributes:
    name: what it is.
    device_bytes: for an array, its bytes a device; for a program, its
      share beyond the persistent arrays, its code excluded.
    how: EXACT (from shapes and shardings), COMPILED or ESTIMATED.
    fields: the config fields that change it.
    code: a program's generated code (0 for arrays).
    note: how it was obtained when not plain (e.g. a compile that failed).
  """

  name: str
  device_bytes: int
  how: str
  fields: tuple[str, ...]
  code: int = 0
  note: str = ''


@dataclasses.dataclass(frozen=True)
class PhasePlan:
  """A phase's arrays and programs, and its peak per device."""

  name: str
  persistent: tuple[Item, ...]
  programs: tuple[Item, ...]

  @property
  def largest(self) -> Item:
    return max(self.programs, key=lambda item: item.device_bytes)

  @property
  def peak(self) -> int:
    return (sum(item.device_bytes for item in self.persistent) +
            self.largest.device_bytes +
            sum(item.code for item in self.programs))


@dataclasses.dataclass(frozen=True)
class Plan:
  """The whole plan (`text()` prints it)."""

  target: targets.Target
  mesh: dict[str, int]
  headroom: float
  groups: list[dict[str, Any]]
  phases: tuple[PhasePlan, ...]
  suspended_node_bytes: int
  num_params: int
  model: Any

  @property
  def budget(self) -> int:
    return int(self.headroom * self.target.hbm_bytes)

  @property
  def fits(self) -> bool:
    return all(p.peak <= self.budget for p in self.phases)

  def text(self) -> str:
    """The plan as the console shows it."""
    from rao_jax.plan import report  # pylint: disable=g-import-not-at-top
    return report.text(self)

  def to_dict(self) -> dict[str, Any]:
    """Plain values: the budget and, per phase, its items and peak."""
    item = lambda i: dict(name=i.name, bytes=i.device_bytes, how=i.how,
                          code=i.code, fields=list(i.fields), note=i.note)
    return dict(
        target=self.target.name, devices=self.target.num_devices,
        hbm_bytes=self.target.hbm_bytes, budget_bytes=self.budget,
        mesh=self.mesh, fits=self.fits,
        phases={p.name: dict(peak_bytes=p.peak, largest=p.largest.name,
                             persistent=[item(i) for i in p.persistent],
                             programs=[item(i) for i in p.programs])
                for p in self.phases})


@dataclasses.dataclass(frozen=True)
class _Phase:
  name: str
  optim: update.OptimConfig
  optim_field: str  # where the config sets it
  loss: losses.LossConfig
  rows: int
  length: int


def _phases(config: config_lib.RunConfig) -> list[_Phase]:
  """The phases a `train` run of this config goes through."""
  found = []
  if config.sft.steps:
    found.append(_Phase('sft', config.sft.optim, 'sft.optim',
                        config.sft_loss, config.sft.rows_per_batch,
                        max(config.sft.pack_lengths)))
  if config.rl.steps:
    found.append(_Phase('rl', config.optim, 'optim', config.rl.loss,
                        config.rl.rows_per_batch,
                        max(config.rl.pack_lengths)))
  return found


def _check_divides(config: config_lib.RunConfig, mesh) -> None:
  """What `training.setup` checks on this host's devices, on the target's
  mesh: every parameter shards evenly, and the slots and packed rows split
  over the axes the rules give the batch."""
  rules = config.sharding_rules
  params_lib.check_shardable(config.model, mesh, rules)
  axes = sharding.logical_to_spec((sharding.BATCH,), rules)[0]
  parts = sharding.num_parts(mesh, axes)
  counts = {'sampler.num_slots': config.sampler.num_slots,
            'sft.rows_per_batch': config.sft.rows_per_batch,
            'rl.rows_per_batch': config.rl.rows_per_batch}
  uneven = [f'{name}={n}' for name, n in counts.items() if n % parts]
  if uneven:
    raise ValueError(f'{", ".join(uneven)}: does not divide over the mesh '
                     f'axes {axes} ({parts} devices) the batch splits over')


def _out_of_memory(error: Exception) -> bool:
  message = str(error)
  return 'RESOURCE_EXHAUSTED' in message or 'out of memory' in message.lower()


def _program(name: str, fields: Sequence[str], persistent_bytes: int,
             compile_fn: Callable[[], programs.Figures] | None,
             estimate_fn: Callable[[], programs.Figures]) -> Item:
  """A program's item: compiled where a compiler is given, else (or when
  the compiler says it runs out of memory) estimated."""
  note = ''
  if compile_fn is not None:
    try:
      figures = compile_fn()
    except Exception as e:  # pylint: disable=broad-except
      if not _out_of_memory(e):
        raise
      # XLA refuses a program that cannot fit: that is the verdict, and
      # the estimate says by how much.
      note = 'the compiler ran out of memory: ' + str(e).splitlines()[0][:200]
      figures = estimate_fn()
  else:
    figures = estimate_fn()
  share = figures.total - figures.code - persistent_bytes
  how = COMPILED if figures.compiled else ESTIMATED
  return Item(name, max(share, 0), how, tuple(fields), code=figures.code,
              note=note)


def plan(config: config_lib.RunConfig) -> Plan:
  """The memory plan of `config` on `config.plan`'s target.

  Builds nothing but shapes; compiles the programs where the target's
  compiler is here and `plan.compile` is set. Raises ValueError (naming
  the field) for a config that cannot be sharded on the target.
  """
  settings = config.plan
  t = targets.target(settings.topology, settings.hbm_gib, settings.compile)
  mesh = targets.make_mesh(config.mesh.sizes(), t)
  mesh_shape = dict(mesh.shape)
  rules = config.sharding_rules
  _check_divides(config, mesh)
  model, sampler = config.model, config.sampler
  compiling = t.devices is not None

  def compiler(fn, *args):
    return (lambda: fn(*args, mesh, rules)) if compiling else None

  params = programs.model_state(model, rules)[1].device_bytes(mesh_shape)
  slot_state = programs.slot_state(model, sampler.num_slots, sampler.max_len,
                                   rules).device_bytes(mesh_shape)
  cache_fields = ('sampler.num_slots', 'sampler.max_len', 'model.dtype',
                  *_MESH_FIELDS)
  sampler_items = (
      _program(f'decode ({sampler.num_slots} slots, window '
               f'{sampler.max_len})',
               ('sampler.num_slots', 'sampler.max_len'), params + slot_state,
               compiler(programs.compile_decode, model, sampler.num_slots,
                        sampler.max_len, sampler.decode_steps),
               lambda: programs.estimate_decode(
                   model, sampler.num_slots, sampler.max_len,
                   sampler.decode_steps, mesh_shape, rules)),
      _program(f'prefill, largest ({sampler.num_slots} rows x '
               f'{sampler.max_len})',
               ('sampler.num_slots', 'sampler.max_len'), params + slot_state,
               compiler(programs.compile_prefill, model, sampler.num_slots,
                        sampler.max_len),
               lambda: programs.estimate_prefill(
                   model, sampler.num_slots, sampler.max_len, mesh_shape,
                   rules)))
  phase_plans = []
  for phase in _phases(config):
    # With LoRA the optimiser holds the adapters' moments alone (the
    # adapters are counted here with it: they are what the run trains).
    state = programs.train_state(model, phase.optim, rules,
                                 config.lora)[1].device_bytes(mesh_shape)
    persistent = (
        Item('parameters', params, EXACT,
             ('model.param_dtype', *_MESH_FIELDS, 'sharding_rules')),
        Item(f'optimiser state ({phase.optim.optimizer})', state - params,
             EXACT, (f'{phase.optim_field}.optimizer', 'model.param_dtype',
                     *_MESH_FIELDS)),
        Item('KV cache', slot_state, EXACT, cache_fields))
    step = _program(
        f'train step ({phase.rows} rows x {phase.length})',
        (f'{phase.name}.rows_per_batch', f'{phase.name}.pack_lengths',
         *_MESH_FIELDS), state,
        compiler(functools.partial(programs.compile_train_step,
                                   lora=config.lora),
                 model, phase.optim, phase.loss, phase.rows, phase.length),
        lambda phase=phase: programs.estimate_train_step(
            model, phase.optim, phase.loss, phase.rows, phase.length,
            mesh_shape, rules))
    phase_plans.append(PhasePlan(phase.name, persistent,
                                 (step,) + sampler_items))
  return Plan(
      target=t, mesh=mesh_shape, headroom=settings.headroom,
      groups=programs.parameter_groups(model, rules, mesh_shape),
      phases=tuple(phase_plans),
      suspended_node_bytes=programs.suspended_node_bytes(
          model, sampler.max_len, mesh_shape, rules),
      num_params=model.num_params(), model=model)


def refusal(p: Plan) -> str:
  """Why `p` does not fit, naming the fields to change ('' if it fits)."""
  over = [phase for phase in p.phases if phase.peak > p.budget]
  if not over:
    return ''
  gib = lambda n: f'{n / targets.GIB:.2f} GiB'
  lines = [f'plan: the run does not fit {p.target.name}: the budget is '
           f'{gib(p.budget)} a device (plan.headroom={p.headroom} x '
           f'plan.hbm_gib={p.target.hbm_bytes / targets.GIB:g})']
  fields: list[str] = []
  for phase in over:
    parts = sorted(phase.persistent + (phase.largest,),
                   key=lambda item: -item.device_bytes)
    lines.append(f'  phase {phase.name} needs {gib(phase.peak)}; largest: ' +
                 '; '.join(f'{i.name} {gib(i.device_bytes)} '
                           f'({", ".join(i.fields)})' for i in parts[:3]))
    for item in parts[:2]:
      fields += [f for f in item.fields if f not in fields]
  lines.append('  change ' + ', '.join(fields))
  return '\n'.join(lines)


def run(config: config_lib.RunConfig) -> dict[str, Any]:
  """Plan mode: prints the plan; raises ValueError if the run does not
  fit. Returns the plan's plain values."""
  p = plan(config)
  print(p.text(), flush=True)
  why = refusal(p)
  if why:
    raise ValueError(why)
  return p.to_dict()
