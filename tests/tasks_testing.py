"""Shared helpers for the task tests.

Demonstrations come from `tasks.demonstrate`, which plays a solver through
the real `FrontierScheduler`, protocol parser, tools, verifiers and byte
tokenizer with a node window of `WINDOW.max_tokens` tokens: the form
training consumes.
"""

from __future__ import annotations

from rao_jax.tasks import context

WINDOW = context.Window()  # the cpu_tiny node window
TOKENIZER = context.TOKENIZER


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
