"""Packing node sequences into fixed `[rows, length]` training batches.

Every node of every tree is one sequence. Sequences are packed first-fit
decreasing into rows of a bucketed length, with segment ids (attention
never crosses sequences) and per-segment positions, then split into
minibatches of a fixed row count. First-fit decreasing leaves the long
sequences (a tree's upper nodes) in the first rows and the short ones
(leaves) in the last, so rows are shuffled before the split: otherwise each
optimiser update would see one kind of node only. Shapes come from a small
set of buckets, so the train step compiles a bounded number of programs.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np

# Per-token fields of a packed batch, all [rows, length].
FIELDS = ('tokens', 'positions', 'segment_ids', 'loss_mask',
          'sampler_logprobs', 'advantages', 'weights', 'sequence_ids')


# eq=False: comparing arrays field by field has no single truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class TrainSequence:
  """One node as a training sequence.

  Attributes:
    tokens: [n] token ids (prompt, sampled steps, injections).
    loss_mask: [n] 1 on tokens the policy sampled, else 0.
    sampler_logprobs: [n] the sampler's log-prob of each sampled token.
    advantage: the node's advantage A(X).
    weight: its depth weight w_d (Eq. 4).
  """

  tokens: np.ndarray
  loss_mask: np.ndarray
  sampler_logprobs: np.ndarray
  advantage: float = 0.0
  weight: float = 1.0

  def __len__(self) -> int:
    return len(self.tokens)


@dataclasses.dataclass(frozen=True)
class PackStats:
  num_sequences: int
  num_rows: int
  row_length: int
  padding_fraction: float  # padded tokens / all tokens of the batches


def bucket_length(longest: int, buckets: Sequence[int]) -> int:
  """Smallest bucket that holds `longest` tokens."""
  for length in sorted(buckets):
    if longest <= length:
      return length
  raise ValueError(f'a sequence of {longest} tokens exceeds the largest '
                   f'packing bucket {max(buckets)} (rl.pack_lengths)')


def first_fit_decreasing(lengths: Sequence[int], row_length: int) -> list[list[int]]:
  """Assigns sequence indices to rows: longest first, each to the first row
  with room. Returns the rows as lists of indices."""
  order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
  rows: list[list[int]] = []
  free: list[int] = []
  for i in order:
    n = lengths[i]
    if n > row_length:
      raise ValueError(f'sequence {i} has {n} tokens, rows hold {row_length}')
    for r, room in enumerate(free):
      if n <= room:
        rows[r].append(i)
        free[r] -= n
        break
    else:
      rows.append([i])
      free.append(row_length - n)
  return rows


def pack(sequences: Sequence[TrainSequence], *, buckets: Sequence[int],
         rows_per_batch: int, rng: np.random.Generator | None = None
         ) -> tuple[list[dict[str, np.ndarray]], PackStats]:
  """Packs sequences into minibatches of `[rows_per_batch, bucket]` arrays.

  Args:
    sequences: the batch's node sequences.
    buckets: allowed row lengths; the smallest that holds the longest
      sequence is used.
    rows_per_batch: rows of each minibatch; the last one is padded with
      empty rows (segment 0, loss mask 0).
    rng: shuffles the packed rows across minibatches (None: packing order).

  Returns:
    The minibatches (dicts of FIELDS; `sequence_ids` numbers sequences from
    1 across the whole batch, 0 on padding) and packing statistics.
  """
  if not sequences:
    raise ValueError('nothing to pack: no sequences')
  if rows_per_batch <= 0:
    raise ValueError(f'rl.rows_per_batch={rows_per_batch}: must be > 0')
  lengths = [len(s) for s in sequences]
  row_length = bucket_length(max(lengths), buckets)
  rows = first_fit_decreasing(lengths, row_length)
  if rng is not None:
    rows = [rows[r] for r in rng.permutation(len(rows))]
  num_rows = -(-len(rows) // rows_per_batch) * rows_per_batch
  shape = (num_rows, row_length)
  out = {name: np.zeros(shape, np.float32 if name in (
      'sampler_logprobs', 'advantages', 'weights') else np.int32)
         for name in FIELDS}
  for r, members in enumerate(rows):
    start = 0
    for segment, i in enumerate(members, start=1):
      seq = sequences[i]
      span = slice(start, start + len(seq))
      out['tokens'][r, span] = seq.tokens
      out['positions'][r, span] = np.arange(len(seq))
      out['segment_ids'][r, span] = segment
      out['loss_mask'][r, span] = seq.loss_mask
      out['sampler_logprobs'][r, span] = seq.sampler_logprobs
      out['advantages'][r, span] = seq.advantage
      out['weights'][r, span] = seq.weight
      out['sequence_ids'][r, span] = i + 1
      start += len(seq)
  batches = [{k: v[b:b + rows_per_batch] for k, v in out.items()}
             for b in range(0, num_rows, rows_per_batch)]
  stats = PackStats(num_sequences=len(sequences), num_rows=len(rows),
                    row_length=row_length,
                    padding_fraction=1.0 - sum(lengths) / (num_rows * row_length))
  return batches, stats


def sequences_from_trees(trees, node_credit) -> list[TrainSequence]:
  """Every node of every tree as a training sequence, in credit order.

  Args:
    trees: finished `agent.tree.Tree`s.
    node_credit: `credit.assign_credit(trees, ...)` for the same trees.
  """
  sequences = []
  for t, node_id, advantage, weight in zip(
      node_credit.tree_index, node_credit.node_id, node_credit.advantage,
      node_credit.weight):
    node = trees[t].nodes[node_id]
    sequences.append(TrainSequence(
        tokens=np.asarray(node.tokens, np.int32),
        loss_mask=np.asarray(node.loss_mask, np.int32),
        sampler_logprobs=np.asarray(node.logprobs, np.float32),
        advantage=float(advantage), weight=float(weight)))
  return sequences


def demonstration_sequences(trees) -> list[TrainSequence]:
  """Every node of demonstration trees as an SFT sequence: loss on the
  solver's tokens, no advantage (the SFT loss reads only the weights)."""
  return [TrainSequence(np.asarray(n.tokens), np.asarray(n.loss_mask),
                        np.zeros(len(n.tokens), np.float32))
          for t in trees for n in t.nodes]
