"""The scheduler over the real slot sampler and a tiny random model."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import pytest

from rao_jax import sampler as sampler_lib
from rao_jax import testing
from rao_jax.agent import chat as chat_lib
from rao_jax.agent import engine as engine_lib
from rao_jax.agent import protocol
from rao_jax.agent import model_engine
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import stops as stops_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.model import tokenizer as tokenizer_lib

import agent_testing
import tokenizer_testing

TOK = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)


def _rollout(model, num_slots, seeds):
  sampler = sampler_lib.SlotSampler(
      model, num_slots=num_slots, max_len=384,
      method=sampler_lib.Temperature(1.0))
  # The run's stop rule: tags stop the decode loop (single tokens here)
  # and the rule on the text is checked after every chunk.
  rule = stops_lib.StopRule(TOK)
  engine = model_engine.ModelEngine(sampler, rule.device_ids, decode_steps=8,
                                    find_stop=rule.find)
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


def test_a_rollout_and_an_evaluation_share_one_sampler_and_its_programs():
  config = config_lib.tiny(vocab_size=TOK.vocab_size)
  model = gemma.Transformer(config, rngs=nnx.Rngs(0))
  # A max_len no other test uses: its programs are this sampler's own.
  sampler = sampler_lib.SlotSampler(model, num_slots=2, max_len=320,
                                    method=sampler_lib.Temperature(1.0))
  budgets = scheduler_lib.Budgets(max_depth=1, max_children=2, max_steps=4,
                                  max_new_tokens=48)

  def rollout(temperature):
    # Scripted steps: the same admissions and decodes at any temperature.
    engine = _ForcedEngine(sampler, (), temperature=temperature)
    scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets)
    trees, _ = scheduler.run([agent_testing.SumEnv(d) for d in ('123', '45')],
                             [1, 2])
    return [p for t in trees for n in t.nodes
            for p, m in zip(n.logprobs, n.loss_mask) if m]

  assert all(p < 0 for p in rollout(1.0))  # RL's sampled trees
  programs = sampler.num_compiles()
  assert programs > 0
  assert all(p == 0 for p in rollout(0.0))  # an evaluation: greedy
  assert sampler.num_compiles() == programs  # two samplers compiled 2x
  rollout(0.5)
  assert sampler.num_compiles() == programs


def _tag_loving_model(tokenizer, pieces):
  """A tiny random model whose tag pieces share one large embedding: with
  tied embeddings a piece's logit is high after a piece, so sampled steps
  spell stop tags out of several BPE tokens now and then."""
  model = testing.tiny_model(scale=0.05, vocab_size=512)
  table = model.embedder.table
  ids = jnp.array([tokenizer.encode(p)[0] for p in pieces])
  direction = jax.random.normal(jax.random.key(1), (table.shape[1],))
  norm = jnp.linalg.norm(table[...], axis=1).mean()
  table[...] = table[...].at[ids].set(
      3 * norm * direction / jnp.linalg.norm(direction))
  return model


def _bpe_rollout(model, tokenizer, seeds):
  rule = stops_lib.StopRule(tokenizer)
  sampler = sampler_lib.SlotSampler(model, num_slots=4, max_len=512,
                                    method=sampler_lib.Temperature(1.0))
  engine = model_engine.ModelEngine(sampler, rule.device_ids, decode_steps=8,
                                    find_stop=rule.find)
  budgets = scheduler_lib.Budgets(max_depth=1, max_steps=3,
                                  max_new_tokens=24)
  chat = chat_lib.ChatFormat(tokenizer, chat_lib.GEMMA_TEMPLATE)
  scheduler = scheduler_lib.FrontierScheduler(engine, tokenizer, budgets,
                                              chat=chat)
  envs = [agent_testing.SumEnv(d) for d in ('12', '3456', '7', '890')]
  trees, _ = scheduler.run(envs, seeds)
  return trees, engine, budgets


def test_a_bpe_rollout_is_well_formed_and_reproducible(tmp_path):
  # A real trained BPE: every tag is several tokens ('</', 'answer', '>').
  tokenizer_testing.write_tokenizer_dir(
      str(tmp_path), tokenizer_testing.train_bpe(500),
      tokenizer_testing.GEMMA_CONFIG)
  tokenizer = tokenizer_lib.HFTokenizer(str(tmp_path))
  assert len(tokenizer.encode(protocol.ANSWER_END)) == 3
  model = _tag_loving_model(tokenizer, ['</', 'answer', 'tool', 'spawn', '>'])
  trees, engine, budgets = _bpe_rollout(model, tokenizer, [1, 2, 3, 4])
  stopped = 0
  for node in (n for t in trees for n in t.nodes):
    assert node.status in tree_lib.TERMINAL
    assert len(node.tokens) == len(node.loss_mask) == len(node.logprobs)
    for turn in tree_lib.turns(node, tokenizer):
      if turn['kind'] != tree_lib.POLICY:
        continue
      step = node.tokens[turn['start']:turn['end']]
      logprobs = node.logprobs[turn['start']:turn['end']]
      assert all(p <= 0.0 for p in logprobs) and any(p < 0 for p in logprobs)
      # Ends with the token that completes its first stop tag, or runs to
      # its budget (or the window) without one.
      ended = protocol.step_end(tokenizer.decode(step)) is not None
      assert protocol.step_end(tokenizer.decode(step[:-1])) is None
      assert ended or len(step) == min(budgets.max_new_tokens,
                                       512 - turn['start'])
      stopped += ended
  assert stopped
  again, engine, _ = _bpe_rollout(model, tokenizer, [1, 2, 3, 4])
  assert [t.to_json() for t in again] == [t.to_json() for t in trees]
  assert engine.num_compiles() == 0
