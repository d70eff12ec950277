"""Call trees: node and tree records, and their JSON-lines form.

A node is one training sequence: its prompt, its sampled steps (loss mask
1, with the sampler's log-probs) and the text injected between them (loss
mask 0). Node ids are assigned in path order (pre-order: a parent before
its children, children in spawn order) once a tree is finished, so the
same tree gets the same ids however its nodes were scheduled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import dataclasses
import json
from typing import Any, TextIO

from rao_jax.agent import env as env_lib

PENDING, RUNNING, WAITING = 'pending', 'running', 'waiting'
DONE, FAILED, ABORTED = 'done', 'failed', 'aborted'
TERMINAL = (DONE, FAILED, ABORTED)


@dataclasses.dataclass
class Node:
  """One agent instance of a call tree.

  Attributes:
    tree_id: id of the tree it belongs to.
    node_id: index in its tree's `nodes` (pre-order of paths).
    parent: node_id of its parent; None for the root.
    depth: 0 for the root.
    path: child indices from the root; a node's children are numbered over
      all its spawn steps, in order.
    spec: task, data and format it was given.
    tokens: token ids of its whole sequence (prompt, steps, injections).
    loss_mask: 1 on tokens the policy sampled, 0 on injected tokens.
    logprobs: the sampler's log-prob of each sampled token (0 elsewhere).
    policy_version: version of the policy that sampled its tokens.
    children: per step, the node ids of the children spawned at that step
      (empty for a step that did not spawn).
    status: pending -> running -> waiting -> running ... -> done | failed |
      aborted.
    answer: its answer text (done), or its failure text (failed, aborted).
    success: score in [0, 1]; None where the sub-task cannot be checked.
    reward: the local reward (filled by rl).
    advantage: the advantage (filled by rl).
    num_steps: steps it took.
  """

  tree_id: int
  node_id: int
  parent: int | None
  depth: int
  path: tuple[int, ...]
  spec: env_lib.NodeSpec
  tokens: list[int] = dataclasses.field(default_factory=list)
  loss_mask: list[int] = dataclasses.field(default_factory=list)
  logprobs: list[float] = dataclasses.field(default_factory=list)
  policy_version: int = 0
  children: list[list[int]] = dataclasses.field(default_factory=list)
  status: str = PENDING
  answer: str | None = None
  success: float | None = None
  reward: float | None = None
  advantage: float | None = None
  num_steps: int = 0

  def to_json(self) -> dict[str, Any]:
    record = dataclasses.asdict(self)
    record['path'] = list(self.path)
    return record

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> Node:
    record = dict(record)
    record['spec'] = env_lib.NodeSpec(**record['spec'])
    record['path'] = tuple(record['path'])
    return cls(**record)


@dataclasses.dataclass
class Tree:
  """One rollout of a root task.

  Attributes:
    tree_id: caller-given id (e.g. index in the batch).
    seed: the seed its node keys derive from.
    nodes: its nodes, `nodes[0]` the root, in pre-order of paths.
    status: the root's status once finished; 'aborted' when a tree budget
      stopped it.
    group: the id of its group (trees of the same root task), for rl.
  """

  tree_id: int
  seed: int
  nodes: list[Node] = dataclasses.field(default_factory=list)
  status: str = PENDING
  group: int = 0

  @property
  def root(self) -> Node:
    return self.nodes[0]

  @property
  def num_tokens(self) -> int:
    return sum(len(n.tokens) for n in self.nodes)

  def to_json(self) -> dict[str, Any]:
    return dict(tree_id=self.tree_id, seed=self.seed, status=self.status,
                group=self.group, nodes=[n.to_json() for n in self.nodes])

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> Tree:
    return cls(tree_id=record['tree_id'], seed=record['seed'],
               status=record['status'], group=record.get('group', 0),
               nodes=[Node.from_json(n) for n in record['nodes']])


def renumber(tree: Tree) -> None:
  """Sorts nodes in pre-order of their paths and rewrites every id."""
  tree.nodes.sort(key=lambda n: n.path)
  new_id = {n.node_id: i for i, n in enumerate(tree.nodes)}
  for node in tree.nodes:
    node.node_id = new_id[node.node_id]
    node.parent = None if node.parent is None else new_id[node.parent]
    node.children = [[new_id[c] for c in step] for step in node.children]


def write_jsonl(trees: Iterable[Tree], file: TextIO) -> None:
  """Writes one tree per line."""
  for tree in trees:
    file.write(json.dumps(tree.to_json(), ensure_ascii=False) + '\n')


def read_jsonl(file: TextIO) -> Iterator[Tree]:
  """Reads trees written by `write_jsonl`."""
  for line in file:
    if line.strip():
      yield Tree.from_json(json.loads(line))


def save(trees: Iterable[Tree], path: str) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    write_jsonl(trees, f)


def load(path: str) -> list[Tree]:
  with open(path, encoding='utf-8') as f:
    return list(read_jsonl(f))
