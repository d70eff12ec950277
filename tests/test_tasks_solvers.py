"""Reference solvers replayed through the real runtime (see tasks_testing).

Bars: the recursive solver's trees score 1.0 on every level with every node
inside the window, documents included at many windows long; the direct
solver fits where the input does and visibly truncates beyond; solvers use
only what a node's context shows.
"""

import dataclasses

import pytest

from rao_jax import tasks
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import context
from rao_jax.tasks import demonstrations
from rao_jax.tasks import documents
from rao_jax.tasks import documents_scan

import tasks_testing

WINDOW = tasks_testing.WINDOW
NUM_EXAMPLES = 4  # per level: enough to see every question kind pass


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _examples(name, level, data_dir, count=NUM_EXAMPLES):
  task = tasks.get(name)
  return builder_lib.load(task.tfds_name, level, 'test', data_dir)[:count]


def _check_demonstration(tree):
  for node in tree.nodes:
    assert len(node.tokens) <= WINDOW.max_tokens, (node.path, node.spec)
    for step in tasks_testing.sampled_steps(node):
      assert not isinstance(protocol.parse_step(step), protocol.ParseError)


def _levels(name, slow_levels=()):
  return [pytest.param(name, level, marks=pytest.mark.slow)
          if level in slow_levels else (name, level)
          for level in tasks.get(name).levels]


@pytest.mark.parametrize(
    'name,level', _levels('crafting') + _levels('multihop') +
    _levels('documents', slow_levels=('extreme',)))
def test_recursive_solver_scores_one_inside_the_window(name, level,
                                                       data_dir):
  task = tasks.get(name)
  examples = _examples(name, level, data_dir)
  trees = tasks.demonstrate(task, examples, window=WINDOW)
  for example, tree in zip(examples, trees):
    assert tree.status == tree_lib.DONE
    assert tree.root.success == 1.0, example['task']
    assert all(n.status == tree_lib.DONE for n in tree.nodes)
    # Every child is checkable in these grammars, and right.
    assert all(n.success == 1.0 for n in tree.nodes[1:])
    _check_demonstration(tree)
    if level != 'easy':
      assert len(tree.nodes) > 1  # it delegated
  if name == 'documents' and level in ('hard', 'extreme'):
    # Far beyond one node: 16 windows and more for the longest.
    assert max(len(e['data']) for e in examples) > 8 * WINDOW.max_tokens


@pytest.mark.parametrize('name', ['crafting', 'documents', 'multihop'])
def test_direct_solver_fits_only_where_the_input_does(name, data_dir):
  task = tasks.get(name)
  success = {}
  for level in ('easy', 'hard'):
    examples = _examples(name, level, data_dir)
    trees = tasks.demonstrate(task, examples, recursive=False, window=WINDOW)
    for tree in trees:
      assert len(tree.nodes) == 1  # never spawns
      assert tree.root.status == tree_lib.DONE  # it stops, never overflows
      _check_demonstration(tree)
    success[level] = sum(t.root.success for t in trees) / len(trees)
    if name == 'documents' and level == 'hard':
      # Truncation shows: what it read is far shorter than the document.
      for example, tree in zip(examples, trees):
        read = tree.root.tokens.count(tasks_testing.TOKENIZER.encode('\n')[0])
        assert read < len(example['data']) // 10 // 4
  assert success['easy'] == 1.0
  assert success['hard'] <= 0.5


def test_recursive_solver_without_depth_budget_is_the_direct_one(data_dir):
  task = tasks.get('multihop')
  examples = _examples('multihop', 'medium', data_dir)
  budgets = tasks.demonstrations.DIRECT_BUDGETS  # max_depth 0
  recursive = tasks.demonstrate(task, examples, budgets=budgets)
  direct = tasks.demonstrate(task, examples, recursive=False)
  assert [t.root.tokens for t in recursive] == [t.root.tokens for t in direct]


def _view(spec, step=0, observations=(), children_answers=()):
  return env_lib.StepView(spec=spec, depth=0, step=step,
                          observations=observations,
                          children_answers=children_answers,
                          budgets={'depth': 3, 'steps': 10, 'children': 4},
                          state=None)


@pytest.mark.parametrize('solver_cls', [documents.RecursiveSolver,
                                        documents.DirectSolver])
def test_document_solvers_see_only_the_handle(solver_cls, data_dir):
  """Changing data the prompt does not show cannot change a step."""
  solver = solver_cls(WINDOW)
  for example in _examples('documents', 'medium', data_dir):
    data = example['data']
    hidden = data[:WINDOW.head_chars] + data[WINDOW.head_chars:][::-1]
    spec = env_lib.NodeSpec(example['task'], data, example['format'])
    assert len(hidden) == len(data) and hidden != data
    assert solver(_view(spec)) == solver(
        _view(dataclasses.replace(spec, data=hidden)))


def test_leaves_are_two_operand_steps(data_dir):
  """Leaves see at most two records; internal nodes combine two answers
  (numbers with the `add` tool, whose result they copy)."""
  task = tasks.get('documents')
  # Moderate: short enough to run a few trees, numeric and label questions.
  examples = _examples('documents', 'moderate', data_dir, count=6)
  kinds = set()
  for tree in tasks.demonstrate(task, examples):
    assert tree.root.success == 1.0
    for node in tree.nodes:
      kind = node.spec.task.split()[0]
      if node.children and node.children[0]:
        assert len(node.children[0]) == 2
        text = context.TOKENIZER.decode(node.tokens)
        kinds.add(kind)
        assert ('<tool>add ' in text) == (kind in ('count', 'sum')), text
      else:
        assert len(documents.records(node.spec.data)) <= 2
        assert len(node.spec.data) <= WINDOW.inline_chars
  assert kinds & {'count', 'sum'} and kinds - {'count', 'sum'}, kinds


def test_a_mixture_of_solvers_gives_each_example_its_own(data_dir):
  task = tasks.get('documents')
  examples = _examples('documents', 'mixed', data_dir)
  budgets = scheduler_lib.Budgets(max_depth=8, max_nodes=512)
  seeds = list(range(len(examples)))
  flags = [i % 2 == 0 for i in range(len(examples))]
  mixed, _ = demonstrations.rollout(task, examples, recursive=flags,
                                    window=WINDOW, budgets=budgets,
                                    seeds=seeds)
  for flag in (True, False):
    alone, _ = demonstrations.rollout(task, examples, recursive=flag,
                                      window=WINDOW, budgets=budgets,
                                      seeds=seeds)
    for i, tree in enumerate(mixed):
      if flags[i] == flag:
        assert tree.root.tokens == alone[i].root.tokens
        assert len(tree.nodes) == len(alone[i].nodes)
  assert [t.tree_id for t in mixed] == seeds
  assert any(len(t.nodes) > 1 for t in mixed)  # a recursive one delegated
  assert all(len(t.nodes) == 1 for t, f in zip(mixed, flags) if not f)
  with pytest.raises(ValueError, match='solver flags'):
    demonstrations.rollout(task, examples, recursive=flags[:1], window=WINDOW,
                           budgets=budgets, seeds=seeds)


def test_scan_makes_a_direct_answer_exact_inside_one_window_only(data_dir):
  """`documents_scan`: in cpu_tiny's 256-token window a direct answer is
  one scan and a copy, exact up to 8 records; beyond them only the
  recursive solver is, every node inside the window."""
  task = tasks.get('documents_scan')
  window = context.Window(max_tokens=256, inline_chars=24, head_chars=10)
  budgets = scheduler_lib.Budgets(max_depth=8, max_nodes=512)
  examples = _examples('documents_scan', 'mixed', data_dir, count=24)
  seeds = list(range(len(examples)))
  inside = [len(e['data']) <= documents_scan.SCAN_CHARS for e in examples]
  assert any(inside) and not all(inside)
  direct, _ = demonstrations.rollout(task, examples, recursive=False,
                                     window=window, budgets=budgets,
                                     seeds=seeds)
  recursive, _ = demonstrations.rollout(task, examples, recursive=True,
                                        window=window, budgets=budgets,
                                        seeds=seeds)
  for tree, fits in zip(direct, inside):
    assert len(tree.nodes) == 1
    steps = tasks_testing.sampled_steps(tree.root)
    inline = len(tree.root.spec.data) <= window.inline_chars
    assert len(steps) == (1 if inline else 2)
    if not inline:
      assert steps[0].startswith('<tool>scan ' + tree.root.spec.task)
    if fits:
      assert tree.root.success == 1.0
  # One window's answer: exact only by chance beyond it.
  beyond = [t.root.success == 1.0 for t, fits in zip(direct, inside)
            if not fits]
  assert sum(beyond) / len(beyond) < 0.5
  for tree in recursive:
    assert tree.root.success == 1.0
    assert all(len(n.tokens) <= window.max_tokens for n in tree.nodes)
  # With no depth left the recursive solver scans as the direct one does.
  flat, _ = demonstrations.rollout(
      task, examples, recursive=True, window=window, seeds=seeds,
      budgets=dataclasses.replace(budgets, max_depth=0))
  assert [tasks_testing.sampled_steps(t.root) for t in flat] == [
      tasks_testing.sampled_steps(t.root) for t in direct]
