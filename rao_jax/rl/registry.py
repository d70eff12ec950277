"""Named variants of an RL building block, picked by name from the config.

Credit baselines and loss estimators are registered here under the names
configs use (`rl.credit.baseline='leave_one_out'`, `rl.loss.estimator=
'cispo'`), as tunix's function registry does: adding a variant is one
decorated function, and the config check lists what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
  """Name -> function, for one config field."""

  def __init__(self, field: str):
    """`field` is the config field that picks a name (used in errors)."""
    self.field = field
    self._functions: dict[str, Callable[..., Any]] = {}

  def register(self, name: str) -> Callable[[Callable], Callable]:
    """Decorator: registers the function under `name` (once)."""

    def add(function: Callable) -> Callable:
      if name in self._functions:
        raise ValueError(f'{self.field}: {name!r} is registered twice')
      self._functions[name] = function
      return function

    return add

  def names(self) -> tuple[str, ...]:
    """Registered names, in registration order."""
    return tuple(self._functions)

  def check(self, name: str) -> None:
    """Raises ValueError naming the field unless `name` is registered."""
    if name not in self._functions:
      raise ValueError(f'{self.field}={name!r}: expected one of '
                       f'{self.names()}')

  def get(self, name: str) -> Callable[..., Any]:
    self.check(name)
    return self._functions[name]
