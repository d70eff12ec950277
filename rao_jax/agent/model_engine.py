"""The policy model as a scheduler engine, through the slot sampler.

A node that called a tool comes back to the same slot with its context
extended by the observation: the sampler then prefills only the new tokens
(`extend`), keeping the slot's KV cache. A node that spawned is suspended:
its KV cache is copied out of the slot (`SlotSampler.suspend`), and when its
children are done it is resumed into whatever slot is free and extended by
their results, so its context is not prefilled again. Any other admission
(a new node) prefills the whole context.

A step ends by the run's stop rule (`stops.StopRule`): stop tags that are
single tokens stop the sampler's decode loop (`stop_ids`), and the rule on
the step's text (`find_stop`) is applied by the sampler on the host after
every chunk, which rolls a slot back to the token that completed its first
stop tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rao_jax.agent import engine as engine_lib
from rao_jax.sampler import slots as slots_lib

# The sampler's stop reasons -> the scheduler's.
_STOP_REASONS = {'stop': engine_lib.STOP, 'budget': engine_lib.LENGTH,
                 'max_len': engine_lib.LENGTH}


class ModelEngine:
  """The policy model behind the `engine.Engine` interface, through a
  `SlotSampler`."""

  def __init__(self, sampler: slots_lib.SlotSampler,
               stop_ids: Sequence[int], decode_steps: int = 8,
               max_suspended: int | None = None,
               find_stop: Callable[[Sequence[int], int], int | None] | None
               = None, temperature: float | None = None):
    """Wraps a sampler.

    Args:
      sampler: the slot sampler (its slots are all this engine's).
      stop_ids: token ids that end a step inside the decode loop (stop tags
        that are single tokens: `StopRule.device_ids`).
      decode_steps: tokens decoded per `decode` call (static: one program).
      max_suspended: suspended nodes whose KV is kept (default 8 per slot);
        past it the oldest is dropped (it is then prefilled again). A node
        of an aborted tree never comes back, so the store must be bounded.
      find_stop: the stop rule on a step's text (`StopRule.find`), applied
        after every chunk; None stops on `stop_ids` only.
      temperature: every step's sampling temperature (0: greedy); None:
        the sampler's method's. One sampler serves engines of any
        temperature with the same compiled programs.
    """
    self.sampler = sampler
    self.num_slots = sampler.num_slots
    self.max_len = sampler.max_len
    self.stop_ids = tuple(stop_ids)
    self.find_stop = find_stop
    self.temperature = temperature
    self.decode_steps = decode_steps
    self.extended_tokens = 0  # tokens prefilled by extend (KV reused)
    self.resumed_tokens = 0  # context tokens whose KV came back on resume
    self.max_suspended = (8 * self.num_slots if max_suspended is None
                          else max_suspended)
    # Per held slot, the sequence its cache holds once its turn ended, and
    # the node (tree seed, path) it runs.
    self._context: dict[int, tuple[int, ...]] = {}
    self._node: dict[int, tuple[int, tuple[int, ...]]] = {}
    # Suspended nodes by (tree seed, path), oldest first: their context and
    # their KV, out of any slot.
    self._suspended: dict[tuple[int, tuple[int, ...]],
                          tuple[tuple[int, ...], slots_lib.Suspended]] = {}

  def num_compiles(self) -> int:
    return self.sampler.num_compiles()

  def _turn(self, tokens: Sequence[int], key,
            request: engine_lib.StepRequest) -> slots_lib.Request:
    """The sampler's request for a step: tokens to prefill (all of a new
    node's context, or what extends the slot's), its key (None: the
    slot's), the run's stop rule and the engine's temperature."""
    return slots_lib.Request(tokens=tokens, key=key,
                             max_new_tokens=request.max_new_tokens,
                             stop=self.stop_ids, find_stop=self.find_stop,
                             temperature=self.temperature)

  def admit(self, requests: Mapping[int, engine_lib.StepRequest]) -> None:
    extend_slots, extend_requests = [], []
    admit_slots, admit_requests = [], []
    for slot, request in sorted(requests.items()):
      if slot not in self.sampler.free_slots:
        context = self._context.pop(slot, None)
        if (context is not None and
            tuple(request.tokens[:len(context)]) == context):
          extend_slots.append(slot)
          extend_requests.append(
              self._turn(request.tokens[len(context):], None, request))
          self.extended_tokens += len(request.tokens) - len(context)
          continue
        self.release(slot)
      node = (request.seed, tuple(request.path))
      context, suspended = self._suspended.pop(node, ((), None))
      if (suspended is not None and len(request.tokens) >= len(context) and
          tuple(request.tokens[:len(context)]) == context):
        # Its KV comes back from the suspend; only its new tokens (the
        # children's results) are prefilled. Its key is the node's.
        self.sampler.resume(suspended, slot)
        extend_slots.append(slot)
        extend_requests.append(
            self._turn(request.tokens[len(context):], None, request))
        self.resumed_tokens += len(context)
        self.extended_tokens += len(request.tokens) - len(context)
        continue
      admit_slots.append(slot)
      admit_requests.append(
          self._turn(request.tokens, request.key(), request))
    for slot, request in sorted(requests.items()):
      self._context[slot] = tuple(request.tokens)
      self._node[slot] = (request.seed, tuple(request.path))
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
    self._node.pop(slot, None)
    if slot not in self.sampler.free_slots:
      self.sampler.release(slot)

  def suspend(self, slot: int) -> None:
    """Releases a slot whose node waits for its children, keeping its KV."""
    context = self._context.get(slot)
    node = self._node.get(slot)
    if (context is None or node is None or self.max_suspended < 1 or
        slot in self.sampler.free_slots or
        self.sampler.sequence_length(slot) != len(context)):
      self.release(slot)
      return
    try:
      suspended = self.sampler.suspend(slot)
    except ValueError:  # still running: nothing to keep
      self.release(slot)
      return
    self._context.pop(slot)
    self._node.pop(slot)
    self._suspended.pop(node, None)
    self._suspended[node] = (context, suspended)
    while len(self._suspended) > self.max_suspended:
      del self._suspended[next(iter(self._suspended))]
