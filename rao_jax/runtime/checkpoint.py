"""Orbax checkpoints of a whole run, and resuming from the newest good one.

A checkpoint holds the train state (parameters and optimiser state, sharded
arrays restored onto their shardings), and a JSON record with the step, the
data iterators' positions and anything else the loop needs to continue
exactly. No RNG state is stored: the trainer derives every seed from the
run's seed and the step. Saves are asynchronous and atomic (Orbax writes to a
temporary directory and renames it when complete); the last `max_to_keep`
are kept. On resume the newest step that restores cleanly wins; a corrupt
one is reported (logged with its error and returned in `skipped`), moved
aside into `corrupt/<step>` and the next older one is tried. Moving it
matters: Orbax counts a step directory as saved whether or not it loads,
and would never save that step, or any older one, again.

Opening a checkpoint directory removes the temporary directories
(`*.orbax-checkpoint-tmp*`) an interrupted save left. `check_finite`
refuses a state with a NaN or an infinity in it: a run never saves one,
so a finite checkpoint is never replaced by a broken one.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import os
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rao_jax.runtime import multihost

CORRUPT_DIR = 'corrupt'  # steps that did not restore, kept for a post-mortem
_TMP_MARK = '.orbax-checkpoint-tmp'


@dataclasses.dataclass(frozen=True)
class Restored:
  """What `restore_latest` found."""

  step: int
  state: Any  # the train state pytree, on the target's shardings
  record: dict[str, Any]  # the JSON record saved with it
  skipped: tuple[tuple[int, str], ...]  # (step, error) of newer bad ones


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of a live pytree: a restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree)


class Checkpointer:
  """Saves and restores (train state, JSON record) pairs by step."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
               async_save: bool = True):
    """Checkpoints under `directory` (local, made absolute, or gs://).
    Every process of a multi-host run opens it and saves collectively."""
    if max_to_keep < 1:
      raise ValueError(f'checkpoint.max_to_keep={max_to_keep}: must be >= 1')
    text = os.fspath(directory)
    self.directory = epath.Path(text if '://' in text else
                                os.path.abspath(text))
    if multihost.is_primary():
      remove_partial_saves(self.directory)
    multihost.barrier('checkpoint directory clean')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
            create=True))

  def save(self, step: int, state: Any, record: dict[str, Any]) -> None:
    """Starts saving; returns before the write finishes when async."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        record=ocp.args.JsonSave(record)))

  def steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def record(self, step: int) -> dict[str, Any]:
    """The JSON record saved with `step`, without its arrays."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        record=ocp.args.JsonRestore()))
    return dict(restored['record'])

  def restore_latest(self, target: Any | Callable[[int], Any]
                     ) -> Restored | None:
    """Restores the newest checkpoint that loads; None when none does.

    Args:
      target: abstract train state (see `abstract_like`) whose shardings the
        arrays are restored onto, or a function of the step giving it (the
        state's structure may differ between training phases).
    """
    skipped = []
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(
                target(step) if callable(target) else target),
            record=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-exception-caught
        # A truncated or corrupt step: report it and fall back to an older
        # one rather than lose the run.
        message = f'{type(e).__name__}: {e}'
        moved = self._move_aside(step)
        logging.warning('checkpoint step %d in %s does not restore (%s); '
                        'moved it to %s; trying an older one', step,
                        self.directory, message[:500], moved)
        skipped.append((step, message[:500]))
        continue
      return Restored(step=step, state=restored['state'],
                      record=dict(restored['record']), skipped=tuple(skipped))
    if skipped:
      logging.warning('no checkpoint in %s restores; starting fresh',
                      self.directory)
    return None

  def _move_aside(self, step: int) -> epath.Path:
    """Moves step's directory into `corrupt/<step>` (`<step>.<n>` if a
    step of that number was moved before) and forgets it."""
    corrupt = self.directory / CORRUPT_DIR
    target, n = corrupt / str(step), 1
    while target.exists():
      target, n = corrupt / f'{step}.{n}', n + 1
    if multihost.is_primary():
      corrupt.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target)
    multihost.barrier(f'moved aside step {step}')
    self._manager.reload()
    return target

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def remove_partial_saves(directory: epath.Path) -> list[str]:
  """Removes what saves that never finished left in `directory` (Orbax
  writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when
  complete); returns their names."""
  if not directory.exists():
    return []
  partial = sorted(p.name for p in directory.iterdir() if _TMP_MARK in p.name)
  for name in partial:
    logging.warning('removing %s: a checkpoint save that never finished',
                    directory / name)
    path = directory / name
    if path.is_dir():
      path.rmtree()
    else:
      path.unlink()
  return partial


def nonfinite_leaves(tree: Any) -> tuple[int, int]:
  """(leaves with a NaN or an infinity, float leaves) of a pytree of
  arrays, over every process's shards (every process must call it).

  Read on the host, shard by shard: no program to compile and no device
  collective (eager reductions over a sharded state, one a leaf, stalled
  under load on fake CPU devices); the copy is what a save makes anyway.
  """
  bad = total = 0
  for leaf in jax.tree.leaves(tree):
    if not (hasattr(leaf, 'dtype') and
            jnp.issubdtype(leaf.dtype, jnp.inexact)):
      continue
    total += 1
    shards = ([s.data for s in leaf.addressable_shards]
              if isinstance(leaf, jax.Array) else [leaf])
    bad += not all(np.isfinite(np.asarray(s)).all() for s in shards)
  if jax.process_count() > 1:
    # A leaf may be bad on one process's shards only: all agree.
    bad = int(np.max(multihost_utils.process_allgather(np.int32(bad))))
  return bad, total


def check_finite(tree: Any, what: str) -> None:
  """Raises FloatingPointError, naming `what`, if `tree` holds a NaN or
  an infinity."""
  bad, total = nonfinite_leaves(tree)
  if bad:
    raise FloatingPointError(
        f'{what}: {bad} of {total} parameter arrays hold NaN or infinity; '
        'not written, so the newest checkpoint is still the last finite '
        'state. Lower the learning rate or check the data, then rerun.')
