"""Root tasks from the tfds task datasets, through checkpointable grain iterators.

Datasets are generated offline from their seed into `data_dir` the first
time a (task, level) is used (by one process: `prepare_once`), then read with `tfds.data_source` (no
tensorflow). Training reads an endless shuffled grain iterator whose
position (`get_state()`, a small JSON-able dict) goes into every
checkpoint, so a resumed run sees exactly the tasks it would have seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from typing import Any

from absl import logging
import grain
import tensorflow_datasets as tfds

from rao_jax.runtime import multihost
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import registry


def prepare(task: registry.Task, level: str, data_dir: str) -> None:
  """Builds the array_record files of one level unless they exist."""
  if level not in task.levels:
    raise ValueError(f'tasks: level {level!r} is not one of task '
                     f'{task.name!r}\'s levels {task.levels}')
  builder = task.builder(config=level, data_dir=data_dir)
  if not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json')):
    logging.info('generating %s/%s into %s', task.tfds_name, level, data_dir)
    tfds.disable_progress_bar()  # the run has its own progress bar
    builder.download_and_prepare(file_format='array_record')


def prepare_once(task: registry.Task, levels: Sequence[str],
                 data_dir: str) -> None:
  """Builds the levels' files, once for all processes: the primary builds,
  the others wait (concurrent builds into one directory would race), then
  build their own where their `data_dir` is not the primary's."""
  levels = list(dict.fromkeys(levels))
  if multihost.is_primary():
    for level in levels:
      prepare(task, level, data_dir)
  multihost.barrier('datasets built')
  for level in levels:
    prepare(task, level, data_dir)  # a no-op where the files exist


def source(task: registry.Task, level: str, split: str, data_dir: str):
  prepare(task, level, data_dir)
  return tfds.data_source(f'{task.tfds_name}/{level}', data_dir=data_dir,
                          split=split)


def has_kind(example: Mapping[str, str], kinds: Sequence[str]) -> bool:
  """Whether the example's task starts with one of `kinds` (all if empty):
  `('count', 'sum')` keeps the documents family's numeric questions."""
  return not kinds or example['task'].split(' ', 1)[0] in kinds


def train_iterator(task: registry.Task, level: str, data_dir: str, *,
                   seed: int, kinds: Sequence[str] = (), shard_index: int = 0,
                   num_shards: int = 1) -> grain.DatasetIterator:
  """Endless shuffled iterator of decoded examples (str fields) whose task
  is of one of `kinds` (all if empty)."""
  dataset = (grain.MapDataset.source(source(task, level, 'train', data_dir))
             [shard_index::num_shards]
             .shuffle(seed=seed)
             .repeat(None)
             .map(builder_lib.decode))
  if kinds:
    dataset = dataset.filter(lambda example: has_kind(example, kinds))
  return iter(dataset.to_iter_dataset())


def eval_examples(task: registry.Task, level: str, data_dir: str, *,
                  split: str, num_examples: int, kinds: Sequence[str] = ()
                  ) -> list[dict[str, Any]]:
  """The first `num_examples` examples of a held-out split whose task is of
  one of `kinds` (all if empty), decoded."""
  records = source(task, level, split, data_dir)
  examples = []
  for i in range(len(records)):
    if len(examples) == num_examples:
      break
    example = builder_lib.decode(records[i])
    if has_kind(example, kinds):
      examples.append(example)
  return examples
