"""Rollout metrics over a batch of call trees: what the paper reports."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from rao_jax.agent import tree as tree_lib
from rao_jax.rl import credit as credit_lib


def root_scores(trees: Sequence[tree_lib.Tree]) -> list[float]:
  """Each tree's root success: its score when the root finished, else 0
  (an aborted or unfinished root answered nothing)."""
  return [(t.root.success or 0.0) if t.root.status == tree_lib.DONE else 0.0
          for t in trees]


def root_exact_scores(trees: Sequence[tree_lib.Tree]) -> list[float]:
  """Each tree's exact match: 1.0 where the root finished with a full
  score, else 0.0 (partial credit, e.g. a number off by one, counts 0)."""
  return [float(score == 1.0) for score in root_scores(trees)]


def tree_metrics(trees: Sequence[tree_lib.Tree],
                 node_credit: credit_lib.NodeCredit | None = None
                 ) -> dict[str, float]:
  """Success, shape and delegation statistics of finished trees.

  Per-depth success is the per-call (per-node) success that, compounded,
  gives root success; report it beside the root's.
  """
  out: dict[str, float] = {
      'root_success': float(np.mean(root_scores(trees))),
      # Exact match: a full score (partial credit, e.g. a number off by
      # one, counts 0 here).
      'root_exact': float(np.mean(root_exact_scores(trees))),
      'nodes_per_tree': float(np.mean([len(t.nodes) for t in trees])),
      'max_depth_per_tree': float(np.mean([
          max(n.depth for n in t.nodes) for t in trees])),
      'tokens_per_tree': float(np.mean([t.num_tokens for t in trees])),
      'sampled_tokens_per_tree': float(np.mean([
          sum(sum(n.loss_mask) for n in t.nodes) for t in trees])),
      'aborted_share': float(np.mean([t.status == tree_lib.ABORTED
                                      for t in trees])),
  }
  spawn_steps = [len(step) for t in trees for n in t.nodes
                 for step in n.children if step]
  out['spawn_steps_per_tree'] = len(spawn_steps) / len(trees)
  out['children_per_spawn'] = float(np.mean(spawn_steps)) if spawn_steps else 0.
  out['parallel_spawn_share'] = (
      float(np.mean([c > 1 for c in spawn_steps])) if spawn_steps else 0.0)
  by_depth = defaultdict(list)
  status_by_depth = defaultdict(list)
  for t in trees:
    for n in t.nodes:
      status_by_depth[n.depth].append(n.status == tree_lib.DONE)
      if n.success is not None:
        by_depth[n.depth].append(n.success)
  for depth, values in sorted(by_depth.items()):
    out[f'success/depth{depth}'] = float(np.mean(values))
  for depth, values in sorted(status_by_depth.items()):
    out[f'done_share/depth{depth}'] = float(np.mean(values))
  if node_credit is not None:
    out['reward_root'] = float(np.mean(node_credit.reward[
        node_credit.depth == 0]))
    out['advantage_mean'] = float(np.mean(node_credit.advantage))
    out['advantage_std'] = float(np.std(node_credit.advantage))
    out['advantage_abs_max'] = float(np.max(np.abs(node_credit.advantage)))
  return out
