"""Call-tree records: turns, and the JSON-lines round trip with and without
them."""

import json

import pytest

from rao_jax import tasks
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import scripted_engine
from rao_jax.agent import tree as tree_lib
from rao_jax.tasks import demonstrations

import view_testing

TOKENIZER = view_testing.TOKENIZER


@pytest.fixture(scope='module')
def medium_trees(tmp_path_factory):
  """Reference-solver trees of two medium documents: spawns, `add` tool
  calls and answers, through the real scheduler."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  examples = view_testing.document_examples(data_dir, 'medium')[:2]
  return demonstrations.demonstrations(tasks.get('documents'), examples,
                                       window=view_testing.WINDOW)


def test_turns_partition_the_sequence_by_loss_mask(medium_trees):
  for tree in medium_trees:
    for node in tree.nodes:
      turns = tree_lib.turns(node, TOKENIZER)
      assert turns[0]['start'] == 0 and turns[-1]['end'] == len(node.tokens)
      for before, after in zip(turns, turns[1:]):
        assert before['end'] == after['start']
        # Maximal runs: neighbours differ in loss mask.
        assert node.loss_mask[before['start']] != node.loss_mask[
            after['start']]
      for turn in turns:
        span = range(turn['start'], turn['end'])
        assert len({node.loss_mask[i] for i in span}) == 1
        assert turn['text'] == TOKENIZER.decode(
            node.tokens[turn['start']:turn['end']])
        assert (turn['kind'] == tree_lib.POLICY) == bool(
            node.loss_mask[turn['start']])


def test_turn_kinds_on_a_scheduler_tree(medium_trees):
  tree = medium_trees[0]
  assert len(tree.nodes) > 100
  for node in tree.nodes:
    turns = tree_lib.turns(node, TOKENIZER)
    kinds = [t['kind'] for t in turns]
    assert kinds[0] == tree_lib.PROMPT
    assert node.spec.task in turns[0]['text']
    policy = [t for t in turns if t['kind'] == tree_lib.POLICY]
    assert len(policy) == node.num_steps
    for step, (turn, spawned) in enumerate(zip(policy, node.children)):
      action = protocol.parse_step(turn['text'])
      # A spawn step is followed by its children's results, a tool call
      # by its observation, the answer by nothing.
      following = kinds[kinds.index(tree_lib.POLICY, 0) + 2 * step + 1:][:1]
      if isinstance(action, protocol.Spawn):
        assert len(spawned) == len(action.children)
        assert following == [tree_lib.RESULTS]
      elif isinstance(action, protocol.ToolCall):
        assert following == [tree_lib.OBSERVATION]
      else:
        assert isinstance(action, protocol.Answer) and following == []
  root_kinds = {t['kind'] for t in tree_lib.turns(tree.root, TOKENIZER)}
  assert root_kinds == set(tree_lib.TURN_KINDS)


class _SayOne:
  """One root task, no tools; any answer scores 1."""

  def root_spec(self):
    return env_lib.NodeSpec('say one')

  def tools(self):
    return ()

  def root_state(self):
    return None

  def child_state(self, parent_state, spec):
    return None

  def score_root(self, answer, state):
    return 1.0

  def score_subtask(self, spec, answer, state):
    return None


def _bad_first_step(view: env_lib.StepView) -> str:
  return 'no tags here</answer>' if view.step == 0 else protocol.answer('1')


def test_an_error_injection_is_an_observation():
  engine = scripted_engine.ScriptedEngine(_bad_first_step, TOKENIZER,
                                     protocol.STOP_TAGS, num_slots=1,
                                     max_len=512)
  scheduler = scheduler_lib.FrontierScheduler(
      engine, TOKENIZER, scheduler_lib.Budgets(max_depth=0))
  (tree,), _ = scheduler.run([_SayOne()], [0])
  turns = tree_lib.turns(tree.root, TOKENIZER)
  assert [t['kind'] for t in turns] == [
      tree_lib.PROMPT, tree_lib.POLICY, tree_lib.OBSERVATION,
      tree_lib.POLICY]
  assert turns[2]['text'].startswith(protocol.OBS + 'error:')


def test_save_with_turns_round_trips(medium_trees, tmp_path):
  path = str(tmp_path / 'trees.jsonl')
  tree_lib.save(medium_trees, path, TOKENIZER)
  with open(path) as f:
    records = [json.loads(line) for line in f]
  for record, tree in zip(records, medium_trees):
    for node_record, node in zip(record['nodes'], tree.nodes):
      assert node_record['turns'] == tree_lib.turns(node, TOKENIZER)
  assert tree_lib.load(path) == medium_trees


def test_files_without_turns_still_load(medium_trees, tmp_path):
  path = str(tmp_path / 'old.jsonl')
  tree_lib.save(medium_trees, path)
  with open(path) as f:
    assert all('turns' not in n for n in json.loads(f.readline())['nodes'])
  assert tree_lib.load(path) == medium_trees


def test_turns_refuse_a_node_whose_mask_does_not_fit(medium_trees):
  node = tree_lib.Node.from_json(medium_trees[0].root.to_json())
  node.loss_mask = node.loss_mask[:-1]
  with pytest.raises(ValueError, match='loss-mask entries'):
    tree_lib.turns(node, TOKENIZER)
