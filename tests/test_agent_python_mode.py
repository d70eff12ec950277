"""The python action mode through the real scheduler and sandbox.

Scripted policies write code blocks; the scheduler runs them in sandbox
workers, spawns children through the same budgets and records, and the
trees come out as in the tag mode: tokens exactly as emitted, injections
with loss mask 0, children recorded per step.
"""

import pytest

from rao_jax import sandbox
from rao_jax.agent import chat as chat_lib
from rao_jax.agent import code_protocol
from rao_jax.agent import code_runtime
from rao_jax.agent import env as env_lib
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import scripted_engine
from rao_jax.agent import tree as tree_lib
from rao_jax.tasks import context

TOKENIZER = context.TOKENIZER


class _SumEnv:
  """Root: the sum of the numbers in its data, one a line."""

  def __init__(self, data):
    self.data = data

  def root_spec(self):
    return env_lib.NodeSpec('sum', self.data)

  def tools(self):
    return ()

  def root_state(self):
    return None

  def child_state(self, parent_state, spec):
    return None

  def score_root(self, answer, state):
    return float(answer == str(sum(map(int, self.data.split()))))

  def score_subtask(self, spec, answer, state):
    return float(answer == str(sum(map(int, spec.data.split()))))


def _splitter(view):
  """Splits its context in two until one line is left, then sums."""
  if view.step == 0:
    if view.depth < 3 and view.budgets['depth'] > 0 and len(
        view.spec.data.splitlines()) > 1:
      return code_protocol.code_step(
          "h = [spawn('sum', p) for p in split(context, 2)]\nprint(len(h))")
    return code_protocol.code_step('answer(sum(map(int, context.split())))')
  return code_protocol.code_step('answer(sum(map(int, wait(h))))',
                                 thought='combine')


@pytest.fixture(scope='module')
def runtime():
  runtime = code_runtime.CodeRuntime(sandbox.Limits(num_workers=2,
                                                    output_chars=300))
  yield runtime
  runtime.close()


def _run(policy, envs, runtime, budgets=None, num_slots=4):
  chat = chat_lib.ChatFormat(TOKENIZER, actions=chat_lib.PYTHON)
  engine = scripted_engine.ScriptedEngine(
      policy, TOKENIZER, chat.stops, num_slots=num_slots, max_len=1024,
      decode_steps=16)
  scheduler = scheduler_lib.FrontierScheduler(
      engine, TOKENIZER, budgets or scheduler_lib.Budgets(max_depth=3),
      chat=chat, code=runtime)
  return scheduler.run(envs, seeds=list(range(len(envs))))


def test_spawn_from_code_builds_a_valid_call_tree(runtime):
  data = ''.join(f'{n}\n' for n in (3, 4, 5, 6))
  (tree,), stats = _run(_splitter, [_SumEnv(data)], runtime)
  assert tree.status == tree_lib.DONE and tree.root.answer == '18'
  assert tree.root.success == 1.0
  assert [n.depth for n in tree.nodes] == [0, 1, 2, 2, 1, 2, 2]
  assert tree.root.children == [[1, 4], []]
  assert all(n.success == 1.0 for n in tree.nodes)
  assert stats.spawns == 3
  # The prompt holds the context's length, never the context.
  prompt = tree_lib.turns(tree.root, TOKENIZER)[0]['text']
  assert 'context: 8 chars' in prompt and '3\n4' not in prompt
  # The parent's injection: its block's output, then the results.
  kinds = [t['kind'] for t in tree_lib.turns(tree.root, TOKENIZER)]
  assert kinds == ['prompt', 'policy', 'results', 'policy']
  assert tree_lib.turns(tree.root, TOKENIZER)[2]['text'] == (
      '<obs>2<result>7</result><result>11</result></obs>')


def test_tokens_are_the_steps_exactly_and_injections_unmasked(runtime):
  data = '1\n2\n'
  (tree,), _ = _run(_splitter, [_SumEnv(data)], runtime)
  root = tree.root
  policy = [t for t in tree_lib.turns(root, TOKENIZER) if t['kind'] ==
            'policy']
  assert policy[1]['text'] == code_protocol.code_step(
      'answer(sum(map(int, wait(h))))', thought='combine')
  assert len(root.tokens) == len(root.loss_mask) == len(root.logprobs)
  sampled = [t for t, m in zip(root.tokens, root.loss_mask) if m]
  assert TOKENIZER.decode(sampled) == ''.join(p['text'] for p in policy)


def test_budgets_hold_as_in_the_tag_mode(runtime):
  data = ''.join(f'{n}\n' for n in range(8))
  # Depth 1: the children may not spawn; they answer themselves.
  (tree,), _ = _run(_splitter, [_SumEnv(data)], runtime,
                    scheduler_lib.Budgets(max_depth=1))
  assert max(n.depth for n in tree.nodes) == 1
  assert tree.root.answer == '28'

  def wide(view):
    return code_protocol.code_step(
        "h = [spawn('sum', str(i)) for i in range(5)]")
  (tree,), _ = _run(wide, [_SumEnv(data)], runtime,
                    scheduler_lib.Budgets(max_children=4, max_steps=2))
  assert len(tree.nodes) == 1 and tree.root.status == tree_lib.FAILED
  obs = tree_lib.turns(tree.root, TOKENIZER)[2]['text']
  assert 'spawn refused: 5 children, at most 4' in obs


def test_errors_and_malformed_steps_come_back_as_observations(runtime):
  def policy(view):
    return ['no block here', code_protocol.code_step('1 / 0'),
            code_protocol.code_step("print('x' * 1000)"),
            code_protocol.code_step('answer(len(context))')][view.step]
  (tree,), _ = _run(policy, [_SumEnv('1\n')], runtime,
                    scheduler_lib.Budgets(max_steps=5))
  texts = [t['text'] for t in tree_lib.turns(tree.root, TOKENIZER)
           if t['kind'] == 'observation']
  assert texts[0].startswith('<obs>error: ') and 'python block' in texts[0]
  assert texts[1] == '<obs>error: line 1: ZeroDivisionError: division by ' \
      'zero</obs>'
  assert '[701 more characters of output cut]' in texts[2]
  assert tree.root.answer == '2'


def test_answer_ends_the_node_and_drops_its_namespace(runtime):
  before = runtime.stats()['blocks']
  (tree,), _ = _run(_splitter, [_SumEnv('5\n')], runtime)
  assert tree.root.answer == '5' and tree.root.num_steps == 1
  assert runtime.stats()['blocks'] == before + 1
  assert not runtime.pool._route  # every finished node was dropped


def test_modes_cannot_be_mixed(runtime):
  engine = scripted_engine.ScriptedEngine(
      _splitter, TOKENIZER, ('```',), num_slots=1, max_len=64)
  with pytest.raises(ValueError, match='python mode'):
    scheduler_lib.FrontierScheduler(
        engine, TOKENIZER, scheduler_lib.Budgets(),
        chat=chat_lib.ChatFormat(TOKENIZER), code=runtime)


def test_the_same_trees_come_out_whatever_the_slot_count(runtime):
  data = ''.join(f'{n}\n' for n in range(11))
  envs = [_SumEnv(data), _SumEnv('4\n5\n')]
  one, _ = _run(_splitter, envs, runtime, num_slots=1)
  many, _ = _run(_splitter, envs, runtime, num_slots=6)
  for a, b in zip(one, many):
    assert [n.tokens for n in a.nodes] == [n.tokens for n in b.nodes]
    assert [n.children for n in a.nodes] == [n.children for n in b.nodes]
