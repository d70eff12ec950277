"""The worker pool's contract: namespaces, routing, determinism, cost."""

import pytest

from rao_jax import sandbox


@pytest.fixture(scope='module')
def pool():
  with sandbox.WorkerPool(sandbox.Limits(num_workers=2)) as p:
    yield p


def test_namespaces_persist_per_node_and_stay_apart(pool):
  pool.run('a', 'x = context * 2', 'ab')
  pool.run('b', 'x = 5', 'zz')
  assert pool.run('a', 'print(x)', 'ab').output == 'abab\n'
  assert pool.run('b', 'print(x, context)', 'zz').output == '5 zz\n'


def test_results_arrive_in_handle_order(pool):
  first = pool.run('p', "h = [spawn('t', c) for c in split(context, 2)]",
                   'l1\nl2\n')
  assert first.spawns == (('t', 'l1\n', ''), ('t', 'l2\n', ''))
  second = pool.run('p', 'print(wait(h), results)', '', ('3', '4'))
  assert second.output == "['3', '4'] ['3', '4']\n"
  early = pool.run('p', "g = spawn('t')\nwait(g)", '')
  assert 'has not run yet' in early.error and early.spawns == (('t', '', ''),)


def test_answer_ends_the_block(pool):
  result = pool.run('q', "answer(7)\nprint('after')", '')
  assert result.answer == '7' and result.output == ''


def test_drop_frees_the_namespace(pool):
  pool.run('d', 'y = 1', 'c')
  pool.drop('d')
  again = pool.run('d', 'print(context)\nprint(y)', 'fresh')
  assert again.output == 'fresh\n' and 'NameError' in again.error


def test_same_blocks_print_the_same_in_another_pool():
  # The hosts of a run replay the same rollouts: hash order and the
  # random module must not differ between worker processes.
  code = "import random\nprint({'kim', 'ana', 'zoe', 'bob'}, random.random())"
  outputs = []
  for _ in range(2):
    with sandbox.WorkerPool(sandbox.Limits(num_workers=1)) as pool:
      outputs.append(pool.run('n', code, '').output)
  assert outputs[0] == outputs[1]


def test_a_round_trip_is_milliseconds(pool):
  seconds = sorted(pool.run('t', 'pass', '').seconds for _ in range(200))
  assert seconds[100] < 0.01  # median under 10 ms even on a loaded CPU


def test_odd_text_is_an_error_never_a_crash(pool):
  for code in ('x = "\ud800"\nprint(x)', 'a\x00b', '\udcff = 1',
               'print("\u00e9\u4e2d")'):
    result = pool.run('odd', code, 'c\ud800')
    assert isinstance(result.output, str)
  assert pool.run('odd', 'print("\u00e9\u4e2d")', '').output == (
      '\u00e9\u4e2d\n')
