"""The slot engine the scheduler drives, and a scripted engine.

The scheduler knows trees; an engine knows slots and tokens. An engine has
`num_slots` slots, each holding one sequence of at most `max_len` tokens.
The scheduler admits a step request into a free slot (the engine prefills
its context), decodes all slots a few tokens at a time, and reads back the
steps that stopped. A slot whose step stopped stays idle until it is
released or admitted again; an engine may reuse the KV cache of a slot
whose new context extends its old one (a tool call keeps its slot).

`ScriptedEngine` plays a `ScriptedPolicy` (e.g. a task's reference solver)
through this interface, token by token, so its call trees are
demonstrations in exactly the form the model's are, and the scheduler can
be tested and timed without a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Protocol

import jax

from rao_jax.agent import env as env_lib
from rao_jax.model import tokenizer as tokenizer_lib

STOP, LENGTH, EOS = 'stop', 'length', 'eos'  # why a step ended


def node_key(seed: int, path: Sequence[int]) -> jax.Array:
  """A node's key: the tree seed's key folded with each index of its path."""
  key = jax.random.key(seed)
  for index in path:
    key = jax.random.fold_in(key, index)
  return key


def step_key(seed: int, path: Sequence[int], step: int) -> jax.Array:
  """The sampling key of one step of a node.

  The node key is split first so that step keys never coincide with the
  node keys of its children (which fold the child index in directly).
  """
  return jax.random.fold_in(jax.random.split(node_key(seed, path))[1], step)


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
    steps differ by position; engines without positions use `step_key`."""
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
    a context that extends this one: an engine may keep the slot's KV
    cache aside for it (or just release). Optional: the scheduler falls
    back to `release`."""
    ...


@dataclasses.dataclass
class _ScriptedSlot:
  tokens: tuple[int, ...]
  stop_reason: str
  emitted: int = 0
  done: bool = False


class ScriptedEngine:
  """Emits a scripted policy's step text, `decode_steps` tokens per call.

  The step text is encoded, cut after its first stop tag (as a sampler's
  stop tokens would) and at `max_new_tokens`. Log-probs are 0: a scripted
  step is certain.
  """

  def __init__(self, policy: env_lib.ScriptedPolicy,
               tokenizer: tokenizer_lib.Tokenizer, stop_tags: Sequence[str],
               num_slots: int, max_len: int, decode_steps: int = 8):
    self.policy = policy
    self.tokenizer = tokenizer
    self.stop_ids = frozenset(tokenizer.token_id(t) for t in stop_tags)
    self.num_slots = num_slots
    self.max_len = max_len
    self.decode_steps = decode_steps
    self._slots: dict[int, _ScriptedSlot] = {}

  def admit(self, requests: Mapping[int, StepRequest]) -> None:
    for slot, request in requests.items():
      if not 0 <= slot < self.num_slots:
        raise ValueError(f'slot {slot} out of range')
      ids = self.tokenizer.encode(self.step_text(request))
      reason = EOS
      for i, token in enumerate(ids):
        if token in self.stop_ids:
          ids, reason = ids[:i + 1], STOP
          break
      if len(ids) > request.max_new_tokens:
        ids, reason = ids[:request.max_new_tokens], LENGTH
      self._slots[slot] = _ScriptedSlot(tuple(ids), reason)

  def step_text(self, request: StepRequest) -> str:
    """The text of a step; override for policies that use the key."""
    return self.policy(request.view)

  def decode(self) -> DecodeResult:
    new_tokens = [0] * self.num_slots
    finished = {}
    for slot, state in self._slots.items():
      if state.done:
        continue  # idle: its step already came back
      new_tokens[slot] = min(len(state.tokens) - state.emitted,
                             self.decode_steps)
      state.emitted += new_tokens[slot]
      if state.emitted == len(state.tokens):
        state.done = True  # an empty step ends too, with no tokens
        finished[slot] = StepOutput(state.tokens, (0.0,) * len(state.tokens),
                                    state.stop_reason)
    return DecodeResult(self.decode_steps, new_tokens, finished)

  def release(self, slot: int) -> None:
    self._slots.pop(slot, None)

  suspend = release
