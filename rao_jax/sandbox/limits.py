"""The sandbox's limits: one frozen record, checked where it is made."""

from __future__ import annotations

import dataclasses

# Pure-computation modules model code may import; all are loaded before
# the worker confines itself (nothing can be read from disk afterwards).
DEFAULT_MODULES = ('math', 're', 'json', 'collections', 'itertools',
                   'functools', 'statistics', 'string', 'random', 'heapq',
                   'bisect', 'fractions', 'decimal', 'operator', 'textwrap',
                   'datetime')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
  """What one block and one worker may use.

  Attributes:
    num_workers: warm worker processes (nodes are routed to one and stay).
    block_cpu_s: CPU seconds a block may run (a timer in the worker; the
      node gets an error, its namespace kept).
    block_wall_s: seconds the trainer waits for a block's answer before it
      kills the worker and starts another (the node's variables are lost).
    worker_cpu_s: CPU seconds over a worker's life (RLIMIT_CPU, a
      backstop; the worker is replaced when it dies of it).
    memory_mb: address space of a worker (RLIMIT_AS).
    file_mb: largest file a worker may write (RLIMIT_FSIZE).
    dir_mb, dir_files: what a worker's private directory may hold after
      a block (the kernel bounds one file, not how many: the trainer
      counts them and replaces a worker past either).
    output_chars: characters of a block's output kept; the rest is
      counted and the observation says how many were cut.
    answer_chars: characters of an answer kept.
    max_frame_bytes: the largest answer frame the trainer reads; a worker
      that sends more is killed.
    recursion_limit: Python frames a block may nest.
    modules: the allow-list of importable modules.
  """

  num_workers: int = 2
  block_cpu_s: float = 2.0
  block_wall_s: float = 5.0
  worker_cpu_s: int = 600
  memory_mb: int = 512
  file_mb: int = 8
  dir_mb: int = 64
  dir_files: int = 1000
  output_chars: int = 2000
  answer_chars: int = 2000
  max_frame_bytes: int = 1 << 24
  recursion_limit: int = 400
  modules: tuple[str, ...] = DEFAULT_MODULES

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.name != 'modules' and not value > 0:
        raise ValueError(f'Limits.{field.name}={value}: must be > 0')
    if self.block_wall_s < self.block_cpu_s:
      raise ValueError('Limits.block_wall_s must be >= block_cpu_s (the '
                       'CPU timer should fire before the kill)')
