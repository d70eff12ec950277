"""Demonstration call trees: a task's solver rolled out by the runtime.

The solver (a `ScriptedPolicy`) runs through the real frontier scheduler,
protocol parser, tools, verifiers, tokenizer and chat format, with the node
window of `window`, so its trees are in exactly the form training consumes
(the generated tokens carry loss mask 1 and log-prob 0), and its token
counts are the run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses

from rao_jax.agent import chat as chat_lib
from rao_jax.agent import code_runtime
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import scripted_engine
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib
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


def rollout(task: registry.Task, examples: Sequence[Mapping[str, str]], *,
            recursive: bool | Sequence[bool], window: context.Window,
            budgets: scheduler_lib.Budgets, seeds: Sequence[int],
            tokenizer: tokenizer_lib.Tokenizer = context.TOKENIZER,
            chat: chat_lib.ChatFormat | None = None,
            num_slots: int = 32, decode_steps: int = 128,
            code: code_runtime.CodeRuntime | None = None
            ) -> tuple[list[tree_lib.Tree], scheduler_lib.RolloutStats]:
  """One call tree per example, written by the task's reference solver.

  The trainer's SFT phase and `demonstrations` both come here, so there is
  one route from a solver to training trees.

  Args:
    task: the registered task.
    examples: decoded examples (`builder.load` or `jsonl.load_jsonl`).
    recursive: the recursive solver, else the direct one (which never
      spawns: the single-agent baseline); one flag for all examples, or
      one per example (a mixture of the two).
    window: node context limits; the engine's `max_len` is its max_tokens.
    budgets: rollout budgets.
    seeds: per example, its tree's seed.
    tokenizer: the run's tokenizer (the byte tokenizer by default).
    chat: the run's chat format over `tokenizer` (default: the raw
      protocol); the solver counts its tokens with it.
    num_slots, decode_steps: engine slots and tokens per decode call; the
      trees do not depend on them, the slot statistics do.
    code: the sandbox of the python action mode, whose solvers then write
      code blocks (`chat` must be of the python mode too); None: tags.

  Returns:
    The finished trees (tree i of example i), scored by the task's
    verifiers, and the statistics (summed over the solvers).
  """
  if isinstance(recursive, bool):
    recursive = [recursive] * len(examples)
  if len(recursive) != len(examples) or len(seeds) != len(examples):
    raise ValueError(f'demonstrations: {len(examples)} examples, '
                     f'{len(recursive)} solver flags, {len(seeds)} seeds')
  actions = chat_lib.TAGS if code is None else chat_lib.PYTHON
  chat = (chat_lib.ChatFormat(tokenizer) if chat is None else
          chat).for_actions(actions)
  trees: list[tree_lib.Tree | None] = [None] * len(examples)
  stats = scheduler_lib.RolloutStats()
  # One scheduler per solver: a scripted engine plays one policy.
  for flag in (True, False):
    index = [i for i, r in enumerate(recursive) if r == flag]
    if not index:
      continue
    solver = registry.solver(task, flag, actions)(
        dataclasses.replace(window, chat=chat))
    engine = scripted_engine.ScriptedEngine(
        solver, tokenizer, chat.stops, num_slots=num_slots,
        max_len=window.max_tokens, decode_steps=decode_steps)
    scheduler = scheduler_lib.FrontierScheduler(
        engine, tokenizer, budgets, inline_chars=window.inline_chars,
        head_chars=window.head_chars,
        show_depth_budget=window.show_depth_budget, chat=chat, code=code)
    part, part_stats = scheduler.run(
        [task.make_env(examples[i]) for i in index],
        [seeds[i] for i in index], groups=index, tree_ids=index)
    for i, tree in zip(index, part):
      trees[i] = tree
    stats = stats.plus(part_stats)
  return trees, stats


def demonstrations(task: registry.Task,
                   examples: Sequence[Mapping[str, str]], *,
                   recursive: bool = True,
                   window: context.Window = context.Window(),
                   budgets: scheduler_lib.Budgets | None = None,
                   num_slots: int = 32, seed: int = 0
                   ) -> list[tree_lib.Tree]:
  """`rollout` with default budgets and seeds `seed + i`; trees only.

  Args:
    task: the registered task.
    examples: decoded examples.
    recursive: the recursive solver, else the direct one.
    window: node context limits.
    budgets: rollout budgets (default: RECURSIVE_ or DIRECT_BUDGETS).
    num_slots: engine slots (only speed depends on it).
    seed: tree i gets seed + i.
  """
  if budgets is None:
    budgets = RECURSIVE_BUDGETS if recursive else DIRECT_BUDGETS
  trees, _ = rollout(task, examples, recursive=recursive, window=window,
                     budgets=budgets,
                     seeds=[seed + i for i in range(len(examples))],
                     num_slots=num_slots)
  return trees
