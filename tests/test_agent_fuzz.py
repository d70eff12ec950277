"""Fuzz: adversarial policy output never breaks a rollout or a budget."""

import random

from hypothesis import event, given
from hypothesis import strategies as st

from rao_jax.agent import engine as engine_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib

import agent_testing
import fuzz_testing

TOK = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)
STOP_IDS = frozenset(TOK.token_id(t) for t in protocol.STOP_TAGS)


class FuzzEngine:
  """Emits steps picked from a pool by (tree seed, path, step) only.

  Unlike a sampler it may emit text past a stop tag's position, so it cuts
  there as a sampler's stop tokens would. Every emitted token gets a
  distinct negative log-prob, so the test can check they land unchanged.
  """

  def __init__(self, pool, num_slots, max_len, decode_steps):
    self.pool = pool
    self.num_slots = num_slots
    self.max_len = max_len
    self.decode_steps = decode_steps
    self.slots = {}
    self.emitted = {}  # (seed, path, step) -> tokens

  def admit(self, requests):
    for slot, request in requests.items():
      assert slot not in self.slots or self.slots[slot][2], (
          'admitted into a busy slot')
      assert len(request.tokens) + request.max_new_tokens <= self.max_len
      rng = random.Random(hash((request.seed, request.path, request.step)))
      ids = TOK.encode(rng.choice(self.pool))
      for i, token in enumerate(ids):
        if token in STOP_IDS:
          ids = ids[:i + 1]
          break
      ids = ids[:request.max_new_tokens]
      self.emitted[(request.seed, request.path, request.step)] = ids
      self.slots[slot] = [ids, 0, False]  # tokens, emitted, finished

  def decode(self):
    new_tokens = [0] * self.num_slots
    finished = {}
    for slot, state in self.slots.items():
      ids, done, is_finished = state
      if is_finished:
        continue
      step = min(len(ids) - done, self.decode_steps)
      new_tokens[slot] = step
      state[1] = done + step
      if state[1] == len(ids):
        state[2] = True
        reason = (engine_lib.STOP if ids and ids[-1] in STOP_IDS else
                  engine_lib.LENGTH)
        finished[slot] = engine_lib.StepOutput(
            tuple(ids), tuple(-0.5 - 0.01 * i for i in range(len(ids))),
            reason)
    return engine_lib.DecodeResult(self.decode_steps, new_tokens, finished)

  def release(self, slot):
    assert slot in self.slots, 'released a slot never admitted'
    del self.slots[slot]

  def suspend(self, slot):
    self.release(slot)  # this engine keeps no cache


_text = st.text(alphabet='ab @:0123456789', max_size=6)
_slice = st.builds(lambda a, b: f'@{a}:{a + b}', st.integers(0, 12),
                   st.integers(-2, 6))
_part = st.builds(lambda i, n: f'#{i}/{n}', st.integers(0, 5),
                  st.integers(0, 4))
_child = st.tuples(st.sampled_from(['', ' '] + ['sum'] * 6),
                   _slice | _part | _text, _text).map(
                       lambda c: protocol.TASK + c[0] + protocol.TASK_END +
                       (protocol.DATA + c[1] + protocol.DATA_END
                        if c[1] else '') + protocol.FORMAT + c[2] +
                       protocol.FORMAT_END)
_spawn = st.lists(_child, min_size=0, max_size=5).map(
    lambda cs: protocol.SPAWN + ''.join(cs) + protocol.SPAWN_END)
_tool = st.tuples(st.sampled_from(['read', 'fly', '', 'read read']),
                  st.sampled_from(['', '0 1', '0 99', 'x', '3 1'])).map(
                      lambda t: f'<tool>{t[0]} {t[1]}</tool>')
_answer = _text.map(protocol.answer)
_garbage = st.lists(st.sampled_from(protocol.SPECIAL_TOKENS + (
    'a', ' ', '@0:3', 'read', 'x' * 40)), max_size=10).map(''.join)
_step = st.one_of(_spawn, _spawn, _tool, _answer, _garbage,
                  st.tuples(_text, _spawn | _answer).map(
                      lambda t: protocol.THINK + t[0] + protocol.THINK_END +
                      t[1]))

_budgets = st.builds(
    scheduler_lib.Budgets, max_depth=st.integers(0, 3),
    max_children=st.integers(1, 4), max_steps=st.integers(1, 5),
    max_nodes=st.integers(1, 16), max_tokens=st.integers(100, 6000),
    max_new_tokens=st.sampled_from([1, 8, 40, 128]))


def _check_tree(tree, budgets, engine, max_len):
  nodes = tree.nodes
  assert tree.status in tree_lib.TERMINAL
  assert len(nodes) <= budgets.max_nodes
  if tree.status != tree_lib.ABORTED:
    assert tree.status == nodes[0].status
    assert tree.num_tokens <= budgets.max_tokens
  assert [n.path for n in nodes] == sorted(n.path for n in nodes)
  for i, node in enumerate(nodes):
    assert node.node_id == i
    assert node.status in tree_lib.TERMINAL
    assert node.depth == len(node.path) <= budgets.max_depth
    assert node.num_steps <= budgets.max_steps
    assert len(node.children) == node.num_steps
    assert len(node.tokens) == len(node.loss_mask) == len(node.logprobs)
    # Only a prompt longer than the window outgrows it (node failed).
    assert len(node.tokens) <= max_len or node.num_steps == 0
    for step_children in node.children:
      assert len(step_children) <= budgets.max_children
      for c in step_children:
        assert nodes[c].parent == i
    if node.parent is not None:
      assert node.path[:-1] == nodes[node.parent].path
    # The sampled tokens are exactly the engine's, step by step, with
    # their log-probs; injected tokens carry mask 0 and log-prob 0.
    sampled = [t for t, m in zip(node.tokens, node.loss_mask) if m]
    emitted = [engine.emitted[(tree.seed, node.path, s)]
               for s in range(node.num_steps)]
    assert sampled == [t for ids in emitted for t in ids]
    for ids in emitted:
      assert len(ids) <= budgets.max_new_tokens
    logprobs = [p for p, m in zip(node.logprobs, node.loss_mask) if m]
    assert logprobs == [-0.5 - 0.01 * i for ids in emitted
                        for i in range(len(ids))]
    assert all(p == 0.0 for p, m in zip(node.logprobs, node.loss_mask)
               if not m)
    assert node.loss_mask[0] == 0 and node.tokens[0] == TOK.bos_id


@fuzz_testing.fuzz(1500)
@given(pool=st.lists(_step, min_size=1, max_size=6), budgets=_budgets,
       digits=st.lists(st.text('0123456789', max_size=12), min_size=1,
                       max_size=3),
       num_slots=st.integers(1, 6), decode_steps=st.integers(1, 8),
       max_len=st.sampled_from([120, 300, 2048]), seed=st.integers(0, 99))
def test_adversarial_rollouts_terminate_within_budgets(
    pool, budgets, digits, num_slots, decode_steps, max_len, seed):
  engine = FuzzEngine(pool, num_slots, max_len, decode_steps)
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets,
                                              inline_chars=8)
  envs = [agent_testing.SumEnv(d) for d in digits]
  trees, stats = scheduler.run(envs, [seed + i for i in range(len(envs))])
  assert len(trees) == len(envs)
  for tree in trees:
    _check_tree(tree, budgets, engine, max_len)
    event(f'tree {tree.status}')
    event(f'tree of {min(len(tree.nodes), 4)}+ nodes')
    event(f'deepest node {max(n.depth for n in tree.nodes)}')
  assert not engine.slots, 'every slot is released at the end'
  assert stats.useful_slot_steps <= stats.slot_steps


_storm_child = st.sampled_from(['', 'ab', protocol.data_slice(0, 1),
                                protocol.data_slice(1, 3),
                                protocol.data_part(1, 2)]).map(
                                    lambda d: ('sum', d, 'a digit'))
_storm_spawn = st.lists(_storm_child, min_size=1, max_size=6).map(
    protocol.spawn)
_storm_step = st.one_of(
    _storm_spawn, _storm_spawn, _storm_spawn,
    st.just(protocol.answer('1')), st.just(protocol.tool_call('read', '0 1')))


@fuzz_testing.fuzz(500)
@given(pool=st.lists(_storm_step, min_size=1, max_size=4),
       max_depth=st.integers(1, 5), max_children=st.integers(1, 6),
       max_steps=st.integers(2, 6), max_nodes=st.integers(2, 40),
       max_tokens=st.integers(1000, 20000), num_slots=st.integers(1, 16),
       seed=st.integers(0, 99))
def test_spawn_storms_stay_within_budgets(pool, max_depth, max_children,
                                          max_steps, max_nodes, max_tokens,
                                          num_slots, seed):
  budgets = scheduler_lib.Budgets(
      max_depth=max_depth, max_children=max_children, max_steps=max_steps,
      max_nodes=max_nodes, max_tokens=max_tokens, max_new_tokens=96)
  engine = FuzzEngine(pool, num_slots, 2048, decode_steps=8)
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets)
  envs = [agent_testing.SumEnv('123'), agent_testing.SumEnv('4567')]
  trees, _ = scheduler.run(envs, [seed, seed + 1])
  for tree in trees:
    _check_tree(tree, budgets, engine, 2048)
    event(f'tree {tree.status}')
    event(f'tree of {min(len(tree.nodes), 8)}+ nodes')
    event(f'deepest node {max(n.depth for n in tree.nodes)}')
  assert not engine.slots
