"""Reference solvers in both action modes, on plain and prose documents,
through the real scheduler (and, in the python mode, the sandbox)."""

import random

import pytest

from rao_jax import sandbox
from rao_jax import tasks
from rao_jax.agent import code_runtime
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.tasks import context
from rao_jax.tasks import demonstrations
from rao_jax.tasks import documents

# cpu_tiny's window and budgets.
WINDOW = context.Window(max_tokens=256, inline_chars=24, head_chars=10)
BUDGETS = scheduler_lib.Budgets(max_depth=8, max_children=4, max_steps=6,
                                max_nodes=512, max_new_tokens=96)


def _examples(n, low, high, prose, seed=0, kinds=('count', 'sum')):
  rng = random.Random(seed)
  found = []
  while len(found) < n:
    document = documents.make_document(rng, rng.randint(low, high), prose)
    question = documents.make_question(rng, document)
    if question is None or question[0].split()[0] not in kinds:
      continue
    found.append({'task': question[0], 'data': document, 'answer':
                  question[1], 'format': ''})
  return found


@pytest.fixture(scope='module')
def runtime():
  runtime = code_runtime.CodeRuntime(sandbox.Limits(num_workers=2))
  yield runtime
  runtime.close()


def _roll(task_name, examples, recursive, code=None, budgets=BUDGETS):
  trees, stats = demonstrations.rollout(
      tasks.get(task_name), examples, recursive=recursive, window=WINDOW,
      budgets=budgets, seeds=list(range(len(examples))), code=code)
  return trees, stats


def _valid(tree):
  """Every node ended, children point back, sequences line up."""
  for node in tree.nodes:
    assert node.status in tree_lib.TERMINAL
    assert len(node.tokens) == len(node.loss_mask) == len(node.logprobs)
    assert len(node.tokens) <= WINDOW.max_tokens
    for step in node.children:
      for child in step:
        assert tree.nodes[child].parent == node.node_id


@pytest.mark.parametrize('task_name,prose', [('documents', False),
                                             ('documents_prose', True)])
def test_recursive_solvers_solve_moderate_documents_in_both_modes(
    runtime, task_name, prose):
  examples = _examples(6, 26, 60, prose)
  for code in (None, runtime):
    trees, _ = _roll(task_name, examples, True, code)
    for tree in trees:
      _valid(tree)
      assert tree.root.success == 1.0, (code, tree.root.answer)
      assert len(tree.nodes) > 7  # it delegated


def test_python_leaves_read_their_context_by_printing_it(runtime):
  (tree,), _ = _roll('documents_prose', _examples(1, 26, 30, True), True,
                     runtime)
  leaves = [n for n in tree.nodes if not any(n.children)]
  for leaf in leaves:
    turns = tree_lib.turns(leaf, context.TOKENIZER)
    assert turns[1]['text'] == '```python\nprint(context)\n```'
    assert leaf.spec.data.rstrip('\n') in turns[2]['text']
    assert len(leaf.spec.data) <= 64
    assert leaf.success == 1.0


def test_prose_needs_reading_a_plain_parser_misses_records():
  examples = _examples(20, 26, 60, True)
  plain = [sum(documents._RECORD_RE.fullmatch(line) is not None
               for line in ex['data'].splitlines()) for ex in examples]
  full = [len(documents.records(ex['data'])) for ex in examples]
  assert sum(plain) < sum(full) / 3  # most records are not 'S L V'
  assert all(f == ex['data'].count('\n') for f, ex in zip(full, examples))


def test_direct_solvers_fit_the_window_and_miss_beyond_it(runtime):
  short = _examples(6, 2, 4, True)
  long = _examples(6, 40, 60, True)
  for code in (None, runtime):
    trees, _ = _roll('documents_prose', short, False, code,
                     demonstrations.DIRECT_BUDGETS)
    assert all(t.root.success == 1.0 for t in trees), code
    trees, _ = _roll('documents_prose', long, False, code,
                     demonstrations.DIRECT_BUDGETS)
    for tree in trees:
      assert len(tree.nodes) == 1 and tree.root.status == tree_lib.DONE
      assert len(tree.root.tokens) <= WINDOW.max_tokens
    assert sum(t.root.success == 1.0 for t in trees) < len(trees)
