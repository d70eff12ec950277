"""Eq. 1's optional launch cost (rl.credit node_cost, token_cost)."""

import numpy as np
import pytest

from rao_jax.agent import env as env_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.rl import credit


def _node(node_id, parent, depth, success, children=(), sampled=0):
  return tree_lib.Node(
      tree_id=0, node_id=node_id, parent=parent, depth=depth,
      path=(node_id,) if parent is not None else (),
      spec=env_lib.NodeSpec(task='t'), status=tree_lib.DONE,
      success=success, children=[list(step) for step in children],
      tokens=[0] * (sampled + 2), loss_mask=[0, 0] + [1] * sampled)


def _group():
  """A delegating tree (root -> a -> b, root -> c) and a direct one, both
  right at the root."""
  delegating = tree_lib.Tree(tree_id=0, seed=0, group=0, nodes=[
      _node(0, None, 0, 1.0, children=[(1, 3)], sampled=10),
      _node(1, 0, 1, 1.0, children=[(2,)], sampled=6),
      _node(2, 1, 2, 1.0, sampled=4),
      _node(3, 0, 1, 0.0, sampled=5)])
  direct = tree_lib.Tree(tree_id=1, seed=1, group=0,
                         nodes=[_node(0, None, 0, 1.0, sampled=7)])
  return [delegating, direct]


def test_costs_charge_what_a_node_launched():
  costs = credit.launch_costs(_group()[0], node_cost=0.1, token_cost=0.01)
  # Root: 3 nodes below, 25 tokens; a: 1 below, 10; b and c: leaves.
  assert costs == pytest.approx({0: 0.3 + 0.25, 1: 0.1 + 0.10,
                                 2: 0.04, 3: 0.05})
  assert credit.launch_costs(_group()[0], 0.0, 0.0) == {
      0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}


def test_a_cost_makes_useless_delegation_lose_to_a_direct_answer():
  config = credit.CreditConfig(child_bonus=0.4, node_cost=0.2)
  out = credit.assign_credit(_group(), config)
  root_delegating = 1 + 0.4 * (1 + 0) / 2 - 0.2 * 3
  np.testing.assert_allclose(out.reward[[0, 4]], [root_delegating, 1.0])
  # Eq. 3: each root against the other; the equally right direct root
  # now wins, where without the cost the bonus made delegation win.
  assert out.advantage[0] == pytest.approx(root_delegating - 1.0)
  assert out.advantage[0] < 0
  free = credit.assign_credit(_group(), credit.CreditConfig(child_bonus=0.4))
  assert free.advantage[0] == pytest.approx(0.2)


def test_negative_costs_are_refused():
  with pytest.raises(ValueError, match='node_cost'):
    credit.CreditConfig(node_cost=-1.0)
  with pytest.raises(ValueError, match='token_cost'):
    credit.CreditConfig(token_cost=-0.1)
