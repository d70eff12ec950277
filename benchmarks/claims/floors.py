"""What a held-out score means: exact match, and the floors beside it.

Documents score numbers with Oolong's partial credit 0.75 ** |error|, so
an answer that read nothing still earns much of it. Every claims table
therefore reports, on the same tasks:

  exact       the share of roots whose answer scores 1 (the task's own
              verifier, `rl.metrics.root_exact_scores`: a root that did
              not finish scores 0);
  zero floor  the credit of answering `0` to every task;
  blind floor the credit of the best answer from what a root sees
              without reading a record: its question (kind and
              arguments; by construction every label and speaker is
              alike, so the kind is what matters) and the record count
              its handle shows. For each (kind, records) cell of the
              *training* distribution (`BLIND_SAMPLES` examples of the
              level's train split, drawn past its stored end where it
              holds fewer: `heldout.generate`) the answer with the
              highest mean credit over the cell (among its most
              frequent gold answers and 0), scored by the task's
              verifier; a cell with no training example falls back to
              the kind's best answer. Fit on training examples and
              scored on held-out ones, it is a guesser a policy could
              have learned, not one fit to the test set.

Floors are per task, so `stats.verdict` pairs them with an arm's scores.
"""

from __future__ import annotations

from collections import Counter
from collections import defaultdict
from collections.abc import Mapping, Sequence
import json

import numpy as np

import heldout
from rao_jax.agent import tree as tree_lib
from rao_jax.rl import metrics as metrics_lib
from rao_jax.tasks import registry

# Training examples the blind guesser is fit on: ~15 per (kind, records)
# cell of `mixed` (4 kinds x 31 lengths) at the least.
BLIND_SAMPLES = 4096


def root_scores(trees: Sequence[tree_lib.Tree]) -> list[float]:
  """Partial credit per root (the project's reader)."""
  return metrics_lib.root_scores(trees)


def root_exact(trees: Sequence[tree_lib.Tree]) -> list[float]:
  """1.0 where the root's answer is exact (a full score), else 0.0 (the
  project's reader)."""
  return metrics_lib.root_exact_scores(trees)


def blind_key(example: Mapping[str, str]) -> tuple[str, int | None]:
  """What a root sees without reading: its question's kind and, where the
  family records it, the input's length in records."""
  world = json.loads(example.get('world') or '{}')
  records = world.get('records') if isinstance(world, dict) else None
  return example['task'].split(' ', 1)[0], records


def score(task: registry.Task, example: Mapping[str, str],
          answer: str) -> float:
  """The task verifier's credit for `answer` as the root's answer."""
  env = task.make_env(example)
  return float(env.score_root(answer, env.root_state()))


# Candidate answers per cell: its most frequent gold answers (a family
# whose answers are all distinct, e.g. crafting's, would otherwise cost
# cell size squared verifier calls).
MAX_CANDIDATES = 32


def _best(task: registry.Task, cell: Sequence[Mapping[str, str]]) -> str:
  """The answer, among the cell's `MAX_CANDIDATES` most frequent gold
  answers and '0', with the highest mean credit over the cell (the first
  in sorted order on ties)."""
  counts = Counter(ex['answer'] for ex in cell)
  candidates = sorted({'0', *[a for a, _ in counts.most_common(
      MAX_CANDIDATES)]})
  credit = [np.mean([score(task, ex, c) for ex in cell]) for c in candidates]
  return candidates[int(np.argmax(credit))]


class BlindGuess:
  """The best answer per `blind_key`, fit on training examples."""

  def __init__(self, task: registry.Task,
               train: Sequence[Mapping[str, str]]):
    self.task = task
    cells, kinds = defaultdict(list), defaultdict(list)
    for example in train:
      key = blind_key(example)
      cells[key].append(example)
      kinds[key[0]].append(example)
    self.by_cell = {key: _best(task, cell) for key, cell in cells.items()}
    self.by_kind = {kind: _best(task, cell) for kind, cell in kinds.items()}

  def answer(self, example: Mapping[str, str]) -> str:
    key = blind_key(example)
    if key in self.by_cell:
      return self.by_cell[key]
    return self.by_kind.get(key[0], '0')


# (task, level, data_dir, kinds) -> its guesser: an experiment's tables
# (greedy, sampled) floor the same levels, and drawing 4,096 examples of a
# 16-window level takes seconds.
_GUESSERS: dict[tuple[str, str, str, tuple[str, ...]], BlindGuess] = {}


def blind_guess(task: registry.Task, level: str, data_dir: str,
                kinds: Sequence[str] = ()) -> BlindGuess:
  """The blind guesser of `level`, fit on `BLIND_SAMPLES` of its train
  split (of `kinds`); fit once a process."""
  key = (task.name, level, data_dir, tuple(kinds))
  if key not in _GUESSERS:
    train = heldout.examples(task, level, data_dir, BLIND_SAMPLES, kinds,
                             split='train')
    _GUESSERS[key] = BlindGuess(task, train)
  return _GUESSERS[key]


def floors(task: registry.Task, examples: Sequence[Mapping[str, str]],
           guess: BlindGuess) -> dict[str, list[float]]:
  """Per task: 'zero' and 'blind' credit, and 'blind_exact'."""
  blind = [score(task, ex, guess.answer(ex)) for ex in examples]
  return {'zero': [score(task, ex, '0') for ex in examples],
          'blind': blind,
          'blind_exact': [float(s >= 1.0) for s in blind]}
