"""Orbax checkpoints of a whole run, and resuming from the newest good one.

A checkpoint holds the train state (parameters and optimiser state, sharded
arrays restored onto their shardings), and a JSON record with the step, the
data iterators' positions and anything else the loop needs to continue
exactly. No RNG state is stored: the trainer derives every seed from the
run's seed and the step. Saves are asynchronous and atomic (Orbax writes to a
temporary directory and renames it when complete); the last `max_to_keep`
are kept. On resume the newest step that restores cleanly wins; a corrupt
one is reported (logged with its error and returned in `skipped`) and the
next older one is tried.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import os
from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp


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
        logging.warning('checkpoint step %d in %s does not restore (%s); '
                        'trying an older one', step, self.directory, message)
        skipped.append((step, message[:500]))
        continue
      return Restored(step=step, state=restored['state'],
                      record=dict(restored['record']), skipped=tuple(skipped))
    if skipped:
      logging.warning('no checkpoint in %s restores; starting fresh',
                      self.directory)
    return None

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
