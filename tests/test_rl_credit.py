"""Credit assignment (Eqs. 1, 3, 4) against values computed by hand."""

import numpy as np
import pytest

from rao_jax.agent import env as env_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.rl import credit


def _node(node_id, parent, depth, status, success=None, children=(),
          task='t'):
  return tree_lib.Node(
      tree_id=0, node_id=node_id, parent=parent, depth=depth,
      path=(node_id,) if parent is not None else (),
      spec=env_lib.NodeSpec(task=task), status=status, success=success,
      children=[list(step) for step in children])


def _group():
  """One group of three trees.

  tree 0: root done, success 1; step 0 spawns n1 (done, 1) and n2 (failed),
          step 1 spawns n3 (done, sub-task not checkable).
  tree 1: a leaf root, done, success 0.
  tree 2: root aborted with one aborted child.
  """
  done, failed, aborted = tree_lib.DONE, tree_lib.FAILED, tree_lib.ABORTED
  t0 = tree_lib.Tree(tree_id=0, seed=0, group=7, nodes=[
      _node(0, None, 0, done, 1.0, children=[(1, 2), (3,)]),
      _node(1, 0, 1, done, 1.0),
      _node(2, 0, 1, failed, None),
      _node(3, 0, 1, done, None)])
  t1 = tree_lib.Tree(tree_id=1, seed=1, group=7,
                     nodes=[_node(0, None, 0, done, 0.0)])
  t2 = tree_lib.Tree(tree_id=2, seed=2, group=7, nodes=[
      _node(0, None, 0, aborted, None, children=[(1,)]),
      _node(1, 0, 1, aborted, None)])
  return [t0, t1, t2]


def test_dense_rewards_leave_one_out_and_depth_weights():
  trees = _group()
  out = credit.assign_credit(trees, credit.CreditConfig(child_bonus=0.4))
  # s: tree 0 root 1, n1 1, n2 0 (failed), n3 1 (uncheckable -> root's);
  #    tree 1 root 0; tree 2 root 0 (aborted), child 0 (aborted).
  np.testing.assert_allclose(out.success, [1, 1, 0, 1, 0, 0, 0])
  r_root0 = 1 + 0.4 * (1 + 0 + 1) / 3
  np.testing.assert_allclose(out.reward, [r_root0, 1, 0, 1, 0, 0, 0])
  b0 = (0 + 0) / 2  # the other two roots' rewards
  b1 = b2 = (r_root0 + 0) / 2
  np.testing.assert_allclose(
      out.advantage,
      [r_root0 - b0, 1 - b0, 0 - b0, 1 - b0, 0 - b1, 0 - b2, 0 - b2])
  # 7 nodes over 2 depths: alpha = 3.5; 3 roots, 4 children.
  np.testing.assert_allclose(out.weight, [3.5 / 3, 3.5 / 4, 3.5 / 4, 3.5 / 4,
                                          3.5 / 3, 3.5 / 3, 3.5 / 4])
  assert out.weight.sum() == pytest.approx(7)
  # Written back into the nodes too.
  assert trees[1].root.advantage == pytest.approx(-b1)
  assert trees[0].nodes[2].reward == 0


def test_sparse_success_copies_the_root_down():
  trees = _group()
  trees[0].nodes[1].success = 0.0  # its own verifier says it failed
  out = credit.assign_credit(trees, credit.CreditConfig(success='sparse'))
  # Sparse ignores the child's own score: done children inherit root's 1.
  np.testing.assert_allclose(out.success, [1, 1, 0, 1, 0, 0, 0])
  dense = credit.assign_credit(trees, credit.CreditConfig(success='dense'))
  assert dense.success[1] == 0


def test_exact_success_pays_only_full_scores():
  trees = _group()
  trees[0].root.success = 0.75  # a near miss: one off on a number
  trees[0].nodes[1].success = 0.42
  trees[1].root.success = 1.0
  partial = credit.assign_credit(trees, credit.CreditConfig(child_bonus=0.4))
  np.testing.assert_allclose(partial.success, [0.75, 0.42, 0, 0.75, 1, 0, 0])
  exact = credit.assign_credit(trees, credit.CreditConfig(
      child_bonus=0.4, exact_success=True))
  # n3 is uncheckable and inherits the root's (now 0) success.
  np.testing.assert_allclose(exact.success, [0, 0, 0, 0, 1, 0, 0])
  np.testing.assert_allclose(exact.reward, [0, 0, 0, 0, 1, 0, 0])
  np.testing.assert_allclose(exact.advantage[:4], -0.5)  # b = (1 + 0) / 2


def test_baseline_variants_and_switches():
  trees = _group()
  mean = credit.assign_credit(trees, credit.CreditConfig(
      baseline='group_mean', depth_weighting=False))
  np.testing.assert_allclose(mean.advantage[[0, 4, 5]],
                             [1 - 1 / 3, -1 / 3, -1 / 3])
  np.testing.assert_allclose(mean.weight, np.ones(7))
  none = credit.assign_credit(trees, credit.CreditConfig(baseline='none'))
  np.testing.assert_allclose(none.advantage, none.reward)


def test_leave_one_out_per_depth():
  trees = _group()
  config = credit.CreditConfig(child_bonus=0.4,
                               baseline='leave_one_out_depth')
  out = credit.assign_credit(trees, config)
  r0 = 1 + 0.4 * (1 + 0 + 1) / 3
  # Roots (nodes 0, 4, 5) against the other roots: Eq. 3 itself. Depth-1
  # nodes (1, 2, 3, 6; rewards 1, 0, 1, 0) against the other three.
  np.testing.assert_allclose(
      out.advantage, [r0 - 0, 1 - 1 / 3, 0 - 2 / 3, 1 - 1 / 3, 0 - r0 / 2,
                      0 - r0 / 2, 0 - 2 / 3])
  eq3 = credit.assign_credit(_group(), credit.CreditConfig(child_bonus=0.4))
  np.testing.assert_allclose(out.advantage[[0, 4, 5]],
                             eq3.advantage[[0, 4, 5]])
  # A node with no peer at its depth gets no signal.
  trees = _group()
  trees[2].nodes[1].depth = 2
  out = credit.assign_credit(trees, config)
  np.testing.assert_allclose(out.advantage[[1, 2, 3, 6]],
                             [1 - 0.5, 0 - 1, 1 - 0.5, 0])
  normed = credit.assign_credit(_group(), credit.CreditConfig(
      baseline='leave_one_out_depth', normalize_std=True))
  std1 = np.std([1, 0, 1, 0])
  np.testing.assert_allclose(normed.advantage[1], (1 - 1 / 3) / (std1 + 1e-6))


def _group_of_sub_tasks():
  """`_group` with depth-1 sub-tasks: n1 and tree 2's child share 'a'; n2
  ('b') and n3 ('c') are alone."""
  trees = _group()
  for tree, node_id, task in ((0, 1, 'a'), (0, 2, 'b'), (0, 3, 'c'),
                              (2, 1, 'a')):
    trees[tree].nodes[node_id].spec = env_lib.NodeSpec(task=task, data='d')
  return trees


def test_leave_one_out_per_sub_task():
  trees = _group_of_sub_tasks()
  out = credit.assign_credit(trees, credit.CreditConfig(
      child_bonus=0.4, baseline='leave_one_out_task'))
  r0 = 1 + 0.4 * (1 + 0 + 1) / 3
  # Roots share the root task: Eq. 3. 'a' (rewards 1 and 0) is its own
  # group; 'b' and 'c' have no sub-task peer and fall back to the depth-1
  # nodes (rewards 1, 0, 1, 0).
  np.testing.assert_allclose(
      out.advantage, [r0 - 0, 1 - 0, 0 - 2 / 3, 1 - 1 / 3, 0 - r0 / 2,
                      0 - r0 / 2, 0 - 1])
  # The same task over other data is another sub-task: both 'a' nodes fall
  # back to their depth peers.
  trees[2].nodes[1].spec = env_lib.NodeSpec(task='a', data='e')
  out = credit.assign_credit(trees, credit.CreditConfig(
      child_bonus=0.4, baseline='leave_one_out_task'))
  np.testing.assert_allclose(out.advantage[[1, 6]], [1 - 1 / 3, 0 - 2 / 3])


def test_leave_one_out_per_sub_task_only():
  out = credit.assign_credit(_group_of_sub_tasks(), credit.CreditConfig(
      child_bonus=0.4, baseline='leave_one_out_same_task'))
  r0 = 1 + 0.4 * (1 + 0 + 1) / 3
  # As above, but 'b' and 'c' have no peer and are compared with no one:
  # an easier sub-task elsewhere in the group earns nothing.
  np.testing.assert_allclose(
      out.advantage, [r0 - 0, 1 - 0, 0, 0, 0 - r0 / 2, 0 - r0 / 2, 0 - 1])


def _tree_of_answers(tree_id, root_success, answers, successes):
  """A root over sub-tasks 'a' and 'b' whose leaves answered `answers`."""
  done = tree_lib.DONE
  nodes = [_node(0, None, 0, done, root_success, children=[(1, 2)],
                 task='root'),
           _node(1, 0, 1, done, successes[0], task='a'),
           _node(2, 0, 1, done, successes[1], task='b')]
  for node, answer in zip(nodes[1:], answers):
    node.answer = answer
  return tree_lib.Tree(tree_id=tree_id, seed=tree_id, group=0, nodes=nodes)


def test_leave_one_out_given_the_childrens_results():
  # Roots 0 and 1 got the same answers back; root 1 combined them wrongly.
  # Root 2 got a wrong answer from 'b' and is compared with no one.
  trees = [_tree_of_answers(0, 1.0, ('3', '4'), (1.0, 1.0)),
           _tree_of_answers(1, 0.0, ('3', '4'), (1.0, 1.0)),
           _tree_of_answers(2, 0.0, ('3', '5'), (1.0, 0.0))]
  out = credit.assign_credit(trees, credit.CreditConfig(
      child_bonus=0.4, baseline='leave_one_out_results'))
  r_roots = [1 + 0.4, 0 + 0.4, 0 + 0.4 * 0.5]
  np.testing.assert_allclose(out.reward[[0, 3, 6]], r_roots)
  # Per tree: root, 'a' (all answered alike: 0), 'b' (1, 1, 0).
  np.testing.assert_allclose(out.advantage, [
      r_roots[0] - r_roots[1], 0, 1 - 0.5,
      r_roots[1] - r_roots[0], 0, 1 - 0.5,
      0, 0, 0 - 1])
  # The per-sub-task baseline blames root 2 for its child's answer.
  task = credit.assign_credit(trees, credit.CreditConfig(
      child_bonus=0.4, baseline='leave_one_out_task'))
  assert task.advantage[6] == pytest.approx(
      r_roots[2] - (r_roots[0] + r_roots[1]) / 2)


@pytest.mark.parametrize('baseline', ['leave_one_out', 'group_mean',
                                      'leave_one_out_depth',
                                      'leave_one_out_task',
                                      'leave_one_out_same_task',
                                      'leave_one_out_results'])
def test_tied_rewards_get_exactly_zero_advantage(baseline):
  # Three one-node trees all scoring 0.2: a plain sum of 0.2s rounds, so
  # neither (sum - r) / 2 nor the mean is 0.2. The trainer skips nodes
  # whose advantage is exactly 0, so ties must give exactly 0.
  r = np.full(3, 0.2)
  assert (r.sum() - r[0]) / 2 != 0.2 and r.mean() != 0.2  # the rounding
  trees = [tree_lib.Tree(tree_id=i, seed=i, group=3, nodes=[
      _node(0, None, 0, tree_lib.DONE, 0.2)]) for i in range(3)]
  out = credit.assign_credit(trees, credit.CreditConfig(baseline=baseline))
  assert np.all(out.advantage == 0.0)


def test_leave_one_out_refuses_a_group_of_one():
  trees = _group()
  trees[2].group = 8
  for baseline in ('leave_one_out', 'leave_one_out_depth',
                   'leave_one_out_task', 'leave_one_out_same_task',
                   'leave_one_out_results'):
    with pytest.raises(ValueError, match='group_size >= 2'):
      credit.assign_credit(trees, credit.CreditConfig(baseline=baseline))


def test_bad_credit_config_names_the_field():
  with pytest.raises(ValueError, match='rl.credit.success'):
    credit.CreditConfig(success='medium')
  with pytest.raises(ValueError, match='rl.credit.child_bonus'):
    credit.CreditConfig(child_bonus=-1)


def test_depth_weights_sum_to_node_count():
  depth = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 3])
  w = credit.depth_weights(depth)
  assert w.sum() == pytest.approx(10)
  # Each depth level carries the same total weight.
  for d in range(4):
    assert w[depth == d].sum() == pytest.approx(10 / 4)
