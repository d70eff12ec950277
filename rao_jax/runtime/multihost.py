"""Several processes, one run: start-up, the primary, barriers, preemption.

Every process of a multi-host run executes the same command and the same
control flow: the same root tasks, the same rollouts (the scheduler is
replicated, and the sampler returns what the host needs replicated on every
device), the same packed batches, the same jitted programs on one global
mesh. Only process 0 (the primary) writes the workdir's logs, trees and
summary; Orbax writes checkpoints collectively.

A process that dies stops the others: the coordination service misses its
heartbeats for `heartbeat_timeout_s` and aborts every other process with
"The following tasks are unhealthy (stopped sending heartbeats): <ids>"
(exit status 134), so no process waits forever in a collective.

SIGTERM (how Cloud TPU announces a spot or preemptible shutdown) reaches
the run as a preemption notice: every process trains on to the same step
(the sync point JAX's preemption service agrees on), the run saves a
checkpoint there and exits with status 0; rerunning the command resumes.
"""

from __future__ import annotations

import signal
import sys
import time

from absl import logging
import jax
from jax.experimental import multihost_utils


def initialize(*, coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               heartbeat_timeout_s: int = 30,
               shutdown_timeout_s: int = 60,
               initialization_timeout_s: int = 300) -> None:
  """Joins the run's processes into one JAX runtime.

  On Cloud TPU every argument but the timeouts is found by JAX itself; on
  other machines give the coordinator (process 0's `host:port`), the
  number of processes and this one's id. On CPU the processes' collectives
  go through gloo.
  """
  # Only affects CPU devices; must precede the backend's start-up.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id, heartbeat_timeout_seconds=heartbeat_timeout_s,
      shutdown_timeout_seconds=shutdown_timeout_s,
      initialization_timeout=initialization_timeout_s)
  logging.info('process %d of %d, %d local devices of %d',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def is_primary() -> bool:
  """Whether this process writes the run's logs (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process got here (a no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


class Preemption:
  """Tells the training loop when to save and stop after SIGTERM.

  With several processes JAX's preemption service agrees on one step for
  all of them; a single process (no distributed runtime) watches SIGTERM
  itself and stops at the end of the step it arrives in, or, when that
  step is still running `patience_s` after the notice (a large model's
  step can outlast a cloud's grace period), at its next minibatch
  boundary (`mid_step`).
  """

  def __init__(self, patience_s: float = 10.0):
    self._distributed = jax.distributed.is_initialized()
    self._noticed_at: float | None = None
    self._patience_s = patience_s
    if not self._distributed:
      self._previous = signal.signal(signal.SIGTERM, self._notice)

  @property
  def _noticed(self) -> bool:
    return self._noticed_at is not None

  def _notice(self, signum, frame) -> None:
    del signum, frame
    self._noticed_at = time.monotonic()
    # Said once, on stderr: the run goes on to the end of its step (or of
    # its current minibatch, if the step outlasts the patience).
    print('rao_jax: SIGTERM received; saving a checkpoint at the end of '
          'this step and exiting', file=sys.stderr, flush=True)

  def reached(self, step: int) -> bool:
    """Whether the run must save at `step` and stop; call it every step."""
    if self._distributed:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._noticed

  def mid_step(self) -> bool:
    """Whether the running step must stop at its next minibatch boundary:
    SIGTERM came `patience_s` ago or more and the step still runs. A short
    step ends first and resumes exactly; a cut step resumes after it, its
    remaining minibatches skipped. Never with several processes, whose
    stop must be agreed on at a step (`reached`)."""
    return (not self._distributed and self._noticed and
            time.monotonic() - self._noticed_at >= self._patience_s)

  def close(self) -> None:
    """Gives SIGTERM its previous handler back."""
    if not self._distributed:
      signal.signal(signal.SIGTERM, self._previous)
