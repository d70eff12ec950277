"""Scheduler: trees of known shape, budgets, reproducibility, serialisation."""

import io
import random

import pytest

from rao_jax.agent import scripted_engine
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib

import agent_testing

TOK = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)


def _run(policy, envs, budgets, num_slots=8, seeds=None, engine_cls=None,
         decode_steps=4, max_len=4096):
  engine_cls = engine_cls or scripted_engine.ScriptedEngine
  engine = engine_cls(policy, TOK, protocol.STOP_TAGS, num_slots=num_slots,
                      max_len=max_len, decode_steps=decode_steps)
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets)
  seeds = seeds if seeds is not None else list(range(len(envs)))
  return scheduler.run(envs, seeds)


def _prompt(spec, depth, budgets):
  remaining = {'depth': budgets.max_depth - depth,
               'steps': budgets.max_steps, 'children': budgets.max_children}
  tools = agent_testing.SumEnv('').tools()
  return [TOK.bos_id] + TOK.encode(
      protocol.render_prompt(spec, remaining, tools))


def _expected(segments):
  """(text or ids, loss mask bit) pieces -> tokens and loss mask."""
  tokens, mask = [], []
  for piece, bit in segments:
    ids = TOK.encode(piece) if isinstance(piece, str) else piece
    tokens += ids
    mask += [bit] * len(ids)
  return tokens, mask


def test_binary_split_tree_exact():
  budgets = scheduler_lib.Budgets(max_depth=3)
  env = agent_testing.SumEnv('1234')
  (tree,), stats = _run(agent_testing.split_policy, [env], budgets)
  assert tree.status == tree_lib.DONE
  assert [n.path for n in tree.nodes] == [(), (0,), (1,)]
  assert [n.node_id for n in tree.nodes] == [0, 1, 2]
  assert [n.parent for n in tree.nodes] == [None, 0, 0]
  assert [n.status for n in tree.nodes] == [tree_lib.DONE] * 3
  assert [n.answer for n in tree.nodes] == ['0', '3', '7']
  assert [n.success for n in tree.nodes] == [1.0, 1.0, 1.0]
  assert tree.root.children == [[1, 2], []]
  assert [n.num_steps for n in tree.nodes] == [2, 2, 2]

  root_spec = env.root_spec()
  spawn = protocol.spawn([('sum mod 10', '@0:2', 'a digit'),
                          ('sum mod 10', '@2:4', 'a digit')])
  tokens, mask = _expected([(_prompt(root_spec, 0, budgets), 0), (spawn, 1),
                            ('<obs><result>3</result><result>7</result>'
                             '</obs>', 0), (protocol.answer('0'), 1)])
  assert tree.root.tokens == tokens
  assert tree.root.loss_mask == mask
  assert tree.root.logprobs == [0.0] * len(tokens)
  for node, digits, total in [(tree.nodes[1], '12', '3'),
                              (tree.nodes[2], '34', '7')]:
    assert node.spec == protocol.env_lib.NodeSpec('sum mod 10', digits,
                                                  'a digit')
    tokens, mask = _expected([
        (_prompt(node.spec, 1, budgets), 0),
        (protocol.think('small') + protocol.tool_call('read', '0 2'), 1),
        (f'<obs>{digits}</obs>', 0), (protocol.answer(total), 1)])
    assert node.tokens == tokens
    assert node.loss_mask == mask
  # Every token generated is one useful slot-step.
  assert stats.useful_slot_steps == sum(sum(n.loss_mask) for n in tree.nodes)


def test_single_agent_mode_refuses_spawns():
  budgets = scheduler_lib.Budgets(max_depth=0, max_steps=3)

  def always_spawn(view):
    if view.observations and 'refused' in view.observations[-1]:
      return protocol.answer('gave up')
    return protocol.spawn([('sub', 'x', '')])

  (tree,), _ = _run(always_spawn, [agent_testing.SumEnv('12345')], budgets)
  assert len(tree.nodes) == 1
  assert tree.root.status == tree_lib.DONE
  assert tree.root.answer == 'gave up'
  assert tree.root.children == [[], []]
  text = TOK.decode(tree.root.tokens)
  assert '<obs>error: spawn refused: depth budget 0 reached' in text
  assert 'budget: depth 0' in text


def test_a_hidden_depth_budget_is_learnt_from_the_refusal():
  # The paper's prompt: no depth in the budget line, at any depth budget;
  # past the budget the spawn is refused in text, as when it is shown.
  budgets = scheduler_lib.Budgets(max_depth=1, max_steps=4)

  def spawn_until_refused(view):
    if view.observations and 'refused' in view.observations[-1]:
      return protocol.answer('alone')
    if view.children_answers:
      return protocol.answer('+'.join(view.children_answers[-1]))
    return protocol.spawn([('sub', 'x', '')])

  engine = scripted_engine.ScriptedEngine(
      spawn_until_refused, TOK, protocol.STOP_TAGS, num_slots=4, max_len=4096,
      decode_steps=4)
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets,
                                              show_depth_budget=False)
  (tree,), _ = scheduler.run([agent_testing.SumEnv('12')], [0])
  assert [n.depth for n in tree.nodes] == [0, 1]
  assert tree.root.answer == 'alone'
  for node in tree.nodes:
    text = TOK.decode(node.tokens)
    assert f'budget: steps 4, children {budgets.max_children}\n' in text
    assert 'depth' not in text.split('<obs>')[0]  # prompt and first step
  assert '<obs>error: spawn refused: depth budget 1 reached' in TOK.decode(
      tree.nodes[1].tokens)


def test_depth_budget_and_failures_reach_parent():
  # Depth 1 on 8 digits: the children (4 digits each) may not split, so
  # under this policy they read and answer their digits directly.
  budgets = scheduler_lib.Budgets(max_depth=1)
  (tree,), _ = _run(agent_testing.split_policy,
                    [agent_testing.SumEnv('12345678')], budgets)
  assert [n.path for n in tree.nodes] == [(), (0,), (1,)]
  assert tree.root.answer == str(agent_testing.digit_sum('12345678'))

  def never_answer(view):
    if view.depth == 0 and view.step == 0:
      return protocol.spawn([('a', '@0:1', ''), ('b', 'lit', '')])
    if view.depth == 0:
      assert view.observations[-1] == (
          f'<result>{scheduler_lib.OUT_OF_STEPS}</result>' * 2)
      return protocol.answer(repr(view.children_answers))
    return protocol.tool_call('read', '0 1')

  budgets = scheduler_lib.Budgets(max_depth=2, max_steps=3)
  (tree,), _ = _run(never_answer, [agent_testing.SumEnv('12')], budgets)
  assert [n.status for n in tree.nodes] == ['done', 'failed', 'failed']
  assert [n.num_steps for n in tree.nodes] == [2, 3, 3]
  failed = scheduler_lib.OUT_OF_STEPS
  assert tree.nodes[1].answer == failed
  assert tree.nodes[2].spec.data == 'lit'
  assert tree.root.answer == repr(((None, None),))
  assert f'<obs><result>{failed}</result><result>{failed}</result></obs>' in (
      TOK.decode(tree.root.tokens))


@pytest.mark.parametrize('step, error', [
    (protocol.spawn([('t', '@0:99', '')]), 'bad slice @0:99'),
    (protocol.spawn([('t', '', '')] * 5), '5 children, at most 4'),
    (protocol.tool_call('fly'), "unknown tool 'fly' (tools: read)"),
    (protocol.tool_call('read', 'x'), 'error: usage: read'),
    ('<answer>unclosed', 'without a stop tag (eos, 9 tokens): unclosed answer'),
    ('<spawn><task></task></spawn>', 'empty task'),
])
def test_errors_are_injected_and_the_node_goes_on(step, error):
  budgets = scheduler_lib.Budgets(max_depth=2)

  def policy(view):
    return step if view.step == 0 else protocol.answer('ok')

  (tree,), _ = _run(policy, [agent_testing.SumEnv('12')], budgets)
  assert len(tree.nodes) == 1
  assert tree.root.status == tree_lib.DONE
  assert tree.root.num_steps == 2
  assert error in TOK.decode(tree.root.tokens)


def test_token_budget_aborts_the_tree():
  budgets = scheduler_lib.Budgets(max_depth=4, max_tokens=900)
  trees, _ = _run(agent_testing.split_policy,
                  [agent_testing.SumEnv('12345678'),
                   agent_testing.SumEnv('12')], budgets)
  big, small = trees
  assert big.status == tree_lib.ABORTED
  assert any(n.status == tree_lib.ABORTED for n in big.nodes)
  assert all(n.status in tree_lib.TERMINAL for n in big.nodes)
  assert small.status == tree_lib.DONE  # another tree is not affected


def test_node_budget_refuses_spawns():
  budgets = scheduler_lib.Budgets(max_depth=5, max_nodes=4)
  (tree,), _ = _run(agent_testing.split_policy,
                    [agent_testing.SumEnv('12345678')], budgets)
  assert len(tree.nodes) <= 4
  assert 'only 1 more nodes' in TOK.decode(tree.nodes[1].tokens)


class KeyedEngine(scripted_engine.ScriptedEngine):
  """A random policy whose choices come from the node's step key only."""

  def step_text(self, request):
    import jax  # pylint: disable=g-import-not-at-top
    bits = jax.random.bits(
        jax.random.fold_in(request.key(), request.step), (4,))
    rng = random.Random(int(bits.sum()))
    data = request.view.spec.data
    choice = rng.random()
    if choice < 0.35 and request.view.budgets['depth'] > 0 and data:
      cut = rng.randrange(len(data) + 1)
      return protocol.spawn([('sum', protocol.data_slice(0, cut), ''),
                             ('sum', protocol.data_slice(cut, len(data)), '')])
    if choice < 0.6:
      return protocol.tool_call('read', f'0 {rng.randrange(4)}')
    return protocol.answer(str(rng.randrange(10)))


def test_same_trees_whatever_the_slot_count():
  budgets = scheduler_lib.Budgets(max_depth=3, max_steps=4)
  envs = [agent_testing.SumEnv('123456789'[:n]) for n in range(1, 10)]
  results = []
  for num_slots in (4, 16, 64):
    trees, _ = _run(None, envs, budgets, num_slots=num_slots,
                    seeds=[7 * i for i in range(len(envs))],
                    engine_cls=KeyedEngine)
    results.append([t.to_json() for t in trees])
  assert results[0] == results[1] == results[2]
  assert sum(len(t['nodes']) for t in results[0]) > 2 * len(envs)
  # Different seeds give different trees.
  other, _ = _run(None, envs, budgets, seeds=[7 * i + 1 for i in range(9)],
                  engine_cls=KeyedEngine)
  assert [t.to_json() for t in other] != results[0]


def test_jsonl_round_trip(tmp_path):
  budgets = scheduler_lib.Budgets(max_depth=3)
  trees, _ = _run(agent_testing.split_policy,
                  [agent_testing.SumEnv('123456'),
                   agent_testing.SumEnv('9')], budgets)
  path = str(tmp_path / 'trees.jsonl')
  tree_lib.save(trees, path)
  assert tree_lib.load(path) == trees
  buffer = io.StringIO()
  tree_lib.write_jsonl(trees, buffer)
  assert len(buffer.getvalue().splitlines()) == 2


def test_utilisation_and_fairness():
  budgets = scheduler_lib.Budgets(max_depth=4, max_nodes=64)
  envs = [agent_testing.SumEnv('1234567890123456') for _ in range(16)]
  trees, stats = _run(agent_testing.split_policy, envs, budgets,
                      num_slots=16)
  assert all(t.status == tree_lib.DONE for t in trees)
  assert all(t.root.success == 1.0 for t in trees)
  generated = sum(sum(n.loss_mask) for t in trees for n in t.nodes)
  assert stats.useful_slot_steps == generated
  assert stats.saturated_utilization >= 0.8, stats
  assert 0 < stats.slot_utilization <= 1


class LoggingEngine(scripted_engine.ScriptedEngine):
  """Records the seed (tree) and path of every admission, in order."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.log = []

  def admit(self, requests):
    self.log += [(r.seed, r.path) for _, r in sorted(requests.items())]
    super().admit(requests)


def test_a_spawn_storm_does_not_starve_other_trees():
  def storm(view):
    if view.spec.task == 'storm' and view.step == 0 and view.depth < 3:
      return protocol.spawn([('storm', '', '')] * 4)
    return protocol.answer('x')

  budgets = scheduler_lib.Budgets(max_depth=3, max_nodes=200)
  envs = [agent_testing.SumEnv('')] * 4
  engine = LoggingEngine(storm, TOK, protocol.STOP_TAGS, num_slots=2,
                         max_len=4096, decode_steps=4)
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets)

  class StormEnv(agent_testing.SumEnv):

    def root_spec(self):
      return protocol.env_lib.NodeSpec('storm')

  envs[0] = StormEnv('')
  trees, _ = scheduler.run(envs, [0, 1, 2, 3])
  assert len(trees[0].nodes) == 1 + 4 + 16 + 64
  assert all(len(t.nodes) == 1 for t in trees[1:])
  # Every small tree got its slot before the storm took a third one.
  order = [seed for seed, _ in engine.log]
  third_storm = [i for i, s in enumerate(order) if s == 0][2]
  assert all(order.index(s) < third_storm for s in (1, 2, 3))


def _run_sequential(envs, budgets, sequential, num_slots=16):
  engine = LoggingEngine(agent_testing.split_policy, TOK, protocol.STOP_TAGS,
                         num_slots=num_slots, max_len=4096, decode_steps=4)
  scheduler = scheduler_lib.FrontierScheduler(
      engine, TOK, budgets, sequential_children=sequential)
  trees, stats = scheduler.run(envs, list(range(len(envs))))
  return trees, stats, engine.log


def test_sequential_children_make_the_same_trees_one_child_at_a_time():
  budgets = scheduler_lib.Budgets(max_depth=3, max_nodes=64)
  envs = [agent_testing.SumEnv('12345678'), agent_testing.SumEnv('9876')]
  parallel, fast, _ = _run_sequential(envs, budgets, sequential=False)
  one_by_one, slow, log = _run_sequential(envs, budgets, sequential=True)
  assert one_by_one == parallel  # tokens, answers, ids: the same trees
  assert all(t.root.success == 1.0 for t in one_by_one)
  # Each child's whole subtree is admitted before its next sibling: the
  # first admissions of tree 0's nodes come in depth-first order.
  first_seen = list(dict.fromkeys(path for seed, path in log if seed == 0))
  assert first_seen == sorted(first_seen)
  assert first_seen == [n.path for n in parallel[0].nodes]
  # Every spawn overlaps in parallel, none one child at a time; and the
  # trees take longer (decode steps until each finished).
  spawns = sum(1 for t in parallel for n in t.nodes for s in n.children if s)
  assert fast.spawns == slow.spawns == spawns
  assert fast.parallel_spawns == spawns and slow.parallel_spawns == 0
  assert all(s > f for s, f in zip(slow.tree_decode_steps,
                                   fast.tree_decode_steps))
  assert len(slow.tree_wall_s) == len(envs)
  assert slow.decode_calls > fast.decode_calls


def test_children_without_free_slots_do_not_count_as_parallel():
  # One slot: siblings can never run at once, sequential or not.
  budgets = scheduler_lib.Budgets(max_depth=2, max_nodes=64)
  envs = [agent_testing.SumEnv('1234')]
  _, stats, _ = _run_sequential(envs, budgets, sequential=False, num_slots=1)
  assert stats.spawns == 1 and stats.parallel_spawns == 0


def test_rollout_stats_add_up():
  budgets = scheduler_lib.Budgets(max_depth=3, max_nodes=64)
  _, a, _ = _run_sequential([agent_testing.SumEnv('1234')], budgets, False)
  _, b, _ = _run_sequential([agent_testing.SumEnv('12')] * 2, budgets, True)
  both = a.plus(b)
  assert both.decode_calls == a.decode_calls + b.decode_calls
  assert both.spawns == a.spawns + b.spawns
  assert both.tree_decode_steps == a.tree_decode_steps + b.tree_decode_steps


class _ContinuingEngine(scripted_engine.ScriptedEngine):
  """The scripted policy, continuing a forced `protocol.SPAWN`: a request
  that already ends with it gets the scripted step without it."""

  def step_text(self, request):
    text = super().step_text(request)
    forced = tuple(TOK.encode(protocol.SPAWN))
    if tuple(request.tokens[-len(forced):]) == forced:
      assert text.startswith(protocol.SPAWN), text
      return text[len(protocol.SPAWN):]
    return text


@pytest.mark.parametrize('per_root', [False, True])
def test_a_forced_root_prefix_is_recorded_unsampled(per_root):
  # Forcing the opening the policy writes anyway changes no token of any
  # tree; a forced root's first step begins with it as unsampled tokens
  # (loss mask 0, log-prob 0) and every other token is as before. Per
  # root (a function of the root's spec), only the roots it names.
  budgets = scheduler_lib.Budgets(max_depth=3)
  digits = ('1234', '56789')
  plain, _ = _run(agent_testing.split_policy,
                  [agent_testing.SumEnv(d) for d in digits], budgets)
  engine = _ContinuingEngine(agent_testing.split_policy, TOK,
                             protocol.STOP_TAGS, num_slots=8, max_len=4096,
                             decode_steps=4)
  prefix = protocol.SPAWN
  if per_root:
    prefix = lambda spec: protocol.SPAWN if spec.data == digits[1] else ''
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets,
                                              root_prefix=prefix)
  forced, _ = scheduler.run([agent_testing.SumEnv(d) for d in digits],
                            [0, 1])
  num_forced = len(TOK.encode(protocol.SPAWN))
  for i, (a, b) in enumerate(zip(plain, forced)):
    assert [n.tokens for n in a.nodes] == [n.tokens for n in b.nodes]
    assert [n.answer for n in a.nodes] == [n.answer for n in b.nodes]
    assert [n.loss_mask for n in a.nodes[1:]] == [
        n.loss_mask for n in b.nodes[1:]]
    first = a.root.loss_mask.index(1)  # the first step's first token
    want = list(a.root.loss_mask)
    if not per_root or i == 1:
      want[first:first + num_forced] = [0] * num_forced
      assert b.root.logprobs[first:first + num_forced] == [0.0] * num_forced
    assert b.root.loss_mask == want
    assert b.root.success == 1.0


def test_a_root_prefix_must_leave_room_to_sample():
  engine = scripted_engine.ScriptedEngine(
      agent_testing.split_policy, TOK, protocol.STOP_TAGS, num_slots=2,
      max_len=512)
  with pytest.raises(ValueError, match='root_prefix'):
    scheduler_lib.FrontierScheduler(
        engine, TOK, scheduler_lib.Budgets(max_new_tokens=1),
        root_prefix=protocol.SPAWN + 'x')
  # Chosen per root, it is checked at the root's first step.
  scheduler = scheduler_lib.FrontierScheduler(
      engine, TOK, scheduler_lib.Budgets(max_new_tokens=1),
      root_prefix=lambda spec: protocol.SPAWN + 'x')
  with pytest.raises(ValueError, match='leaves no token'):
    scheduler.run([agent_testing.SumEnv('12')], [0])
