"""A warm pool of sandbox workers, on the trainer's side.

Model code never runs in the trainer's process: `WorkerPool` keeps
`Limits.num_workers` worker processes (`worker.py`) started and confined,
routes each node to one of them for its whole life (its namespace lives
there), and turns everything that can go wrong with a block into text for
the node's observation: an exception, a block past its CPU seconds, a
worker past its wall-clock time (killed and replaced), a worker that died
(memory, signals, its CPU backstop) or wrote a frame the wire refuses.
A node whose worker was replaced gets a fresh namespace with its
`context` and its children's results so far, and is told its variables
were lost. Frames are JSON (`wire`): nothing a worker sends is executed.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

from rao_jax.sandbox import limits as limits_lib
from rao_jax.sandbox import wire

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'worker.py')
# The layers a pool refuses to run without (`confine` says what each
# guards); `privileges` applies only to a root trainer.
REQUIRED_LAYERS = ('rlimits', 'landlock', 'seccomp')
START_TIMEOUT_S = 60.0  # a loaded 2-core machine starts Python slowly
LOST = ('error: the interpreter of this node was restarted, its variables '
        'were lost; `context` and `results` are set again')


@dataclasses.dataclass(frozen=True)
class BlockResult:
  """What a block did, as the agent runtime needs it.

  Attributes:
    output: what it printed (at most `Limits.output_chars`).
    dropped: characters of output beyond that, not kept.
    error: what went wrong ('line 3: ValueError: ...'), or None.
    answer: the value given to `answer`, or None.
    spawns: (task, data, format) per child asked for, in handle order.
    lost: the node's namespace was made afresh before this block.
    seconds: the round trip, from sending the block to its answer.
  """

  output: str
  dropped: int
  error: str | None
  answer: str | None
  spawns: tuple[tuple[str, str, str], ...]
  lost: bool
  seconds: float


class WorkerFailure(Exception):
  """A worker that timed out, died or broke the wire during a block."""


class _Worker:
  """One worker process and its private directory."""

  def __init__(self, limits: limits_lib.Limits):
    self.workdir = tempfile.mkdtemp(prefix='rao_sandbox_')
    settings = dict(
        workdir=self.workdir, modules=list(limits.modules),
        memory_bytes=limits.memory_mb << 20, file_bytes=limits.file_mb << 20,
        worker_cpu_s=limits.worker_cpu_s, block_cpu_s=limits.block_cpu_s,
        output_chars=limits.output_chars, answer_chars=limits.answer_chars,
        recursion_limit=limits.recursion_limit)
    # A fresh interpreter, never a fork of the trainer, whose threads and
    # device state must not leak: no user site (`-s`) and an environment
    # of one variable (no PYTHONPATH). A fixed hash seed, so that what a
    # block prints (a set's order) is the same on every host of a run,
    # whose processes must make the same rollouts.
    self.process = subprocess.Popen(
        [sys.executable, '-s', _WORKER, json.dumps(settings)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, close_fds=True,
        env={'PYTHONHASHSEED': '0'}, cwd=self.workdir)
    self.nodes: set[str] = set()
    hello = self.read(time.monotonic() + START_TIMEOUT_S, 1 << 16)
    self.layers: dict[str, str] = hello.get('layers', {})
    missing = [k for k in REQUIRED_LAYERS if self.layers.get(k) != 'applied']
    if missing:
      self.stop()
      raise RuntimeError(f'sandbox layers not applied: '
                         f'{ {k: self.layers.get(k) for k in missing} }')

  def send(self, message: dict) -> None:
    try:
      wire.write_frame(self.process.stdin.fileno(), message)
    except OSError as e:  # BrokenPipeError: it died between blocks
      raise WorkerFailure(f'the interpreter died ({self._exit()})') from e

  def _exit(self) -> str:
    code = self.process.poll()
    if code is None:
      return 'still running'
    return (f'killed by signal {-code}' if code < 0 else
            f'exit status {code}')

  def _read_exact(self, size: int, deadline: float) -> bytes:
    fd = self.process.stdout.fileno()
    chunks, left = [], size
    while left:
      wait_s = deadline - time.monotonic()
      if wait_s <= 0 or not select.select([fd], [], [], wait_s)[0]:
        raise TimeoutError()
      chunk = os.read(fd, min(left, 1 << 16))
      if not chunk:
        self.process.wait(timeout=5)  # reap it, to say how it ended
        raise WorkerFailure(f'the interpreter died ({self._exit()})')
      chunks.append(chunk)
      left -= len(chunk)
    return b''.join(chunks)

  def read(self, deadline: float, max_bytes: int) -> dict:
    try:
      size = wire.decode_header(self._read_exact(wire.HEADER_BYTES,
                                                 deadline), max_bytes)
      return wire.decode_body(self._read_exact(size, deadline))
    except wire.WireError as e:
      raise WorkerFailure(f'the interpreter broke the wire ({e})') from e

  def stop(self) -> None:
    """Kills the process (if alive) and removes its directory."""
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait()
    for pipe in (self.process.stdin, self.process.stdout):
      pipe.close()
    shutil.rmtree(self.workdir)


class WorkerPool:
  """Runs blocks of model code in warm, confined worker processes."""

  def __init__(self, limits: limits_lib.Limits = limits_lib.Limits()):
    self.limits = limits
    self._workers = [_Worker(limits) for _ in range(limits.num_workers)]
    self._route: dict[str, _Worker] = {}
    self._results: dict[str, list[str]] = {}
    self.blocks = 0
    self.seconds = 0.0  # round trips, summed
    self.replaced = 0  # workers killed or dead, and started again
    # Workers exit when their pipe closes; this also removes their
    # private directories when the trainer exits without closing.
    atexit.register(self.close)

  @property
  def layers(self) -> dict[str, str]:
    """The confinement layers of the workers (`confine`)."""
    return dict(self._workers[0].layers)

  def pids(self) -> list[int]:
    return [w.process.pid for w in self._workers]

  def run(self, key: str, code: str, context: str,
          new_results: tuple[str, ...] = ()) -> BlockResult:
    """Runs one block of node `key`; never raises for what the code does.

    Args:
      key: the node's id, unique in the pool's life.
      code: the block's source.
      context: the node's input (sent only when its namespace is made).
      new_results: answers of the children that finished since its last
        block, in handle order.
    """
    start = time.perf_counter()
    results = self._results.setdefault(key, [])
    results.extend(new_results)
    worker = self._route.get(key)
    # A replaced worker took its namespaces with it.
    lost = worker is not None and worker not in self._workers
    if worker is None or lost:
      worker = min(self._workers, key=lambda w: len(w.nodes))
      self._route[key] = worker
      request = dict(op='run', node=key, code=code, context=context,
                     results=list(results))
      worker.nodes.add(key)
    else:
      request = dict(op='run', node=key, code=code, context=None,
                     results=list(new_results))
    try:
      worker.send(request)
      reply = worker.read(time.monotonic() + self.limits.block_wall_s,
                          self.limits.max_frame_bytes)
      error = reply.get('error')
    except TimeoutError:
      self._replace(worker)
      reply, error = {}, (f'TimeoutError: the block ran past '
                          f'{self.limits.block_wall_s} s; its interpreter '
                          'was killed and replaced (variables lost)')
    except WorkerFailure as e:
      self._replace(worker)
      reply, error = {}, f'{e}; it was replaced (variables lost)'
    else:
      full = _directory_full(worker.workdir, self.limits)
      if full:
        self._replace(worker)
        error = (f'{error}\n' if error else '') + (
            f'the block left {full} in its directory; its interpreter was '
            'killed and replaced (variables lost)')
    seconds = time.perf_counter() - start
    self.blocks += 1
    self.seconds += seconds
    return _result(reply, error, lost, seconds)

  def drop(self, key: str) -> None:
    """Forgets a finished node (its worker frees its namespace)."""
    worker = self._route.pop(key, None)
    self._results.pop(key, None)
    if worker is not None and worker in self._workers:
      worker.nodes.discard(key)
      try:
        worker.send({'op': 'drop', 'node': key})
      except WorkerFailure:
        self._replace(worker)  # it died idle; its next block says so

  def ping(self) -> float:
    """Seconds of one empty round trip to the first worker."""
    worker = self._workers[0]
    start = time.perf_counter()
    worker.send({'op': 'ping'})
    worker.read(time.monotonic() + self.limits.block_wall_s, 1 << 16)
    return time.perf_counter() - start

  def _replace(self, worker: _Worker) -> None:
    """Kills a worker and starts another in its place; its nodes'
    namespaces are gone (their next block is told)."""
    index = self._workers.index(worker)
    worker.stop()
    self._workers[index] = _Worker(self.limits)
    self.replaced += 1

  def close(self) -> None:
    """Stops every worker (again: nothing)."""
    for worker in self._workers:
      worker.stop()
    self._workers = []
    atexit.unregister(self.close)

  def __enter__(self) -> WorkerPool:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _directory_full(path: str, limits: limits_lib.Limits) -> str | None:
  """What a worker's directory holds past its limits, or None. The walk
  stops at the file limit, so counting costs at most that many entries."""
  files, size = 0, 0
  for root, dirs, names in os.walk(path):
    files += len(names) + len(dirs)
    if files > limits.dir_files:
      return f'more than {limits.dir_files} files'
    for name in names:
      try:
        size += os.lstat(os.path.join(root, name)).st_size
      except FileNotFoundError:
        continue  # removed by the worker while the walk ran: not there
  if size > limits.dir_mb << 20:
    return f'{size >> 20} MB (limit {limits.dir_mb} MB)'
  return None


def _result(reply: dict, error: str | None, lost: bool,
            seconds: float) -> BlockResult:
  """A reply's fields, checked: a worker's frame is untrusted data."""
  spawns = []
  for child in reply.get('spawns') or []:
    if isinstance(child, dict):
      spawns.append(tuple(str(child.get(k, '')) for k in
                          ('task', 'data', 'format')))
  answer = reply.get('answer')
  return BlockResult(
      output=str(reply.get('output', '')), dropped=int(
          reply.get('dropped', 0) or 0),
      error=None if error is None else str(error),
      answer=None if answer is None else str(answer),
      spawns=tuple(spawns), lost=lost, seconds=seconds)
