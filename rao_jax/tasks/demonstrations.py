"""Demonstration call trees: a task's solver rolled out by the runtime.

The solver (a `ScriptedPolicy`) runs through the real frontier scheduler,
protocol parser, tools, verifiers and byte tokenizer, with the node window
of `window`, so its trees are in exactly the form training consumes (the
generated tokens carry loss mask 1 and log-prob 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rao_jax.agent import engine as engine_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.tasks import context
from rao_jax.tasks import registry

# Deep enough for every built-in level: documents split down to two
# records (log2 of 1640 records), crafting depth 12, 12 hops.
RECURSIVE_BUDGETS = scheduler_lib.Budgets(
    max_depth=12, max_children=4, max_steps=25, max_nodes=4096,
    max_tokens=1 << 22, max_new_tokens=128)
# The single-agent baseline: no spawns, room for a long direct solve.
DIRECT_BUDGETS = scheduler_lib.Budgets(
    max_depth=0, max_steps=60, max_tokens=1 << 20, max_new_tokens=128)


def demonstrations(task: registry.Task,
                   examples: Sequence[Mapping[str, str]], *,
                   recursive: bool = True,
                   window: context.Window = context.Window(),
                   budgets: scheduler_lib.Budgets | None = None,
                   num_slots: int = 32, seed: int = 0
                   ) -> list[tree_lib.Tree]:
  """One call tree per example, written by the task's reference solver.

  Args:
    task: the registered task.
    examples: decoded examples (`builder.load` or `jsonl.load_jsonl`).
    recursive: the recursive solver, else the direct one (which never
      spawns: the single-agent baseline).
    window: node context limits; the engine's `max_len` is its max_tokens.
    budgets: rollout budgets (default: RECURSIVE_ or DIRECT_BUDGETS).
    num_slots: engine slots (only speed depends on it).
    seed: tree i gets seed + i.

  Returns:
    The finished trees, scored by the task's verifiers.
  """
  solver = (task.recursive_solver if recursive else task.direct_solver)(
      window)
  if budgets is None:
    budgets = RECURSIVE_BUDGETS if recursive else DIRECT_BUDGETS
  engine = engine_lib.ScriptedEngine(
      solver, context.TOKENIZER, protocol.STOP_TAGS, num_slots=num_slots,
      max_len=window.max_tokens, decode_steps=128)
  scheduler = scheduler_lib.FrontierScheduler(
      engine, context.TOKENIZER, budgets, inline_chars=window.inline_chars,
      head_chars=window.head_chars)
  environments = [task.make_env(e) for e in examples]
  trees, _ = scheduler.run(environments,
                           [seed + i for i in range(len(environments))])
  return trees
