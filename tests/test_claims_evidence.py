"""The claims' statistics and floors, against NumPy references.

Paired bootstrap intervals (benchmarks/claims/stats.py) against a plain
loop over resampled tasks; the blind-guess floor (floors.py) against a
brute-force search over answers; generated held-out tasks (heldout.py)
against the stored split they extend.
"""

import pathlib
import random
import sys

import numpy as np
import pytest

CLAIMS = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'claims'
sys.path.insert(0, str(CLAIMS))

# pylint: disable=g-import-not-at-top,wrong-import-position
import floors  # noqa: E402
import heldout  # noqa: E402
import stats  # noqa: E402
from rao_jax.tasks import documents  # noqa: E402
from rao_jax.tasks import registry  # noqa: E402
from rao_jax.training import data as data_lib  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position


def _reference_interval(values, seed):
  """A 20-line percentile bootstrap: resample tasks, mean, 2.5/97.5%."""
  values = np.asarray(values, np.float64)
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(values), size=(stats.RESAMPLES, len(values)))
  means = np.array([values[row].mean() for row in idx])
  return values.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


def test_bootstrap_matches_the_reference_and_its_width():
  rng = np.random.default_rng(1)
  values = (rng.random(256) < 0.5).astype(float)
  got = stats.bootstrap(values, seed=3)
  np.testing.assert_allclose((got.mean, got.low, got.high),
                             _reference_interval(values, 3))
  # A share near 0.5 over 256 tasks: +-1.96 * sqrt(0.25 / 256) = +-0.061.
  assert got.high - got.low == pytest.approx(0.1225, abs=0.02)
  assert got.n == 256 and got.low < got.mean < got.high


def test_paired_arms_share_their_draws():
  rng = np.random.default_rng(2)
  a = rng.random(64)
  b = a + 0.01  # the same tasks, one slightly better everywhere
  both = stats.paired({'a': a, 'b': b}, seed=5)
  np.testing.assert_allclose(both['b'].low - both['a'].low, 0.01)
  # Unpaired intervals overlap, the paired difference does not reach 0.
  assert both['b'].low < both['a'].high
  gap = stats.difference(a, b, seed=5)
  assert gap.low == pytest.approx(0.01) and gap.high == pytest.approx(0.01)
  with pytest.raises(ValueError, match='task counts'):
    stats.paired({'a': a, 'b': b[:3]})


def test_verdicts_need_the_floor_and_the_interval():
  rng = np.random.default_rng(4)
  floor = (rng.random(256) < 0.3).astype(float)
  guessing = floor.copy()
  assert stats.verdict(guessing, floor) == 'at floor'
  good = np.maximum(floor, (rng.random(256) < 0.8).astype(float))
  assert stats.verdict(good, floor) == 'holds'
  noisy_peer = np.where(rng.random(256) < 0.05, 1 - good, good)
  assert stats.verdict(good, floor, noisy_peer) == 'within interval'
  assert stats.verdict(good, floor, np.ones(256)) == 'reversed'
  assert stats.verdict(good, floor, floor) == 'holds'
  assert stats.per_task([[1, 0], [0, 0]]).tolist() == [0.5, 0.0]


def _example(kind, arg, n, gold):
  return {'task': f'{kind} {arg}', 'answer': str(gold), 'format': '',
          'data': 'kim red 1\n' * n, 'world': f'{{"records": {n}}}'}


def test_blind_guess_is_the_best_answer_per_kind_and_length():
  task = registry.get('documents')
  rng = random.Random(0)
  train = [_example('count', 'red', n, rng.randint(0, n // 2))
           for n in (4, 20) for _ in range(40)]
  guess = floors.BlindGuess(task, train)
  for n in (4, 20):
    golds = np.array([int(e['answer']) for e in train
                      if floors.blind_key(e)[1] == n])
    # Brute force over the cell's answers and 0: mean 0.75 ** |error|.
    credit = {c: np.mean(0.75 ** np.abs(golds - c))
              for c in set(golds) | {0}}
    best = max(credit.values())
    got = int(guess.answer(_example('count', 'tan', n, 0)))
    assert credit[got] == pytest.approx(best)
  # A length training never showed falls back to the kind's best.
  assert guess.answer(_example('count', 'red', 9, 0)) == guess.by_kind[
      'count']
  out = floors.floors(task, [_example('count', 'red', 4, 0)], guess)
  assert out['zero'] == [1.0]
  assert out['blind'][0] == pytest.approx(0.75 ** int(guess.answer(
      _example('count', 'red', 4, 0))))


def test_generated_tasks_extend_the_stored_split(tmp_path):
  task = registry.get('documents')
  stored = data_lib.eval_examples(task, 'window1', str(tmp_path),
                                  split='test', num_examples=1000)
  generated = heldout.generate(task, 'window1', 'test')
  first = [next(generated) for _ in range(len(stored))]
  # The same examples (tfds stores them shuffled by key).
  assert {e['id']: e['data'] for e in first} == {
      e['id']: e['data'] for e in stored}
  more = heldout.examples(task, 'window1', str(tmp_path), 150,
                          ('count', 'sum'))
  assert len(more) == 150 and len({e['id'] for e in more}) == 150
  assert all(e['task'].split()[0] in ('count', 'sum') for e in more)
  assert {e['id'] for e in more} >= {e['id'] for e in stored
                                      if data_lib.has_kind(e, ('count',
                                                               'sum'))}
  for e in more:
    kind, args = documents.parse_task(e['task'])
    assert e['answer'] == documents.solve(kind, args, e['data'])
