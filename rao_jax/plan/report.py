"""The plan as text: the target, the parameter groups' sharding, and per
phase every part's bytes a device, how each was obtained, and the verdict."""

from __future__ import annotations

from rao_jax.plan import planner
from rao_jax.plan import targets


def _unit(p: planner.Plan) -> tuple[str, int]:
  """GiB for a slice, MiB for a small budget (a CPU test)."""
  return ('GiB', targets.GIB) if p.budget >= 4 * targets.GIB else ('MiB',
                                                                   2**20)


def _axes(names) -> str:
  return '(' + ', '.join(str(n) for n in names) + ')'


def text(p: planner.Plan) -> str:
  """Every figure of `p`, one per line, GiB a device."""
  t = p.target
  unit, scale = _unit(p)
  size = lambda n: f'{n / scale:9.3f}'
  how = ('programs compiled for the target' if t.devices is not None else
         f'programs estimated ({t.why_not_compiled})')
  lines = [
      f'memory plan for {t.name}: {t.num_devices} devices of '
      f'{t.hbm_bytes / targets.GIB:g} GiB; budget {p.budget / targets.GIB:.2f}'
      f' GiB a device (plan.headroom={p.headroom}); {how}',
      'mesh ' + ' '.join(f'{k}={v}' for k, v in p.mesh.items()) +
      f'; model {p.model.family} {p.num_params / 1e6:.1f}M parameters, '
      f'{p.model.param_dtype} parameters, {p.model.dtype} compute',
      '',
      f'parameter groups: logical axes -> mesh axes, {unit} a device',
  ]
  for g in p.groups:
    count = f'{g["count"]} x ' if g['count'] > 1 else ''
    lines.append(
        f'  {g["name"]:36s} {count}{list(g["shape"])} {g["dtype"]}  '
        f'{_axes(g["logical"])} -> {_axes(g["mesh"])}  '
        f'{size(g["device_bytes"]).strip()}')
  for phase in p.phases:
    lines += ['', f'phase {phase.name}, {unit} a device:']
    for item in phase.persistent:
      lines.append(f'  {item.name:44s} {size(item.device_bytes)}  '
                   f'{item.how}')
    for item in phase.programs:
      mark = '*' if item is phase.largest else ' '
      code = f' + code {item.code / 2**20:.0f} MiB' if item.code else ''
      note = f'  ({item.note})' if item.note else ''
      lines.append(f' {mark}{item.name:44s} {size(item.device_bytes)}  '
                   f'{item.how}{code}{note}')
    verdict = 'fits' if phase.peak <= p.budget else 'DOES NOT FIT'
    lines.append(f'  {"peak (arrays + * + all code)":44s} {size(phase.peak)}'
                 f'  {verdict} ({phase.peak / t.hbm_bytes:.0%} of the HBM)')
  left = p.budget - max((ph.peak for ph in p.phases), default=0)
  if p.suspended_node_bytes and left > 0:
    lines += ['', f'suspended nodes keep their KV copies: '
              f'{p.suspended_node_bytes / 2**20:.1f} MiB a device each at '
              f'max_len; the budget left holds '
              f'{left // p.suspended_node_bytes} of them']
  return '\n'.join(lines)
