"""Task name -> builder, environment factory and reference solvers.

Configs refer to tasks by name (`config.tasks.name = 'crafting'`). A user
adds a task with one module that defines a `TaskBuilder` subclass, an
environment factory and two solvers, and calls `register(Task(...))` at
import; `get('mypkg.mytask')` imports such a module by its path and
returns the task it registered under the module's `TASK_NAME`.

Difficulty splits for generalisation (the paper's protocol): every level
has train / validation / test splits; a run's config names the level it
trains on (`tasks.train_level`, medium in the paper) and those it evaluates
on (`tasks.eval_levels`: easy, medium, hard), so easy and hard can be
levels never seen in training; `extreme` is for stress tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import importlib
import importlib.util

from rao_jax.agent import env as env_lib
from rao_jax.tasks import context

EnvFactory = Callable[[Mapping[str, str]], env_lib.Environment]
SolverFactory = Callable[[context.Window], env_lib.ScriptedPolicy]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
  """A registered task family.

  Attributes:
    name: the name configs use.
    tfds_name: the builder's tfds name (`tfds.data_source(tfds_name/level)`).
    builder: the `TaskBuilder` subclass.
    make_env: decoded example (str fields) -> its `Environment`.
    recursive_solver: window -> the reference recursive solver.
    direct_solver: window -> the solver that never spawns.
    code_recursive_solver, code_direct_solver: the same in the python
      action mode (their steps are code blocks); None where the family
      has none.
    levels: all difficulty levels, easiest first.
  """

  name: str
  tfds_name: str
  builder: type
  make_env: EnvFactory
  recursive_solver: SolverFactory
  direct_solver: SolverFactory
  code_recursive_solver: SolverFactory | None = None
  code_direct_solver: SolverFactory | None = None
  levels: tuple[str, ...] = ('easy', 'medium', 'hard', 'extreme')


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
  """Adds a task; re-registering the same name replaces it (reloads)."""
  _TASKS[task.name] = task
  return task


def get(name: str) -> Task:
  """The task called name, or the one the module importable as `name`
  (e.g. 'mypkg.mytask') registers under its `TASK_NAME`."""
  if name not in _TASKS and _importable(name):
    module = importlib.import_module(name)
    name = getattr(module, 'TASK_NAME', name)
  if name not in _TASKS:
    raise KeyError(f'unknown task {name!r} (known: {", ".join(names())})')
  return _TASKS[name]


def _importable(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):  # a missing parent package, or ''
    return False


def solver(task: Task, recursive: bool, actions: str) -> SolverFactory:
  """The task's reference solver for an action mode ('tags' or
  'python'); ValueError where the family has none for it."""
  if actions == 'tags':
    return task.recursive_solver if recursive else task.direct_solver
  factory = task.code_recursive_solver if recursive else (
      task.code_direct_solver)
  if factory is None:
    raise ValueError(f'task {task.name!r} has no reference solver for the '
                     f'{actions!r} action mode')
  return factory


def names() -> tuple[str, ...]:
  """Registered task names, sorted."""
  return tuple(sorted(_TASKS))
