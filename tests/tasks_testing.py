"""Shared helpers for the task tests: roll solvers out through the runtime.

Demonstrations are checked in the form training consumes them: the real
`FrontierScheduler` drives a `ScriptedEngine` playing the solver, with the
real protocol parser, tools, verifiers, byte tokenizer and a node window of
`WINDOW.max_tokens` tokens.
"""

from __future__ import annotations

from rao_jax.agent import engine as engine_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.tasks import context

WINDOW = context.Window()  # the cpu_tiny node window
TOKENIZER = context.TOKENIZER
# Deep enough for every level's recursion (documents: log2 of the records).
RECURSIVE_BUDGETS = scheduler_lib.Budgets(
    max_depth=12, max_children=4, max_steps=25, max_nodes=4096,
    max_tokens=1 << 22, max_new_tokens=128)
DIRECT_BUDGETS = scheduler_lib.Budgets(
    max_depth=0, max_steps=60, max_tokens=1 << 20, max_new_tokens=128)


def rollout(policy, environments, budgets, window=WINDOW, num_slots=32):
  """Runs one tree per environment; returns the finished trees."""
  engine = engine_lib.ScriptedEngine(
      policy, TOKENIZER, protocol.STOP_TAGS, num_slots=num_slots,
      max_len=window.max_tokens, decode_steps=128)
  scheduler = scheduler_lib.FrontierScheduler(
      engine, TOKENIZER, budgets, inline_chars=window.inline_chars,
      head_chars=window.head_chars)
  trees, _ = scheduler.run(environments, list(range(len(environments))))
  return trees


def sampled_steps(node):
  """The node's generated steps, decoded (runs of loss-mask-1 tokens)."""
  steps, current = [], []
  for token, bit in zip(node.tokens, node.loss_mask):
    if bit:
      current.append(token)
    elif current:
      steps.append(TOKENIZER.decode(current))
      current = []
  if current:
    steps.append(TOKENIZER.decode(current))
  return steps
