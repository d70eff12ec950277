"""Task datasets: tfds builds without tensorflow, determinism, levels, the
registry and the JSON-lines loader."""

import importlib.util
import json
import pathlib
import sys
import tempfile

import pytest
import tensorflow_datasets as tfds

from rao_jax import tasks
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import crafting
from rao_jax.tasks import documents
from rao_jax.tasks import jsonl
from rao_jax.tasks import multihop

FAMILY_LEVELS = [(name, level) for name in ('crafting', 'documents',
                                            'multihop')
                 for level in tasks.get(name).levels]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_tensorflow_is_not_importable():
  assert importlib.util.find_spec('tensorflow') is None
  assert 'tensorflow' not in sys.modules


@pytest.mark.parametrize('name,level', FAMILY_LEVELS)
def test_data_source_every_family_and_level(name, level, data_dir):
  task = tasks.get(name)
  builder_lib.build(task.tfds_name, level, data_dir)
  config = next(c for c in task.builder.BUILDER_CONFIGS if c.name == level)
  for split in builder_lib.SPLITS:
    source = tfds.data_source(f'{task.tfds_name}/{level}', data_dir=data_dir,
                              split=split, download=False)
    assert len(source) == getattr(config, f'num_{split}')
    example = builder_lib.decode(source[0])
    assert set(example) == set(builder_lib.FIELDS)
    assert isinstance(source[0]['task'], bytes)  # Text comes back as bytes
    assert example['level'] == level
    env = task.make_env(example)
    assert env.root_spec().task == example['task']
    assert env.root_spec().data == example['data']
    # The stored reference answer is right by the family's own verifier.
    assert env.score_root(example['answer'], env.root_state()) == (
        0.0 if name == 'crafting' else 1.0)  # crafting scores the state
  assert 'tensorflow' not in sys.modules


def _difficulty(name, example):
  world = json.loads(example['world'])
  if name == 'crafting':
    recipes = world['recipes']

    def tier(item):
      return 0 if item not in recipes else 1 + max(
          tier(i) for i, _ in recipes[item])

    return tier(world['target'])
  if name == 'multihop':
    return len(world['relations'])
  return len(example['data']) // 10  # documents: records


@pytest.mark.parametrize('name', ['crafting', 'documents', 'multihop'])
def test_levels_hold_their_difficulty(name, data_dir):
  task = tasks.get(name)
  for config in task.builder.BUILDER_CONFIGS:
    examples = builder_lib.load(task.tfds_name, config.name, 'train',
                                data_dir)
    values = [_difficulty(name, e) for e in examples]
    assert config.low <= min(values) and max(values) <= config.high
    assert len(set(values)) > 1  # the range is used, not one value


def _array_record_bytes(directory):
  files = sorted(pathlib.Path(directory).rglob('*.array_record*'))
  assert files
  return [(f.name, f.read_bytes()) for f in files]


def _build_with_seed(builder_cls, data_dir, seed):
  config = builder_lib.LevelConfig(name=f'seed{seed}', level='medium',
                                   low=3, high=5, seed=seed, version='1.0.0',
                                   num_train=8, num_validation=4, num_test=4)
  builder = builder_cls(config=config, data_dir=data_dir)
  builder.download_and_prepare(file_format='array_record')
  return _array_record_bytes(data_dir)


@pytest.mark.parametrize('builder_cls', [crafting.RaoCrafting,
                                         documents.RaoDocuments,
                                         multihop.RaoMultihop])
def test_same_seed_same_bytes(builder_cls, tmp_path):
  first = _build_with_seed(builder_cls, tmp_path / 'a', seed=3)
  again = _build_with_seed(builder_cls, tmp_path / 'b', seed=3)
  other = _build_with_seed(builder_cls, tmp_path / 'c', seed=4)
  assert first == again
  assert [b for _, b in first] != [b for _, b in other]


def test_building_a_level_leaves_nothing_in_the_temporary_directory(
    tmp_path, monkeypatch):
  scratch = tmp_path / 'tmp'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  builder_lib.build('rao_documents', 'easy', str(tmp_path / 'data'))
  assert builder_lib.load('rao_documents', 'easy', 'test',
                          str(tmp_path / 'data'), build_if_missing=False)
  assert not list(scratch.iterdir())


def test_documents_span_one_window_to_far_beyond():
  window = tasks.Window().max_tokens
  configs = {c.name: c for c in documents.RaoDocuments.BUILDER_CONFIGS}
  assert configs['easy'].high * 10 < window  # fits one node
  assert configs['hard'].high * 10 >= 16 * window
  assert configs['extreme'].high * 10 >= 32 * window
  # `crossover`: about as many inputs the direct reader holds as not.
  low, high = configs['crossover'].low, configs['crossover'].high
  inside = documents.DIRECT_RECORDS - low + 1
  assert abs(inside / (high - low + 1) - 0.5) < 0.05


def test_registry_and_splits():
  assert set(tasks.names()) >= {'crafting', 'documents', 'multihop'}
  for name in ('crafting', 'documents', 'multihop'):
    task = tasks.get(name)
    assert {'easy', 'medium', 'hard'} <= set(task.levels)
    assert tfds.builder_cls(task.tfds_name) is task.builder
  with pytest.raises(KeyError, match='unknown task'):
    tasks.get('nope')


def test_a_task_is_one_module(tmp_path, monkeypatch):
  (tmp_path / 'my_task.py').write_text(
      'from rao_jax.tasks import documents, registry\n'
      "TASK_NAME = 'my_docs'\n"
      'registry.register(registry.Task(\n'
      "    name=TASK_NAME, tfds_name='rao_documents',\n"
      '    builder=documents.RaoDocuments, make_env=documents.make_env,\n'
      '    recursive_solver=documents.RecursiveSolver,\n'
      '    direct_solver=documents.DirectSolver))\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  task = tasks.get('my_task')
  assert task.name == 'my_docs'
  assert tasks.get('my_docs') is task


def test_jsonl_loader(tmp_path):
  path = tmp_path / 'real.jsonl'
  lines = [{'question': 'How many errors?', 'document': 'a\nb error\nerror',
            'answer': 7},
           {'question': 'Who spoke last?', 'document': 'x: hi\ny: bye',
            'answer': 'y', 'format': 'a name'}]
  path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n\n')
  examples = jsonl.load_jsonl(path)
  assert [e['format'] for e in examples] == ['an integer', 'a name']
  assert examples[0]['id'] == f'{path}:1'
  envs = jsonl.environments(path)
  assert envs[0].root_spec().data == 'a\nb error\nerror'
  assert envs[0].score_root('7', None) == 1.0
  assert envs[0].score_root('8', None) == pytest.approx(0.75)
  assert envs[1].score_root(' Y ', None) == 1.0
  assert envs[1].score_root('x', None) == 0.0
  # Children outside the family's grammar cannot be checked.
  spec = envs[0].root_spec()
  assert envs[0].score_subtask(spec, '7', None) is None
  path.write_text('{"question": "q", "document": "d"}\n')
  with pytest.raises(ValueError, match=r'real.jsonl:1: missing answer'):
    jsonl.load_jsonl(path)


def test_task_kinds_filter_training_and_eval_examples(data_dir):
  from rao_jax.training import data as data_lib  # pylint: disable=import-outside-toplevel
  task = tasks.get('documents')
  kinds = ('count', 'sum')
  iterator = data_lib.train_iterator(task, 'easy', data_dir, seed=0,
                                     kinds=kinds)
  seen = [next(iterator)['task'].split()[0] for _ in range(40)]
  assert set(seen) <= set(kinds) and len(set(seen)) == 2
  # The filtered iterator still resumes exactly from a saved position.
  position = iterator.get_state()
  ahead = [next(iterator)['id'] for _ in range(5)]
  iterator.set_state(position)
  assert [next(iterator)['id'] for _ in range(5)] == ahead
  examples = data_lib.eval_examples(task, 'easy', data_dir, split='test',
                                    num_examples=12, kinds=('sum',))
  assert len(examples) == 12
  assert all(e['task'].startswith('sum ') for e in examples)
  everything = data_lib.eval_examples(task, 'easy', data_dir, split='test',
                                      num_examples=12)
  assert {e['task'].split()[0] for e in everything} > {'sum'}
