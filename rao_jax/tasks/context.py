"""What a node can see: the window, inline data and context accounting.

A reference solver may only use what its node's context shows, or its
demonstrations would teach the impossible. The prompt shows a node's data
inline when it is at most `inline_chars` long and otherwise only a handle
(its length and a `head_chars` head); a node sees the rest through tools
and its children's answers. `Window` holds these limits (they must match
the rollout's `FrontierScheduler(inline_chars, head_chars)` and the
engine's `max_len`) and the run's chat format (its tokenizer and chat
template), and `context_tokens` counts a node's context exactly as the
rollout builds it, so direct solvers know when to stop reading and
demonstrations never overflow the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses

from rao_jax.agent import chat as chat_lib
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib

TOKENIZER = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
_RAW = chat_lib.ChatFormat(TOKENIZER)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
  """A node's context limits (the `cpu_tiny` defaults).

  Attributes:
    max_tokens: tokens one node's sequence may hold (prompt, steps,
      injections); the engine's `max_len`.
    inline_chars: data up to this length is shown inline in the prompt.
    head_chars: characters of data shown in a handle.
    show_depth_budget: whether the prompt's budget line shows the depth
      budget. False is the paper's protocol: a node learns that it may not
      spawn deeper from the refusal alone, so an evaluation budget larger
      than training's shows the policy no number it never saw. (The
      preamble of a chat template, `protocol.preamble`, describes the line
      with its depth either way.)
    chat: the run's chat format, which its solvers count tokens with; None
      (a config's window) is the byte tokenizer's raw protocol. The
      rollout binds the run's (`demonstrations.rollout`).
  """

  max_tokens: int = 512
  inline_chars: int = 64
  head_chars: int = 24
  show_depth_budget: bool = True
  chat: chat_lib.ChatFormat | None = dataclasses.field(
      default=None, compare=False, repr=False)

  def __post_init__(self):
    if self.max_tokens < 64:
      raise ValueError('Window.max_tokens must be >= 64')
    if not 0 <= self.head_chars <= self.inline_chars:
      raise ValueError('Window.head_chars must be in [0, inline_chars]')
    if self.chat is not None and not isinstance(self.chat,
                                                chat_lib.ChatFormat):
      raise ValueError(f'Window.chat={self.chat!r}: a chat.ChatFormat, '
                       'bound by the rollout, not a config value')

  @property
  def format(self) -> chat_lib.ChatFormat:
    """The chat format its contexts are built with."""
    return _RAW if self.chat is None else self.chat


def visible_data(view: env_lib.StepView, window: Window) -> str | None:
  """The node's data if its prompt shows it whole, else None."""
  data = view.spec.data
  return data if len(data) <= window.inline_chars else None


def visible_head(view: env_lib.StepView, window: Window) -> str:
  """The part of the node's data its prompt shows (all of it, or a head)."""
  data = view.spec.data
  return data if len(data) <= window.inline_chars else (
      data[:window.head_chars])


def step_tokens(text: str, window: Window) -> int:
  """Tokens of a step the solver writes, as the rollout emits it."""
  return len(window.format.step_ids(text))


# A stand-in conversation for an observation's cost: its turn markers
# follow a step, whatever came before.
_AFTER_A_STEP = ({'role': chat_lib.USER, 'content': '-'},
                 {'role': chat_lib.ASSISTANT, 'content': '-'})


def observation_tokens(text: str, window: Window) -> int:
  """Tokens injected for the observation `text` (`protocol.observation`),
  a chat template's turn markers included."""
  return len(window.format.injection_ids(_AFTER_A_STEP,
                                         protocol.observation(text)))


def prompt_budgets(view: env_lib.StepView, window: Window) -> dict[str, int]:
  """The budget line of the node's prompt, as the rollout rendered it: the
  budgets the node started with (its depth budget only where the window
  shows it)."""
  return protocol.shown_budgets(
      {'depth': view.budgets.get('depth', 0),
       'steps': view.budgets.get('steps', 0) + view.step,
       'children': view.budgets.get('children', 0)}, window.show_depth_budget)


def _prompt(view: env_lib.StepView, tools: Sequence[env_lib.Tool],
            window: Window) -> list[chat_lib.Message]:
  """The node's first turns, as the rollout renders them."""
  text = protocol.render_prompt(view.spec, prompt_budgets(view, window),
                                tools, window.inline_chars, window.head_chars)
  return window.format.start(text, tools)


def prompt_tokens(view: env_lib.StepView, tools: Sequence[env_lib.Tool],
                  window: Window) -> int:
  """Tokens of the node's prompt (`<bos>`, a chat template's turns and the
  preamble included), as the rollout builds it."""
  return len(window.format.prompt_ids(_prompt(view, tools, window)))


def context_tokens(view: env_lib.StepView, tools: Sequence[env_lib.Tool],
                   window: Window,
                   policy: Callable[[env_lib.StepView], str]) -> int:
  """Tokens of a single-node context before its next step.

  The steps already taken are re-derived by calling the (deterministic)
  `policy` on the earlier views, and the conversation is rebuilt turn by
  turn as the rollout builds it, so this is exact for a node that never
  spawned (a direct solver's).
  """
  chat = window.format
  conversation = _prompt(view, tools, window)
  total = len(chat.prompt_ids(conversation))
  for step in range(view.step):
    earlier = dataclasses.replace(
        view, step=step, observations=view.observations[:step],
        budgets=dict(view.budgets, steps=view.budgets.get('steps', 0) +
                     view.step - step))
    ids = chat.step_ids(policy(earlier))
    total += len(ids)
    conversation.append({'role': chat_lib.ASSISTANT,
                         'content': chat.tokenizer.decode(ids)})
    if step < len(view.observations):
      injected = protocol.observation(view.observations[step])
      total += len(chat.injection_ids(conversation, injected))
      conversation.append({'role': chat_lib.USER, 'content': injected})
  return total
