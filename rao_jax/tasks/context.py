"""What a node can see: the window, inline data and context accounting.

A reference solver may only use what its node's context shows, or its
demonstrations would teach the impossible. The prompt shows a node's data
inline when it is at most `inline_chars` long and otherwise only a handle
(its length and a `head_chars` head); a node sees the rest through tools
and its children's answers. `Window` holds these limits (they must match
the rollout's `FrontierScheduler(inline_chars, head_chars)` and the
engine's `max_len`), and `context_tokens` counts a node's context exactly
as the rollout builds it, so direct solvers know when to stop reading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib

TOKENIZER = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
  """A node's context limits (the `cpu_tiny` defaults).

  Attributes:
    max_tokens: tokens one node's sequence may hold (prompt, steps,
      injections); the engine's `max_len`.
    inline_chars: data up to this length is shown inline in the prompt.
    head_chars: characters of data shown in a handle.
  """

  max_tokens: int = 512
  inline_chars: int = 64
  head_chars: int = 24

  def __post_init__(self):
    if self.max_tokens < 64:
      raise ValueError('Window.max_tokens must be >= 64')
    if not 0 <= self.head_chars <= self.inline_chars:
      raise ValueError('Window.head_chars must be in [0, inline_chars]')


def visible_data(view: env_lib.StepView, window: Window) -> str | None:
  """The node's data if its prompt shows it whole, else None."""
  data = view.spec.data
  return data if len(data) <= window.inline_chars else None


def visible_head(view: env_lib.StepView, window: Window) -> str:
  """The part of the node's data its prompt shows (all of it, or a head)."""
  data = view.spec.data
  return data if len(data) <= window.inline_chars else (
      data[:window.head_chars])


def num_tokens(text: str) -> int:
  """Tokens of text under the rollout's byte tokenizer."""
  return len(TOKENIZER.encode(text))


def prompt_tokens(view: env_lib.StepView, tools: Sequence[env_lib.Tool],
                  window: Window) -> int:
  """Tokens of the node's prompt, `<bos>` included, as the rollout renders
  it (the budgets shown are those the node started with)."""
  budgets = {'depth': view.budgets.get('depth', 0),
             'steps': view.budgets.get('steps', 0) + view.step,
             'children': view.budgets.get('children', 0)}
  text = protocol.render_prompt(view.spec, budgets, tools,
                                window.inline_chars, window.head_chars)
  return 1 + num_tokens(text)


def context_tokens(view: env_lib.StepView, tools: Sequence[env_lib.Tool],
                   window: Window,
                   policy: Callable[[env_lib.StepView], str]) -> int:
  """Tokens of a single-node context before its next step.

  The steps already taken are re-derived by calling the (deterministic)
  `policy` on the earlier views, so this is exact for a node that never
  spawned (a direct solver's).
  """
  total = prompt_tokens(view, tools, window)
  for step in range(view.step):
    earlier = dataclasses.replace(
        view, step=step, observations=view.observations[:step],
        budgets=dict(view.budgets, steps=view.budgets.get('steps', 0) +
                     view.step - step))
    total += num_tokens(policy(earlier))
  total += sum(num_tokens(protocol.observation(o)) for o in view.observations)
  return total
