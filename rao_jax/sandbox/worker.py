"""A sandbox worker: one process that runs model code, many nodes' blocks.

Started by `pool.WorkerPool` as `python -s worker.py SETTINGS_JSON` with
pipes for standard input and output. It keeps the pipes on private file
descriptors and points 0, 1 and 2 at /dev/null, loads the allow-listed
modules, confines itself (`confine`), says hello with the layers it
applied, then serves frames (`wire`) until its input closes:

  {'op': 'run', 'node': KEY, 'code': STR, 'context': STR | None,
   'results': [STR, ...]}
      runs a block in node KEY's namespace (made from `context` when it is
      given), after appending `results` (children finished since its last
      block); answers {'output', 'dropped', 'error', 'answer', 'spawns',
      'cpu_s'}.
  {'op': 'drop', 'node': KEY}    forgets a finished node (no answer).
  {'op': 'ping'}                 answers {'op': 'pong'} (round-trip timing).

A block's CPU time is bounded by a profiling timer (an exception in the
block, the namespace kept); everything the timer cannot stop (a long C
call, a handler the code replaced) is the trainer's wall-clock kill.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import time
import traceback
from typing import Any

if __package__ in (None, ''):  # run as a script: its siblings are local
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import confine  # pylint: disable=g-import-not-at-top
  import namespace  # pylint: disable=g-import-not-at-top
  import wire  # pylint: disable=g-import-not-at-top
else:
  from rao_jax.sandbox import confine
  from rao_jax.sandbox import namespace
  from rao_jax.sandbox import wire


class BlockTimeout(BaseException):
  """The block used its CPU seconds (raised by the profiling timer)."""


def _on_timer(signum, frame):
  del signum, frame
  raise BlockTimeout()


def _clean(text: str) -> str:
  """Text that encodes as UTF-8 (lone surrogates replaced)."""
  return text.encode('utf-8', 'replace').decode('utf-8')


def _error_text(error: BaseException, limit: int) -> str:
  """'line N: Type: message', the block's own line, message truncated."""
  line = ''
  for frame in traceback.extract_tb(error.__traceback__):
    if frame.filename == '<block>':
      line = f'line {frame.lineno}: '
  try:
    message = str(error)[:limit]
  except Exception:  # pylint: disable=broad-except
    message = '(unprintable message)'  # a hostile __str__ must not kill us
  return f'{line}{type(error).__name__}: {message}'.rstrip(': ')


class Worker:
  """The namespaces of the nodes routed here, and the block runner."""

  def __init__(self, settings: dict[str, Any], modules: dict[str, Any]):
    self.settings = settings
    self.modules = modules
    self.nodes: dict[str, namespace.NodeState] = {}

  def run(self, request: dict[str, Any]) -> dict[str, Any]:
    key, context = str(request['node']), request.get('context')
    if context is not None:
      self.nodes[key] = namespace.NodeState(
          context, self.modules, self.settings['answer_chars'])
    state = self.nodes.get(key)
    if state is None:  # the trainer always says when it knows of a loss
      return {'error': 'no namespace for this node', 'output': '',
              'dropped': 0, 'answer': None, 'spawns': [], 'cpu_s': 0.0}
    state.results.extend(request.get('results', []))
    state.pending, state.answer = [], None
    stdout = namespace.BoundedWriter(self.settings['output_chars'])
    error = None
    start = time.process_time()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = stdout
    try:
      signal.setitimer(signal.ITIMER_PROF, self.settings['block_cpu_s'])
      code = compile(str(request['code']), '<block>', 'exec')
      exec(code, state.globals)  # pylint: disable=exec-used
    except namespace.Answered:
      pass
    except BlockTimeout:
      error = (f'TimeoutError: the block ran past its '
               f'{self.settings["block_cpu_s"]} CPU seconds')
    except BaseException as e:  # pylint: disable=broad-except
      # Model code's own failure, SystemExit and KeyboardInterrupt
      # included: it becomes the observation, the worker goes on.
      error = _error_text(e, self.settings['output_chars'])
    finally:
      signal.setitimer(signal.ITIMER_PROF, 0)
      sys.stdout, sys.stderr = saved
    return {'output': _clean(stdout.getvalue()), 'dropped': stdout.dropped,
            'error': None if error is None else _clean(error),
            'answer': None if state.answer is None else _clean(state.answer),
            'spawns': [{k: _clean(v) for k, v in s.items()}
                       for s in state.pending],
            'cpu_s': time.process_time() - start}


def _load_modules(names: list[str]) -> dict[str, Any]:
  """The allow-listed modules, imported before the files are closed."""
  modules = {}
  for name in names:
    modules[name] = __import__(name)
    for part in name.split('.')[1:]:
      modules[name] = getattr(modules[name], part)
  return modules


def main() -> None:
  settings = json.loads(sys.argv[1])
  # The pipes move to private descriptors; 0, 1, 2 go nowhere, so a C
  # library or model code writing to them cannot reach the trainer.
  in_fd, out_fd = os.dup(0), os.dup(1)
  null = os.open(os.devnull, os.O_RDWR)
  for fd in (0, 1, 2):
    os.dup2(null, fd)
  modules = _load_modules(settings['modules'])
  # Every worker draws the same numbers for the same blocks (the hosts of
  # a run replay the same rollouts); the hash seed is fixed by the pool.
  random.seed(0)
  signal.signal(signal.SIGPROF, _on_timer)
  sys.setrecursionlimit(settings['recursion_limit'])
  layers = confine.confine(
      settings['workdir'], memory_bytes=settings['memory_bytes'],
      file_bytes=settings['file_bytes'], cpu_s=settings['worker_cpu_s'])
  wire.write_frame(out_fd, {'op': 'hello', 'layers': layers,
                            'pid': os.getpid()})
  worker = Worker(settings, modules)
  while True:
    try:
      request = wire.read_frame(in_fd)
    except wire.WireError:
      return  # the trainer closed the pipe: the pool is shutting down
    op = request.get('op')
    if op == 'run':
      wire.write_frame(out_fd, worker.run(request))
    elif op == 'drop':
      worker.nodes.pop(str(request.get('node')), None)
    elif op == 'ping':
      wire.write_frame(out_fd, {'op': 'pong',
                                'maxrss_kb': resource.getrusage(
                                    resource.RUSAGE_SELF).ru_maxrss})


if __name__ == '__main__':
  main()
