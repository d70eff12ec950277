"""The slot engine the scheduler drives: its interface and data types.

The scheduler knows trees; an engine knows slots and tokens. An engine has
`num_slots` slots, each holding one sequence of at most `max_len` tokens.
The scheduler admits a step request into a free slot (the engine prefills
its context), decodes all slots a few tokens at a time, and reads back the
steps that stopped. A slot whose step stopped stays idle until it is
released or admitted again; an engine may reuse the KV cache of a slot
whose new context extends its old one (a tool call keeps its slot).

Two engines implement it: `model_engine.ModelEngine` runs the policy model
through the slot sampler, and `scripted_engine.ScriptedEngine` plays a
scripted policy (a task's reference solver) token by token, so its call
trees are demonstrations in exactly the form the model's are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Protocol

import jax

from rao_jax.agent import env as env_lib

STOP, LENGTH, EOS = 'stop', 'length', 'eos'  # why a step ended


def node_key(seed: int, path: Sequence[int]) -> jax.Array:
  """A node's key: the tree seed's key folded with each index of its path."""
  key = jax.random.key(seed)
  for index in path:
    key = jax.random.fold_in(key, index)
  return key


@dataclasses.dataclass(frozen=True)
class StepRequest:
  """One step of one node, to be generated in a slot.

  Attributes:
    tokens: the node's whole context so far (prompt, steps, injections).
    seed: its tree's seed.
    path: its path in the tree.
    step: index of the step (0 for the first).
    max_new_tokens: at most this many tokens are generated.
    view: what a scripted policy sees; model engines ignore it.
  """

  tokens: tuple[int, ...]
  seed: int
  path: tuple[int, ...]
  step: int
  max_new_tokens: int
  view: env_lib.StepView | None = None

  def key(self) -> jax.Array:
    """The node's key; the same for all its steps. An engine samples the
    token at position p with `fold_in(key, p)` (the slot sampler does), so
    steps differ by position, never by slot or neighbours."""
    return node_key(self.seed, self.path)


@dataclasses.dataclass(frozen=True)
class StepOutput:
  """A finished step: the tokens exactly as sampled, and their log-probs."""

  tokens: tuple[int, ...]
  logprobs: tuple[float, ...]
  stop_reason: str  # STOP (a stop tag), LENGTH (max_new_tokens) or EOS


@dataclasses.dataclass(frozen=True)
class DecodeResult:
  """What one `Engine.decode` call did.

  Attributes:
    num_steps: decode steps run (every slot advanced this many times).
    new_tokens: per slot, tokens it generated in this call (0 for an idle
      slot); their sum over num_slots * num_steps is the slot utilisation.
    finished: slot -> its step, for every slot whose step stopped.
  """

  num_steps: int
  new_tokens: Sequence[int]
  finished: Mapping[int, StepOutput]


class Engine(Protocol):
  """A fixed batch of slots that generate steps (see the module doc)."""

  num_slots: int
  max_len: int

  def admit(self, requests: Mapping[int, StepRequest]) -> None:
    """Prefills each request's context into its (free or idle) slot."""
    ...

  def decode(self) -> DecodeResult:
    """Advances every active slot by a few tokens."""
    ...

  def release(self, slot: int) -> None:
    """Frees a slot (its node finished or ended)."""
    ...

  def suspend(self, slot: int) -> None:
    """Frees a slot whose node waits for children and comes back later with
    a context that extends this one. An engine may keep the slot's KV cache
    aside for it; one that keeps nothing implements this as `release`."""
    ...
