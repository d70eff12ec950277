"""Call trees: node and tree records, and their JSON-lines form.

A node is one training sequence: its prompt, its sampled steps (loss mask
1, with the sampler's log-probs) and the text injected between them (loss
mask 0). Node ids are assigned in path order (pre-order: a parent before
its children, children in spawn order) once a tree is finished, so the
same tree gets the same ids however its nodes were scheduled.

`turns` splits a node's sequence back into what the policy read and wrote
(prompt, its steps, observations, its children's results); `save` can store
them in each node record for readers without the tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import dataclasses
import itertools
import json
from typing import Any, TextIO

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib

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

  def to_json(self, tokenizer: tokenizer_lib.Tokenizer | None = None
              ) -> dict[str, Any]:
    """The node's JSON record; with a tokenizer, its `turns` too."""
    record = dataclasses.asdict(self)
    record['path'] = list(self.path)
    if tokenizer is not None:
      record['turns'] = turns(self, tokenizer)
    return record

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> Node:
    """The node of a record; a stored `turns` list is derived data and is
    dropped (`turns` recomputes it from the tokens)."""
    record = dict(record)
    record.pop('turns', None)
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

  def to_json(self, tokenizer: tokenizer_lib.Tokenizer | None = None
              ) -> dict[str, Any]:
    """The tree's JSON record; with a tokenizer, each node's `turns` too."""
    return dict(tree_id=self.tree_id, seed=self.seed, status=self.status,
                group=self.group,
                nodes=[n.to_json(tokenizer) for n in self.nodes])

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> Tree:
    return cls(tree_id=record['tree_id'], seed=record['seed'],
               status=record['status'], group=record.get('group', 0),
               nodes=[Node.from_json(n) for n in record['nodes']])


PROMPT, POLICY, RESULTS, OBSERVATION = (
    'prompt', 'policy', 'results', 'observation')
TURN_KINDS = (PROMPT, POLICY, RESULTS, OBSERVATION)


def turns(node: Node, tokenizer: tokenizer_lib.Tokenizer
          ) -> list[dict[str, Any]]:
  """The node's sequence as turns: maximal runs of equal loss mask.

  Args:
    node: a node record.
    tokenizer: the tokenizer its tokens were made with.

  Returns:
    One dict per run, in order: `kind` ('prompt' for a first injected run,
    'policy' for text the policy wrote (loss mask 1), 'results' for an
    injection of children's results, 'observation' for any other injection:
    tool output or an error), its decoded `text`, and its token span
    `start`, `end` ([start, end) of `node.tokens`).
  """
  if len(node.tokens) != len(node.loss_mask):
    raise ValueError(f'node {node.node_id} of tree {node.tree_id}: '
                     f'{len(node.tokens)} tokens but {len(node.loss_mask)} '
                     'loss-mask entries')
  found = []
  start = 0
  for sampled, run in itertools.groupby(node.loss_mask):
    end = start + len(list(run))
    text = tokenizer.decode(node.tokens[start:end])
    if sampled:
      kind = POLICY
    elif start == 0:
      kind = PROMPT
    elif _is_results(text):
      kind = RESULTS
    else:
      kind = OBSERVATION
    found.append(dict(kind=kind, text=text, start=start, end=end))
    start = end
  return found


def _is_results(text: str) -> bool:
  # `protocol.results`: <obs><result>..., after a chat template's turn
  # markers if any; in the python mode (`code_protocol.results`) the
  # block's output may come first. Injected output never holds a tag.
  at = text.find(protocol.OBS)
  return at >= 0 and protocol.RESULT in text[at + len(protocol.OBS):]


def renumber(tree: Tree) -> None:
  """Sorts nodes in pre-order of their paths and rewrites every id."""
  tree.nodes.sort(key=lambda n: n.path)
  new_id = {n.node_id: i for i, n in enumerate(tree.nodes)}
  for node in tree.nodes:
    node.node_id = new_id[node.node_id]
    node.parent = None if node.parent is None else new_id[node.parent]
    node.children = [[new_id[c] for c in step] for step in node.children]


def write_jsonl(trees: Iterable[Tree], file: TextIO,
                tokenizer: tokenizer_lib.Tokenizer | None = None) -> None:
  """Writes one tree per line (with each node's turns given a tokenizer)."""
  for tree in trees:
    file.write(json.dumps(tree.to_json(tokenizer), ensure_ascii=False) + '\n')


def read_jsonl(file: TextIO) -> Iterator[Tree]:
  """Reads trees written by `write_jsonl`."""
  for line in file:
    if line.strip():
      yield Tree.from_json(json.loads(line))


def save(trees: Iterable[Tree], path: str,
         tokenizer: tokenizer_lib.Tokenizer | None = None) -> None:
  """Writes trees as JSON lines; with a tokenizer, nodes carry `turns`."""
  with open(path, 'w', encoding='utf-8') as f:
    write_jsonl(trees, f, tokenizer)


def load(path: str) -> list[Tree]:
  """Reads the trees of a file written by `save`."""
  with open(path, encoding='utf-8') as f:
    return list(read_jsonl(f))
