"""The solvers count a node's context in the run's tokens: exactly as the
rollout builds it, chat template and preamble included, so demonstrations
never overflow the window whatever the tokenizer."""

import dataclasses

import pytest

from rao_jax import tasks
from rao_jax.agent import chat as chat_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import scripted_engine
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import context

import tokenizer_testing

_WINDOW = context.Window(max_tokens=320, inline_chars=24, head_chars=10)
# The preamble alone is ~440 tokens of this small BPE.
_WIDE = dataclasses.replace(_WINDOW, max_tokens=800)


@pytest.fixture(scope='module')
def formats(tmp_path_factory):
  directory = tokenizer_testing.write_tokenizer_dir(
      str(tmp_path_factory.mktemp('bpe')), tokenizer_testing.train_bpe(500),
      tokenizer_testing.GEMMA_CONFIG, chat_lib.GEMMA_TEMPLATE)
  bpe = tokenizer_lib.HFTokenizer(directory)
  return {'byte': chat_lib.ChatFormat(context.TOKENIZER),
          'bpe_gemma_preamble': chat_lib.ChatFormat(
              bpe, chat_lib.GEMMA_TEMPLATE, preamble=True),
          'bpe_raw': chat_lib.ChatFormat(bpe)}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


class _CountingEngine(scripted_engine.ScriptedEngine):
  """Checks, before every step of a node that never spawned, the solver's
  count of its context against the context the scheduler built."""

  def step_text(self, request):
    view = request.view
    if not view.children_answers:
      counted = context.context_tokens(view, self.tools, self.window,
                                       self.policy)
      assert counted == len(request.tokens), (view.spec.task, view.step)
      self.checked += 1
    return super().step_text(request)


def _counted_rollout(task, examples, window, recursive):
  """The solver's trees, its context count checked at every step of every
  node until it spawns (`_CountingEngine`); returns them and the count."""
  solver = task.recursive_solver if recursive else task.direct_solver
  chat = window.format
  engine = _CountingEngine(solver(window), chat.tokenizer, protocol.STOP_TAGS,
                           num_slots=8, max_len=window.max_tokens)
  engine.window, engine.checked = window, 0
  envs = [task.make_env(e) for e in examples]
  engine.tools = tuple(envs[0].tools())
  scheduler = scheduler_lib.FrontierScheduler(
      engine, chat.tokenizer,
      tasks.demonstrations.RECURSIVE_BUDGETS if recursive else
      tasks.demonstrations.DIRECT_BUDGETS,
      inline_chars=window.inline_chars, head_chars=window.head_chars,
      show_depth_budget=window.show_depth_budget, chat=chat)
  trees, _ = scheduler.run(envs, list(range(len(envs))))
  return trees, engine.checked


@pytest.mark.parametrize('fmt', ['byte', 'bpe_gemma_preamble', 'bpe_raw'])
@pytest.mark.parametrize('name', ['crafting', 'documents', 'multihop'])
def test_direct_solvers_count_the_context_the_rollout_builds(
    formats, data_dir, fmt, name):
  task = tasks.get(name)
  examples = builder_lib.load(task.tfds_name, 'hard', 'test', data_dir)[:3]
  chat = formats[fmt]
  window = dataclasses.replace(_WIDE if chat.preamble else _WINDOW, chat=chat)
  trees, checked = _counted_rollout(task, examples, window, recursive=False)
  assert checked > len(trees)  # several steps a node
  for tree in trees:
    # Hard tasks do not fit: the solver stops in time, never overflowing.
    assert tree.root.status == tree_lib.DONE, tree.root.answer
    assert len(tree.root.tokens) <= window.max_tokens


@pytest.mark.parametrize('fmt', ['byte', 'bpe_gemma_preamble'])
def test_recursive_demonstrations_count_a_prompt_without_the_depth(
    formats, data_dir, fmt):
  # `show_depth_budget=False`: the solvers still read the depth budget from
  # their view and count the prompt the rollout built without it.
  task = tasks.get('documents')
  examples = builder_lib.load(task.tfds_name, 'hard', 'test', data_dir)[:2]
  chat = formats[fmt]
  window = dataclasses.replace(_WIDE if chat.preamble else _WINDOW,
                               chat=chat, show_depth_budget=False)
  trees, checked = _counted_rollout(task, examples, window, recursive=True)
  assert checked > len(trees)
  for tree in trees:
    assert tree.root.status == tree_lib.DONE
    assert len(tree.nodes) > 1  # it delegated, with no depth in sight
    for node in tree.nodes:
      text = chat.tokenizer.decode(node.tokens)
      budget_line = text[text.index('\nbudget: '):].split('\n')[1]
      assert budget_line.startswith('budget: steps'), budget_line


@pytest.mark.parametrize('name', ['crafting', 'documents', 'multihop'])
def test_recursive_demonstrations_fit_a_bpe_window(formats, data_dir, name):
  task = tasks.get(name)
  examples = builder_lib.load(task.tfds_name, 'medium', 'test', data_dir)[:2]
  chat = formats['bpe_gemma_preamble']
  trees, _ = tasks.demonstrations.rollout(
      task, examples, recursive=True, window=_WIDE,
      budgets=tasks.demonstrations.RECURSIVE_BUDGETS, seeds=[0, 1],
      tokenizer=chat.tokenizer, chat=chat)
  for tree in trees:
    assert tree.root.success == 1.0
    for node in tree.nodes:
      assert node.status == tree_lib.DONE
      assert len(node.tokens) <= _WIDE.max_tokens
