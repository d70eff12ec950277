"""A run's workdir: its record (`config.json`) and the rule against reuse.

A workdir holds one run: `config.json`, `checkpoints/`, `metrics.jsonl`,
`tb/`, `trees/`, `summary.json` (and the generated datasets in `data/`).
Rerunning the same command continues that run. A command whose config
differs from the recorded one in a field that changes what the run's
checkpoints and logs mean (the model, the tasks it trains on, the RL
objective, the seed, ...) is refused before anything is built, naming the
fields, so an old run is never overwritten by an unrelated one. Fields
that only say how long to train, what to evaluate, or where and how to
run may differ (`FREE_FIELDS`). `--start_over` moves the old run aside
into `replaced/<time>/` instead (`move_aside`).

One run at a time: `lock` holds an exclusive `fcntl.flock` on
`<workdir>/.lock` for the run's duration (process 0 only), with the
holder's host, pid and start time written in it, so a second run on the
same workdir is refused naming them. The kernel drops the lock when its
process dies, however it dies, so a killed run never blocks the next.
flock is advisory and local: it holds between processes of one machine
(and on NFS v4 between machines); a `gs://` workdir takes no lock, and
nothing stops two runs writing it.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import datetime
import fcntl
import json
import os
import socket
from typing import Any

from absl import logging
from etils import epath

from rao_jax import config as config_lib
from rao_jax.runtime import errors
from rao_jax.runtime import multihost

CONFIG_FILE = 'config.json'
LOCK_FILE = '.lock'
# The files of a run (the datasets in data/ are deterministic and kept).
RUN_FILES = ('config.json', 'checkpoints', 'metrics.jsonl', 'tb', 'trees',
             'plots', 'hf', 'summary.json', 'generate.json')
# Fields, or sections ending in '.', that may differ when a run continues:
# its length after SFT, what and how it evaluates, where it runs and how it
# logs. A change of `sft.steps` moves RL's first step, so it is not free.
FREE_FIELDS = ('mode', 'rl.steps', 'tasks.eval_levels', 'tasks.eval_agents',
               'tasks.eval_split', 'tasks.num_eval', 'tasks.data_dir',
               'rollout.eval_max_depth', 'distributed', 'mesh.',
               'sharding_rules', 'checkpoint.', 'log.', 'generate.')
# Modes that number their steps alike: SFT steps first, then RL's.
_SAME_STEPS = {'train': 'sft_then_rl', 'sft': 'sft_then_rl', 'rl': 'rl'}


class WorkdirMismatch(errors.Refusal, ValueError):
  """The workdir holds another run."""


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: tree}


def _is_free(field: str) -> bool:
  return any(field == free or (free.endswith('.') and field.startswith(free))
             for free in FREE_FIELDS)


def differences(recorded: dict[str, Any], current: dict[str, Any]
                ) -> list[tuple[str, Any, Any]]:
  """(field, recorded value, current value) for every field that may not
  differ but does; a field missing on one side has the value '<absent>'."""
  old, new = _flat(recorded), _flat(current)
  out = []
  for field in sorted(set(old) | set(new)):
    a, b = old.get(field, '<absent>'), new.get(field, '<absent>')
    if a != b and not _is_free(field):
      out.append((field, a, b))
  old_steps = _SAME_STEPS.get(old.get('mode'))
  new_steps = _SAME_STEPS.get(new.get('mode'))
  if old_steps and new_steps and old_steps != new_steps:
    # 'rl' alone numbers RL from step 1; 'train' after the SFT steps.
    out.insert(0, ('mode', old.get('mode'), new.get('mode')))
  return out


def resolve(path: str | os.PathLike) -> epath.Path:
  """A workdir path: absolute when local, as given when remote (gs://)."""
  text = os.fspath(path)
  return epath.Path(text if '://' in text else os.path.abspath(text))


def prepare(workdir: str | os.PathLike, config: config_lib.RunConfig, *,
            start_over: bool = False, refuse_other_runs: bool = True
            ) -> epath.Path:
  """Makes the workdir ready for `config`'s run; returns its path.

  With `start_over` a previous run is moved aside first; then a workdir
  holding another run is refused (`check`; a mode that reads no
  checkpoint passes `refuse_other_runs=False`), and a new run's config is
  recorded. Only the primary process writes; every process checks.
  """
  workdir = resolve(workdir)
  if multihost.is_primary():
    workdir.mkdir(parents=True, exist_ok=True)
    if start_over and (moved := move_aside(workdir)):
      logging.warning('moved the previous run aside to %s', moved)
  multihost.barrier('workdir ready')
  if refuse_other_runs:
    check(workdir, config)
  multihost.barrier('workdir checked')  # before the record may change
  record(workdir, config, restored=False)
  return workdir


def check(workdir: epath.Path, config: config_lib.RunConfig) -> None:
  """Refuses a workdir whose recorded run `config` does not continue.

  Raises:
    WorkdirMismatch: naming each differing field and how to proceed.
  """
  path = workdir / CONFIG_FILE
  if not path.exists():
    return
  found = differences(json.loads(path.read_text()), config.to_dict())
  if not found:
    return
  lines = '\n'.join(f'  {field}: {a!r} in {CONFIG_FILE}, {b!r} now'
                    for field, a, b in found[:20])
  more = f'\n  ... and {len(found) - 20} more' if len(found) > 20 else ''
  raise WorkdirMismatch(
      f'{workdir} holds another run: its {CONFIG_FILE} differs from this '
      f'config in fields that change what its checkpoints mean:\n{lines}'
      f'{more}\nNothing was changed. Use a new --workdir, or pass '
      '--start_over to move the old run aside into '
      f'{workdir / "replaced"}/ and start a new one here.')


def move_aside(workdir: epath.Path) -> epath.Path | None:
  """Moves the run files of `workdir` into `replaced/<UTC time>/`; returns
  that directory (None when there was nothing to move)."""
  present = [name for name in RUN_FILES if (workdir / name).exists()]
  if not present:
    return None
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y%m%dT%H%M%S.%fZ')
  target = workdir / 'replaced' / stamp
  target.mkdir(parents=True)
  for name in present:
    (workdir / name).rename(target / name)
  return target


def record(workdir: epath.Path, config: config_lib.RunConfig, *,
           restored: bool) -> None:
  """Writes `config.json` (primary process only): when there is none, or
  when the run continues the recorded one (it restored a checkpoint) and
  trains, so the record shows its new length. A run that did not restore
  never overwrites it."""
  path = workdir / CONFIG_FILE
  trains = config.mode in _SAME_STEPS
  if not multihost.is_primary() or (path.exists() and
                                    not (restored and trains)):
    return
  # Written aside, then renamed: a reader never sees half a file.
  partial = workdir / (CONFIG_FILE + '.partial')
  partial.write_text(json.dumps(config.to_dict(), indent=2))
  partial.replace(path)


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[None]:
  """Holds `workdir`'s lock while the block runs (process 0; a remote
  workdir takes none).

  Raises:
    errors.WorkdirInUse: another process holds it, named by host, pid and
      start time.
  """
  path = resolve(workdir)
  if not multihost.is_primary() or '://' in str(path):
    yield
    return
  path.mkdir(parents=True, exist_ok=True)
  # Opened without truncating: the holder's record stays readable until
  # the lock is ours.
  fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise errors.WorkdirInUse(
          f'{path} is in use by another run ({_holder(fd)}); wait for it '
          'to end, stop it, or use another --workdir') from None
    holder = {'host': socket.gethostname(), 'pid': os.getpid(),
              'started': datetime.datetime.now(datetime.timezone.utc)
                         .isoformat(timespec='seconds')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
  """Who holds the lock, as its holder recorded it."""
  text = os.pread(fd, 4096, 0).decode(errors='replace')
  try:
    holder = json.loads(text)
    return (f'host {holder["host"]}, pid {holder["pid"]}, started '
            f'{holder["started"]}')
  except (ValueError, KeyError, TypeError):
    # Locked but not yet (or never) described: say what is known.
    return f'holder unknown, lock file {text[:80]!r}'
