"""The slot sampler (`rao_jax.sampler.SlotSampler`) as a scheduler engine.

A node that called a tool comes back to the same slot with its context
extended by the observation: the sampler then prefills only the new tokens
(`extend`), keeping the slot's KV cache. Any other admission prefills the
whole context (a resumed parent, a new node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rao_jax.agent import engine as engine_lib
from rao_jax.sampler import slots as slots_lib

# The sampler's stop reasons -> the scheduler's.
_STOP_REASONS = {'stop': engine_lib.STOP, 'budget': engine_lib.LENGTH,
                 'max_len': engine_lib.LENGTH}


class SamplerEngine:
  """Adapts a `SlotSampler` to the `engine.Engine` interface."""

  def __init__(self, sampler: slots_lib.SlotSampler,
               stop_ids: Sequence[int], decode_steps: int = 8):
    """Wraps a sampler.

    Args:
      sampler: the slot sampler (its slots are all this engine's).
      stop_ids: token ids that end a step (the protocol's stop tags).
      decode_steps: tokens decoded per `decode` call (static: one program).
    """
    self.sampler = sampler
    self.num_slots = sampler.num_slots
    self.max_len = sampler.max_len
    self.stop_ids = tuple(stop_ids)
    self.decode_steps = decode_steps
    self.extended_tokens = 0  # tokens prefilled by extend (KV reused)
    # Per held slot, the sequence its cache holds once its turn ended.
    self._context: dict[int, tuple[int, ...]] = {}

  def num_compiles(self) -> int:
    return self.sampler.num_compiles()

  def admit(self, requests: Mapping[int, engine_lib.StepRequest]) -> None:
    extend_slots, extend_requests = [], []
    admit_slots, admit_requests = [], []
    for slot, request in sorted(requests.items()):
      if slot not in self.sampler.free_slots:
        context = self._context.pop(slot, None)
        if (context is not None and
            tuple(request.tokens[:len(context)]) == context):
          extend_slots.append(slot)
          extend_requests.append(slots_lib.Request(
              tokens=request.tokens[len(context):], key=None,
              max_new_tokens=request.max_new_tokens, stop=self.stop_ids))
          self.extended_tokens += len(request.tokens) - len(context)
          continue
        self.release(slot)
      admit_slots.append(slot)
      admit_requests.append(slots_lib.Request(
          tokens=request.tokens, key=request.key(),
          max_new_tokens=request.max_new_tokens, stop=self.stop_ids))
    for slot, request in sorted(requests.items()):
      self._context[slot] = tuple(request.tokens)
    if extend_slots:
      self.sampler.extend(extend_slots, extend_requests)
    if admit_slots:
      self.sampler.admit(admit_requests, slots=admit_slots)

  def decode(self) -> engine_lib.DecodeResult:
    sampler = self.sampler
    held = [s for s in range(self.num_slots) if s not in sampler.free_slots]
    before = {s: sampler.sequence_length(s) for s in held}
    turns = sampler.decode(self.decode_steps)
    new_tokens = [0] * self.num_slots
    for slot in held:
      new_tokens[slot] = sampler.sequence_length(slot) - before[slot]
    finished = {
        turn.slot: engine_lib.StepOutput(
            tuple(int(t) for t in turn.tokens),
            tuple(float(p) for p in turn.sampler_logprobs),
            _STOP_REASONS.get(turn.stop_reason, engine_lib.LENGTH))
        for turn in turns}
    for slot, output in finished.items():
      self._context[slot] += output.tokens
    return engine_lib.DecodeResult(self.decode_steps, new_tokens, finished)

  def release(self, slot: int) -> None:
    self._context.pop(slot, None)
    if slot not in self.sampler.free_slots:
      self.sampler.release(slot)
