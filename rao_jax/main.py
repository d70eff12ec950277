r"""rao_jax entry point.

  python -m rao_jax.main --config=configs/cpu_tiny.py --workdir=/tmp/rao_tiny
  python -m rao_jax.main --config=configs/cpu_tiny.py --workdir=/tmp/rao_tiny \
      --config.generate.max_new_tokens=64 --config.model.num_layers=4

The config file is ml_collections code (`get_config()`); any field can be
overridden with `--config.<path>=<value>`. The ConfigDict becomes a typed,
validated `rao_jax.config.RunConfig` here, once, and `config.mode` picks
its module from `MODES`. Rerunning a command on its workdir resumes it; a
workdir that holds another run is refused unless `--start_over` moves that
run aside. Kept short on purpose: the work happens in the modes' modules.

A refusal (`rao_jax.runtime.errors`: a bad field, a missing input, a
workdir that holds another run or is in use) is one line on stderr and
exit status 2; `--verbosity=1` or `RAO_TRACEBACK=1` adds the traceback.
"""

from rao_jax.runtime import host_memory

if __name__ == '__main__':
  # glibc reads its malloc tunables at start-up: settle them before jax loads.
  host_memory.reexec_with_huge_pages()

# pylint: disable=g-import-not-at-top,wrong-import-position
from collections.abc import Sequence
import faulthandler
import importlib
import os
import signal
import sys
from typing import Any, NoReturn

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from rao_jax import config as config_lib
from rao_jax.runtime import errors
from rao_jax.runtime import multihost
from rao_jax.runtime import workdir as workdir_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

# `config.mode` -> (module, keyword arguments): the module's
# `run(config, workdir, start_over=..., **kwargs)` runs the mode and returns
# its summary. A module is imported when its mode runs, so a refused
# command or `--help` answers before the training stack (Orbax,
# TensorBoard, the trainer's programs) is imported. `config.MODES` lists
# the same names for validation; the phase names are `training.phases`'.
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    'train': ('rao_jax.train', {'phase_names': ('sft', 'rl')}),
    'sft': ('rao_jax.train', {'phase_names': ('sft',)}),
    'rl': ('rao_jax.train', {'phase_names': ('rl',)}),
    'eval': ('rao_jax.evaluate', {}),
    'generate': ('rao_jax.generate', {}),
    'export': ('rao_jax.export', {}),
    # Shapes only, on the target slice's devices: `run(config)`, no workdir.
    'plan': ('rao_jax.plan', {}),
}

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and outputs.')
_START_OVER = flags.DEFINE_bool(
    'start_over', False, 'Move a previous run in --workdir aside (into '
    'replaced/<time>/) and start a new one there.')
# Several processes (config.distributed): on Cloud TPU JAX finds the
# coordinator itself; elsewhere name it, the process count and this id.
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 (multi-process '
    'runs outside Cloud TPU).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes of the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process\'s index, from 0.')
_HEARTBEAT_S = flags.DEFINE_integer(
    'heartbeat_timeout_s', 30, 'A process silent this long is lost: the '
    'others stop with an error naming it.')
_SHUTDOWN_S = flags.DEFINE_integer(
    'shutdown_timeout_s', 60, 'How long a finishing process waits for the '
    'others at shutdown.')
flags.mark_flags_as_required(['config', 'workdir'])


def run(config: config_lib.RunConfig, workdir: str, *,
        start_over: bool = False) -> dict[str, Any]:
  """Runs `config.mode` in `workdir` (what the command runs, in this
  process: the notebook and the claims harness call it); returns the
  mode's summary."""
  config_lib.check_inputs(config)  # before the workdir records the run
  module, kwargs = MODES[config.mode]
  run_mode = importlib.import_module(module).run
  if config.mode == 'plan':  # touches no workdir
    return run_mode(config)
  with workdir_lib.lock(workdir):  # one run a workdir
    return run_mode(config, workdir, start_over=start_over, **kwargs)


def _wants_traceback() -> bool:
  """A refusal's traceback is shown at --verbosity=1 and above, or with
  RAO_TRACEBACK=1."""
  verbosity = flags.FLAGS['verbosity']
  return (os.environ.get(errors.TRACEBACK_ENV, '') not in ('', '0') or
          (verbosity.present and verbosity.value >= 1))


def _refuse(message: str, exit_status: int = errors.EXIT_STATUS
            ) -> NoReturn:
  """Ends the process with `message` as one line on stderr."""
  print(f'error: {errors.one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(exit_status)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with a bad `--config.<field>` refused in one
  line naming the flag (ml_collections raises AttributeError or KeyError
  for an unknown field, and absl prints a usage screen for a bad value)."""
  try:
    return flags.FLAGS(list(argv))
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    if os.environ.get(errors.TRACEBACK_ENV, '') not in ('', '0'):
      raise
    name = str(e).strip('"\'')
    named = [a for a in argv[1:] if a.startswith('--config.') and
             name and name in a.split('=', 1)[0].split('.')]
    if named and isinstance(e, (AttributeError, KeyError)):
      _refuse(f'{named[0]}: the config has no field {name!r}')
    _refuse(f'{type(e).__name__}: {e}')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    # Orbax logs every file it writes at INFO; keep the console readable.
    logging.set_verbosity(logging.WARNING)
  # Until the training loop takes SIGTERM over (and after it), SIGTERM
  # stops the run with one line instead of killing it silently.
  signal.signal(signal.SIGTERM, _stop_on_sigterm)
  try:
    _main()
  except errors.Refusal as e:
    if _wants_traceback():
      raise
    _refuse(e.one_line())
  except errors.Stopped as e:
    _stop(e)
  except FloatingPointError as e:
    # Training diverged: what happened and what was kept, in one line.
    if _wants_traceback():
      raise
    _refuse(str(e), 1)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1 or _wants_traceback():
      raise
    _lost_peer(e)


def _lost_peer(error: Exception) -> NoReturn:
  """A collective failed in a multi-process run: on CPU (gloo) that is how
  a lost peer shows first. One line, then exit at once: JAX's shutdown
  would wait on the lost process and then abort with every thread's
  stack. (On TPU the coordination service's heartbeat check aborts the
  process itself, with its own message naming the lost process.)"""
  first = str(error).strip().splitlines()[0][:300] if str(error) else ''
  print(f'error: process {jax.process_index()}: a collective across the '
        f'run\'s processes failed, most likely a lost peer ({first}); '
        'rerun the command on every host to resume from the last '
        'checkpoint', file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access


def _stop_on_sigterm(signum: int, frame: Any) -> NoReturn:
  """SIGTERM outside the training loop (which saves and stops at the end
  of its step instead: `multihost.Preemption`): one line, then out.

  Out from the handler itself, not by an exception left to unwind: the
  signal may arrive while Python runs a callback whose exceptions are
  printed and ignored (JAX's gc callback, a `__del__`), and the run would
  go on.
  """
  del frame
  stopped = errors.Stopped(
      'SIGTERM outside the training loop: stopped; the checkpoints saved so '
      'far are kept (a save cut short is removed on resume): rerun the '
      'command to resume', 128 + signum)
  if _wants_traceback():
    raise stopped
  _stop(stopped)


def _stop(stopped: errors.Stopped) -> NoReturn:
  print(f'error: {stopped}', file=sys.stderr, flush=True)
  # Out at once: stopped mid-setup, the interpreter's teardown can crash
  # in XLA's threads (seen: a segfault after the line). Nothing is left
  # to save: the loop saves its own preemptions, and the kernel drops
  # the workdir lock.
  sys.stdout.flush()
  os._exit(stopped.exit_status)  # pylint: disable=protected-access


def _main() -> None:
  """The command: config, processes, then the mode."""
  config = config_lib.from_config_dict(_CONFIG.value)
  if config.distributed:
    # Several processes leave SIGTERM to JAX's preemption service, which
    # agrees on a step to save at.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not _wants_traceback():
      # A lost peer ends the others by abort() from JAX's coordination
      # service, after its own message naming the lost process; absl's
      # faulthandler would then bury that line under a traceback of every
      # thread (~90 of them).
      faulthandler.disable()
    # Multi-host: every host runs this same command; the processes find each
    # other and share one global mesh.
    multihost.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
        heartbeat_timeout_s=_HEARTBEAT_S.value,
        shutdown_timeout_s=_SHUTDOWN_S.value)
  run(config, _WORKDIR.value, start_over=_START_OVER.value)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
