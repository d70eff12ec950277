"""The environment interface that task families implement.

The agent runtime (`rao_jax.agent`) drives call trees; a task family
(`rao_jax.tasks`) supplies, per root task, an `Environment`: the root's
spec, the tools its nodes may call, how a child's environment derives from
its parent's (shared by reference, e.g. a crafting inventory, or a slice of
the data), and verifiers. `spawn` and `answer` are built into the protocol,
never tools of an environment. Imports run one way: tasks -> agent.

Contract for every callable here: it never raises on model-written input.
Bad arguments come back as observation text (`ToolResult.error`), an
unparseable answer scores 0.0, and a sub-task the family cannot check
scores None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class NodeSpec:
  """What a node is asked to do: the three things a parent hands a child.

  Attributes:
    task: the task description.
    data: the node's input data (may be far longer than a context window;
      the prompt shows it inline when short, else as a handle).
    format: the expected answer format, e.g. 'an integer'.
  """

  task: str
  data: str = ''
  format: str = ''


@dataclasses.dataclass(frozen=True)
class ToolResult:
  """A tool call's observation, injected into the caller's context."""

  text: str
  error: bool = False


@dataclasses.dataclass(frozen=True)
class Tool:
  """A tool an environment offers.

  Attributes:
    name: single word, as the model writes it.
    usage: argument grammar shown in the prompt, e.g. 'read <start> <end>'.
    run: (environment state, raw argument text) -> ToolResult. Must not
      raise; malformed arguments give `ToolResult(text, error=True)`.
  """

  name: str
  usage: str
  run: Callable[[Any, str], ToolResult]


class Environment(Protocol):
  """One root task's world, shared by all nodes of its call tree."""

  def root_spec(self) -> NodeSpec:
    """The spec of the root node."""
    ...

  def tools(self) -> Sequence[Tool]:
    """Tools every node of this tree may call (besides spawn/answer)."""
    ...

  def root_state(self) -> Any:
    """State the root's tools act on (e.g. the inventory)."""
    ...

  def child_state(self, parent_state: Any, spec: NodeSpec) -> Any:
    """State of a child spawned with `spec` (the parent's, by reference, or
    a new one)."""
    ...

  def score_root(self, answer: str, state: Any) -> float:
    """Success in [0, 1] of the root's final answer (and final state)."""
    ...

  def score_subtask(self, spec: NodeSpec, answer: str,
                    state: Any) -> float | None:
    """Success in [0, 1] of a child's answer to `spec`, or None where the
    family cannot check this sub-task (training then copies the root's
    success down: the paper's sparse setting)."""
    ...


@dataclasses.dataclass(frozen=True)
class StepView:
  """What a scripted policy (a reference solver) sees before each step.

  Attributes:
    spec: the node's spec.
    depth: 0 for the root.
    step: index of the step about to be taken.
    observations: text injected after each earlier step, in order (a tool's
      observation, or the children's answers / failure texts).
    children_answers: per earlier spawn step, the answers of its children
      (None for a child that failed), for solvers that combine results.
    budgets: remaining budgets, e.g. {'depth': 2, 'steps': 10}.
    state: the environment state of this node.
  """

  spec: NodeSpec
  depth: int
  step: int
  observations: tuple[str, ...]
  children_answers: tuple[tuple[str | None, ...], ...]
  budgets: Mapping[str, int]
  state: Any


class ScriptedPolicy(Protocol):
  """Writes a node's next step as protocol text, e.g. a reference solver.

  The rollout runs a scripted policy through the same protocol parser,
  tools, budgets and tokenizer as the model, so its call trees are
  demonstrations in exactly the form training consumes.
  """

  def __call__(self, view: StepView) -> str:
    ...


def tool_table(tools: Sequence[Tool]) -> dict[str, Tool]:
  """Name -> tool; refuses duplicates and the built-in names."""
  table: dict[str, Tool] = {}
  for tool in tools:
    if tool.name in ('spawn', 'answer') or tool.name in table:
      raise ValueError(f'tool name {tool.name!r} is reserved or repeated')
    table[tool.name] = tool
  return table
