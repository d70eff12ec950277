"""The scheduler over the real slot sampler and a tiny random model."""

import dataclasses

from flax import nnx
import pytest

from rao_jax import sampler as sampler_lib
from rao_jax.agent import engine as engine_lib
from rao_jax.agent import protocol
from rao_jax.agent import model_engine
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.model import tokenizer as tokenizer_lib

import agent_testing

TOK = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)


def _rollout(model, num_slots, seeds):
  sampler = sampler_lib.SlotSampler(
      model, num_slots=num_slots, max_len=384,
      method=sampler_lib.Temperature(1.0))
  stop_ids = [TOK.token_id(t) for t in protocol.STOP_TAGS]
  engine = model_engine.ModelEngine(sampler, stop_ids, decode_steps=8)
  budgets = scheduler_lib.Budgets(max_depth=2, max_steps=3,
                                  max_new_tokens=12)
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets)
  envs = [agent_testing.SumEnv(d) for d in ('12', '345', '6789')]
  trees, stats = scheduler.run(envs, seeds)
  return trees, stats, engine


def test_random_model_rollout_is_well_formed_and_reproducible():
  config = config_lib.tiny(vocab_size=TOK.vocab_size)
  model = gemma.Transformer(config, rngs=nnx.Rngs(0))
  trees, stats, engine = _rollout(model, 2, [1, 2, 3])
  for tree in trees:
    assert tree.status in tree_lib.TERMINAL
    for node in tree.nodes:
      assert node.status in tree_lib.TERMINAL
      sampled = [p for p, m in zip(node.logprobs, node.loss_mask) if m]
      assert sampled and all(p <= 0.0 for p in sampled)
      assert any(p < 0.0 for p in sampled)  # sampled, not injected
  assert 0 < stats.slot_utilization <= 1
  assert engine.num_compiles() > 0
  again, _, engine = _rollout(model, 2, [1, 2, 3])
  assert [t.to_json() for t in again] == [t.to_json() for t in trees]
  assert engine.num_compiles() == 0  # same shapes: nothing new compiles
  other, _, _ = _rollout(model, 2, [4, 5, 6])
  assert [t.to_json() for t in other] != [t.to_json() for t in trees]


class _ForcedEngine(model_engine.ModelEngine):
  """The sampler runs each step for as many tokens as the scripted policy's
  step has; the scripted tokens come back (so trees have a known shape)."""

  def admit(self, requests):
    self._scripted = getattr(self, '_scripted', {})
    forced = {}
    for slot, request in requests.items():
      ids = TOK.encode(agent_testing.split_policy(request.view))
      self._scripted[slot] = tuple(ids[:request.max_new_tokens])
      forced[slot] = dataclasses.replace(
          request, max_new_tokens=len(self._scripted[slot]))
    super().admit(forced)

  def decode(self):
    result = super().decode()
    finished = {}
    for slot, out in result.finished.items():
      scripted = self._scripted[slot]
      self._context[slot] = self._context[slot][:-len(out.tokens)] + scripted
      finished[slot] = engine_lib.StepOutput(scripted, out.logprobs,
                                             engine_lib.STOP)
    return engine_lib.DecodeResult(result.num_steps, result.new_tokens,
                                   finished)


@pytest.mark.parametrize('num_slots', [1, 4])
def test_a_spawning_node_resumes_with_its_kv(num_slots):
  config = config_lib.tiny(vocab_size=TOK.vocab_size)
  model = gemma.Transformer(config, rngs=nnx.Rngs(0))
  budgets = scheduler_lib.Budgets(max_depth=2, max_children=2, max_steps=4,
                                  max_new_tokens=96)
  envs = [agent_testing.SumEnv(d) for d in ('1234', '56789')]
  runs = {}
  for max_suspended in (0, None):
    sampler = sampler_lib.SlotSampler(model, num_slots=num_slots,
                                      max_len=384)
    engine = _ForcedEngine(sampler, (), max_suspended=max_suspended)
    scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets)
    trees, _ = scheduler.run(envs, [1, 2])
    # Log-probs are the sampler's, of its own tokens: compare the rest.
    runs[max_suspended] = [[(n.tokens, n.loss_mask, n.status, n.answer)
                            for n in t.nodes] for t in trees], engine
    assert all(t.root.success == 1.0 for t in trees)
  (kept, engine), (prefilled, plain) = runs[None], runs[0]
  # Each parent (the roots and the 5-digit tree's first child) comes back
  # to its KV: only the children's results are prefilled.
  assert plain.resumed_tokens == 0 and engine.resumed_tokens > 0
  assert not engine._suspended  # pylint: disable=protected-access
  assert kept == prefilled
