"""Credit assignment over call trees: the paper's Eqs. 1, 3 and 4.

For a batch of finished trees grouped by root task:
  success s(X)  dense: the node's own sub-task score where the task can check
                it, else the root's; sparse: the root's success copied down.
                Failed and aborted nodes score 0 (they still train).
  reward (Eq.1) R(X) = s(X) + lambda * mean_{c in children(X)} s(c)
                (no bonus for a leaf), less an optional cost of what X
                launched: - kappa_node * |descendants(X)|
                          - kappa_token * tokens sampled in X's subtree.
                The paper's Eq. 1 has no cost (kappa = 0, the default).
                lambda pays a parent for its children's success, so a
                delegating root earns up to lambda more than an equally
                right direct one: it is a delegation bonus, not a
                neutral weight; a cost lets delegation pay only where
                it raises s(X) by more than it costs.
  baseline (Eq.3) b_{-g} = mean_{g' != g} R_root(g') over the group's trees,
                the same for every node of tree g: A(X) = R(X) - b_{-g}.
                Variant 'leave_one_out_depth': b(X) = mean of R(Y) over the
                group's other nodes Y at X's depth (for roots, Eq. 3 itself;
                a node with no peer at its depth gets advantage 0).
                Variant 'leave_one_out_task': b(X) = mean of R(Y) over the
                group's other nodes Y given X's exact sub-task (task, data,
                format): each sub-task's samples form their own GRPO group;
                a node whose sub-task no other node got falls back to its
                depth peers.
                Variant 'leave_one_out_same_task': the same without the
                fallback: a node whose sub-task no other node got gets
                advantage 0, so every comparison is between samples of
                one sub-task.
                Variant 'leave_one_out_results': b(X) = mean of R(Y) over the
                group's other nodes Y given X's sub-task whose children
                returned the same answers as X's; a node with no such peer
                gets advantage 0.
  weights (Eq.4) w_d = alpha / N_d, N_d the batch's depth-d node count and
                alpha = N / (number of distinct depths), so the weights sum
                to the node count N.

Pure functions over `Tree` records (`rl` never sees how they were sampled);
the results are written into each node's `reward` and `advantage`.
"""

from __future__ import annotations

from collections import Counter
from collections import defaultdict
from collections.abc import Sequence
import dataclasses

import numpy as np

from rao_jax.agent import tree as tree_lib
from rao_jax.rl import registry

SUCCESS_MODES = ('dense', 'sparse')
# Name -> baseline function (trees, rows, rewards, config) -> per-node
# (baseline, scale); registered below, in the order errors list them.
BASELINES = registry.Registry('rl.credit.baseline')


@dataclasses.dataclass(frozen=True, kw_only=True)
class CreditConfig:
  """How rewards and advantages are assigned (each switch an ablation).

  Attributes:
    success: 'dense' (own sub-task verifier) or 'sparse' (root copied down).
    child_bonus: lambda of Eq. 1 (paper: 0.4 on document aggregation, 0
      elsewhere).
    baseline: 'leave_one_out' (Eq. 3), 'leave_one_out_depth' (each node
      against the group's other nodes at its depth: with dense success a
      node's reward and a root's can be far apart, e.g. easy leaves in
      trees whose roots mostly fail, and a root-level baseline leaves the
      node's advantages all of one sign), 'leave_one_out_task' (each node
      against the group's other nodes given the same sub-task, else its
      depth peers: a sub-task every sample answers alike gets advantage 0,
      where the depth baseline would compare it with other sub-tasks),
      'leave_one_out_same_task' (the same, no fallback: a node is never
      compared with other sub-tasks, whose length alone can make them
      easier, so only choices made on the same input earn advantage),
      'leave_one_out_results' (each node against the group's other nodes
      given the same sub-task whose children returned the same answers, no
      fallback: a parent that combined wrong results from its children
      correctly is not blamed for them, and its children take the credit
      for their own answers), 'group_mean' (includes the tree itself) or
      'none'.
    depth_weighting: Eq. 4 on or off (off: every node weighs 1).
    normalize_std: divide advantages by the std of the rewards the baseline
      averages (GRPO's normalisation; off in the paper).
    exact_success: a node succeeds (1) only with a full score, else 0: a
      task's partial credit (Oolong's 0.75^|error| on numbers) still grades
      evaluation, but a near miss earns nothing in training.
    node_cost: kappa_node, subtracted from R(X) per node below X (the
      compute X launched; 0 in the paper).
    token_cost: kappa_token, subtracted from R(X) per token sampled by X
      and the nodes below it (0 in the paper).
  """
  # Frozen and kw-only, as every config section: built once from the run's
  # config and hashable, so a jitted function could take it as static.

  success: str = 'dense'
  child_bonus: float = 0.0
  baseline: str = 'leave_one_out'
  depth_weighting: bool = True
  normalize_std: bool = False
  exact_success: bool = False
  node_cost: float = 0.0
  token_cost: float = 0.0

  def __post_init__(self):
    if self.success not in SUCCESS_MODES:
      raise ValueError(f'rl.credit.success={self.success!r}: expected one of '
                       f'{SUCCESS_MODES}')
    BASELINES.check(self.baseline)
    if self.child_bonus < 0:
      raise ValueError(f'rl.credit.child_bonus={self.child_bonus}: must be '
                       '>= 0')
    for name in ('node_cost', 'token_cost'):
      if getattr(self, name) < 0:
        raise ValueError(f'rl.credit.{name}={getattr(self, name)}: must be '
                         '>= 0')


@dataclasses.dataclass(frozen=True)
class NodeCredit:
  """Flat per-node results, in batch order (trees in order, nodes by id)."""

  tree_index: np.ndarray  # [num_nodes] int
  node_id: np.ndarray  # [num_nodes] int
  depth: np.ndarray  # [num_nodes] int
  success: np.ndarray  # [num_nodes] float
  reward: np.ndarray  # [num_nodes] float
  advantage: np.ndarray  # [num_nodes] float
  weight: np.ndarray  # [num_nodes] float, Eq. 4


def node_success(node: tree_lib.Node, root_success: float, mode: str,
                 exact: bool = False) -> float:
  """s(X): 0 for failed/aborted nodes, else dense or sparse success (with
  `exact`, 1 for a full score and 0 below it)."""
  if node.status != tree_lib.DONE:
    return 0.0
  if node.parent is None:
    return root_success
  if mode == 'dense' and node.success is not None:
    return _graded(node.success, exact)
  return root_success


def _graded(score: float, exact: bool) -> float:
  """The score, or with `exact` 1 for a full score and 0 below it."""
  return float(score >= 1.0) if exact else float(score)


def _root_success(tree: tree_lib.Tree, exact: bool) -> float:
  root = tree.root
  if root.status != tree_lib.DONE or root.success is None:
    return 0.0
  return _graded(root.success, exact)


def assign_credit(trees: Sequence[tree_lib.Tree],
                  config: CreditConfig) -> NodeCredit:
  """Computes success, reward, advantage and depth weight of every node.

  Also writes `reward` and `advantage` into the nodes. Trees are grouped by
  `tree.group`; with a leave-one-out baseline every group needs >= 2 trees.
  """
  rows = []  # (tree index, node, success)
  rewards: list[float] = []
  root_reward_of_tree: list[float] = []
  for t, tree in enumerate(trees):
    root_s = _root_success(tree, config.exact_success)
    success = {n.node_id: node_success(n, root_s, config.success,
                                       config.exact_success)
               for n in tree.nodes}
    cost = launch_costs(tree, config.node_cost, config.token_cost)
    for node in tree.nodes:
      child_ids = [c for step in node.children for c in step]
      bonus = (config.child_bonus * float(np.mean([success[c] for c in child_ids]))
               if child_ids else 0.0)
      reward = success[node.node_id] + bonus - cost[node.node_id]
      node.reward = reward
      rows.append((t, node, success[node.node_id]))
      rewards.append(reward)
      if node.parent is None:
        root_reward_of_tree.append(reward)
    if len(root_reward_of_tree) != t + 1:
      raise ValueError(f'tree {tree.tree_id} has no root node')

  if is_leave_one_out(config.baseline):
    _check_group_sizes(trees)
  baseline, scale = BASELINES.get(config.baseline)(
      trees, rows, np.asarray(rewards, np.float64), config)
  advantages = (np.asarray(rewards, np.float64) - baseline) / scale
  for (_, node, _), advantage in zip(rows, advantages):
    node.advantage = float(advantage)

  depth = np.array([node.depth for _, node, _ in rows], np.int64)
  return NodeCredit(
      tree_index=np.array([t for t, _, _ in rows], np.int64),
      node_id=np.array([node.node_id for _, node, _ in rows], np.int64),
      depth=depth,
      success=np.array([s for _, _, s in rows], np.float64),
      reward=np.array(rewards, np.float64),
      advantage=advantages,
      weight=depth_weights(depth) if config.depth_weighting else
      np.ones(len(rows)))


def launch_costs(tree: tree_lib.Tree, node_cost: float,
                 token_cost: float) -> dict[int, float]:
  """node id -> node_cost * (nodes below it) + token_cost * (tokens
  sampled in its subtree, its own included); zeros when both are 0."""
  if not node_cost and not token_cost:
    return {n.node_id: 0.0 for n in tree.nodes}
  by_id = {n.node_id: n for n in tree.nodes}
  totals: dict[int, tuple[int, int]] = {}  # id -> (descendants, tokens)

  def visit(node_id: int) -> tuple[int, int]:
    node = by_id[node_id]
    below, tokens = 0, int(sum(node.loss_mask))
    for step in node.children:
      for child in step:
        if child in by_id:  # a child a budget aborted may be missing
          child_below, child_tokens = visit(child)
          below, tokens = below + 1 + child_below, tokens + child_tokens
    totals[node_id] = (below, tokens)
    return totals[node_id]

  for node in tree.nodes:
    if node.node_id not in totals:
      visit(node.node_id)
  return {i: node_cost * below + token_cost * tokens
          for i, (below, tokens) in totals.items()}


def _check_group_sizes(trees) -> None:
  sizes = Counter(tree.group for tree in trees)
  for group, size in sizes.items():
    if size < 2:
      raise ValueError(f'group {group} has {size} tree: the leave-one-out '
                       'baseline needs group_size >= 2')


def _leave_one_out_mean(r: np.ndarray) -> np.ndarray:
  """Entry i: the mean of r without r[i] (len(r) >= 2).

  Computed on offsets from r[0], so peers with equal rewards get a baseline
  equal to their reward and an advantage of exactly 0 (a plain sum would
  leave a rounding residue, and the trainer skips only exact zeros).
  """
  offsets = r - r[0]
  return r[0] + (offsets.sum() - offsets) / (len(r) - 1)


def is_leave_one_out(baseline: str) -> bool:
  """Whether the baseline leaves each node out of its own mean, so every
  group needs two trees at least."""
  return baseline.startswith('leave_one_out')


# ------------------------------------------------------------- baselines
#
# Each returns, per row (node), the baseline its reward is compared with and
# the scale its advantage is divided by (1, or the std of the rewards the
# baseline averages under `normalize_std`).


def _per_tree(group_baseline):
  """A baseline over each group's root rewards, the same for every node of
  a tree (Eq. 3): `group_baseline(r)` maps a group's root rewards to one
  baseline per tree."""

  def baseline(trees, rows, rewards, config):
    root_reward = {t: r for (t, node, _), r in zip(rows, rewards)
                   if node.parent is None}
    groups: dict[int, list[int]] = defaultdict(list)
    for t, tree in enumerate(trees):
      groups[tree.group].append(t)
    baseline_of_tree = np.zeros(len(trees))
    scale_of_tree = np.ones(len(trees))
    for members in groups.values():
      r = np.array([root_reward[t] for t in members])
      baseline_of_tree[members] = group_baseline(r)
      if config.normalize_std:
        scale_of_tree[members] = r.std() + 1e-6
    tree_index = [t for t, _, _ in rows]
    return baseline_of_tree[tree_index], scale_of_tree[tree_index]

  return baseline


def _per_peers(*keys):
  """A baseline over each node's peers: the group's other nodes with the
  same `key(tree, node)`. With several keys, a later key's peer sets
  override an earlier one's (the earlier are the fallback). A node without
  peers gets (R, 1): advantage 0."""

  def baseline(trees, rows, rewards, config):
    value, scale = rewards.copy(), np.ones(len(rows))
    for key in keys:
      peers: dict[tuple, list[int]] = defaultdict(list)
      for i, (t, node, _) in enumerate(rows):
        peers[(trees[t].group, key(trees[t], node))].append(i)
      for members in peers.values():
        if len(members) < 2:
          continue
        r = rewards[members]
        value[members] = _leave_one_out_mean(r)
        scale[members] = r.std() + 1e-6 if config.normalize_std else 1.0
    return value, scale

  return baseline


def _by_depth(tree, node):
  del tree
  return node.depth


def _by_task(tree, node):
  del tree
  return node.spec


def _by_results(tree, node):
  """The sub-task and the answers its children returned."""
  return node.spec, tuple(tree.nodes[c].answer for step in node.children
                          for c in step)


def _group_mean(r: np.ndarray) -> np.ndarray:
  """The group's mean, the tree itself included (exact for ties)."""
  return r[0] + (r - r[0]).mean()


_register = lambda name, baseline: BASELINES.register(name)(baseline)
_register('leave_one_out', _per_tree(_leave_one_out_mean))  # Eq. 3
_register('leave_one_out_depth', _per_peers(_by_depth))
# The sub-task's peers, else (no other sample of it) its depth peers.
_register('leave_one_out_task', _per_peers(_by_depth, _by_task))
# The sub-task's peers only (none: advantage 0).
_register('leave_one_out_same_task', _per_peers(_by_task))
_register('leave_one_out_results', _per_peers(_by_results))
_register('group_mean', _per_tree(_group_mean))
_register('none', _per_tree(np.zeros_like))


def depth_weights(depth: np.ndarray) -> np.ndarray:
  """Eq. 4: w_d = alpha / N_d with the weights summing to the node count."""
  depths, counts = np.unique(depth, return_counts=True)
  alpha = len(depth) / len(depths)
  per_depth = dict(zip(depths.tolist(), (alpha / counts).tolist()))
  return np.array([per_depth[d] for d in depth.tolist()], np.float64)
