"""An engine that plays a scripted policy (e.g. a task's reference solver).

It implements `engine.Engine` token by token, so a scripted policy's call
trees go through the same scheduler, parser, tools and budgets as the
model's and are demonstrations in exactly the form training consumes; the
scheduler can also be tested and timed with it, without a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses

from rao_jax.agent import engine as engine_lib
from rao_jax.agent import env as env_lib
from rao_jax.agent import stops as stops_lib
from rao_jax.model import tokenizer as tokenizer_lib


@dataclasses.dataclass
class _ScriptedSlot:
  tokens: tuple[int, ...]
  stop_reason: str
  emitted: int = 0
  done: bool = False


class ScriptedEngine:
  """Emits a scripted policy's step text, `decode_steps` tokens per call.

  The step text is encoded on its own, cut after the token that completes
  its first stop tag (the sampler's stop rule, `stops.StopRule`, so
  demonstrations end where sampled steps would) and at `max_new_tokens`.
  Log-probs are 0: a scripted step is certain.
  """

  def __init__(self, policy: env_lib.ScriptedPolicy,
               tokenizer: tokenizer_lib.Tokenizer,
               stop_tags: Sequence[str] | stops_lib.StopRule,
               num_slots: int, max_len: int, decode_steps: int = 8):
    """`stop_tags`: the tag protocol's stop tags, or a stop rule object
    (`ChatFormat.stops`, e.g. the python mode's `CodeStopRule`)."""
    self.policy = policy
    self.tokenizer = tokenizer
    self.stops = (stop_tags if hasattr(stop_tags, 'find') else
                  stops_lib.StopRule(tokenizer, stop_tags))
    self.num_slots = num_slots
    self.max_len = max_len
    self.decode_steps = decode_steps
    self._slots: dict[int, _ScriptedSlot] = {}

  def admit(self, requests: Mapping[int, engine_lib.StepRequest]) -> None:
    for slot, request in requests.items():
      if not 0 <= slot < self.num_slots:
        raise ValueError(f'slot {slot} out of range')
      ids = self.tokenizer.encode(self.step_text(request))
      end = self.stops.find(ids)
      reason = engine_lib.EOS if end is None else engine_lib.STOP
      ids = ids if end is None else ids[:end]
      if len(ids) > request.max_new_tokens:
        ids, reason = ids[:request.max_new_tokens], engine_lib.LENGTH
      self._slots[slot] = _ScriptedSlot(tuple(ids), reason)

  def step_text(self, request: engine_lib.StepRequest) -> str:
    """The text of a step; override for policies that use the key."""
    return self.policy(request.view)

  def decode(self) -> engine_lib.DecodeResult:
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
        finished[slot] = engine_lib.StepOutput(
            state.tokens, (0.0,) * len(state.tokens), state.stop_reason)
    return engine_lib.DecodeResult(self.decode_steps, new_tokens, finished)

  def release(self, slot: int) -> None:
    self._slots.pop(slot, None)

  def suspend(self, slot: int) -> None:
    self.release(slot)  # a scripted step has no cache to keep
