"""Rollout metrics: root success with partial credit, and exact match."""

from rao_jax.agent import env as env_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.rl import metrics


def _tree(status, success):
  root = tree_lib.Node(tree_id=0, node_id=0, parent=None, depth=0, path=(),
                       spec=env_lib.NodeSpec('t'), status=status,
                       success=success)
  return tree_lib.Tree(tree_id=0, seed=0, nodes=[root], status=status)


def test_exact_match_counts_only_full_scores_of_finished_roots():
  trees = [_tree(tree_lib.DONE, 1.0), _tree(tree_lib.DONE, 0.75),
           _tree(tree_lib.FAILED, 0.0), _tree(tree_lib.DONE, 1.0)]
  found = metrics.tree_metrics(trees)
  assert found['root_exact'] == 0.5
  assert found['root_success'] == (1.0 + 0.75 + 0.0 + 1.0) / 4
