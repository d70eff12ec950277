"""The python mode's link from the scheduler to the sandbox.

`CodeRuntime` owns a warm `sandbox.WorkerPool` for a run's life (every
rollout's scheduler shares it, so no rollout pays for starting workers),
gives each node a key that is unique over that life, runs its blocks and
writes each block's observation text. It counts blocks and their round
trips, so a training step can report what the sandbox cost it.
"""

from __future__ import annotations

from collections.abc import Sequence
import itertools

from rao_jax.sandbox import limits as limits_lib
from rao_jax.sandbox import pool as pool_lib

LOST = pool_lib.LOST


class CodeRuntime:
  """Runs nodes' blocks in sandbox workers (see the module doc)."""

  def __init__(self, limits: limits_lib.Limits = limits_lib.Limits()):
    self.pool = pool_lib.WorkerPool(limits)
    self._keys = itertools.count()

  @property
  def limits(self) -> limits_lib.Limits:
    return self.pool.limits

  def new_key(self) -> str:
    """A node key never used before in this runtime."""
    return str(next(self._keys))

  def run(self, key: str, code: str, context: str,
          new_results: Sequence[str] = ()) -> pool_lib.BlockResult:
    """One block of node `key` (`WorkerPool.run`); never raises for what
    the code does."""
    return self.pool.run(key, code, context, tuple(new_results))

  def drop(self, key: str) -> None:
    """Frees a node's namespace once it has ended."""
    self.pool.drop(key)

  def stats(self) -> dict[str, float]:
    """Blocks run, their round trips in seconds, workers replaced."""
    return {'blocks': self.pool.blocks, 'seconds': self.pool.seconds,
            'replaced': self.pool.replaced}

  def close(self) -> None:
    self.pool.close()


def observation(result: pool_lib.BlockResult) -> str:
  """What a block's observation says: a lost namespace first, then what it
  printed, how much of that was cut, and its error."""
  parts = [LOST] if result.lost else []
  output = result.output
  if result.dropped:
    output += f'[{result.dropped} more characters of output cut]'
  if output:
    parts.append(output.rstrip('\n'))
  if result.error:
    parts.append('error: ' + result.error)
  return '\n'.join(parts)
