"""Held-out tasks in the numbers an interval needs.

A level's stored test split can hold fewer tasks than a 95% interval
wants (the window levels store 64; a kind filter halves `mixed`'s 256).
Examples are deterministic per index (`tasks/builder.py`: example i of a
split draws from `random.Random('<name>/<level>/<seed>/<split>/<i>')`),
so the examples past a split's end are the ones a larger split would
hold: generated here, never seen in training (another split's stream).
The same generator draws a larger sample of the *training* distribution
for the blind-guess floor (`floors.py`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import random

from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import registry
from rao_jax.training import data as data_lib


def level_config(task: registry.Task, level: str
                 ) -> builder_lib.LevelConfig:
  for config in task.builder.BUILDER_CONFIGS:
    if config.name == level:
      return config
  raise ValueError(f'{task.name} has no level {level!r}')


def generate(task: registry.Task, level: str, split: str,
             start: int = 0) -> Iterator[dict[str, str]]:
  """Examples `start`, `start + 1`, ... of a split, past its stored size
  too, exactly as the builder writes them (`_generate_examples`)."""
  config = level_config(task, level)
  # `make_example` reads only its arguments: no builder (no data_dir) is
  # needed to call it.
  make = task.builder.make_example
  index = start
  while True:
    example_id = f'{task.tfds_name}/{level}/{config.seed}/{split}/{index}'
    example = make(None, random.Random(example_id), config)
    yield dict(example, level=level, id=example_id)
    index += 1


def examples(task: registry.Task, level: str, data_dir: str, num: int,
             kinds: Sequence[str] = (), split: str = 'test'
             ) -> list[dict[str, str]]:
  """The first `num` examples of `split` of the given kinds: the stored
  ones, then generated ones past the split's end."""
  found = data_lib.eval_examples(task, level, data_dir, split=split,
                                 num_examples=num, kinds=kinds)
  stored = getattr(level_config(task, level), f'num_{split}')
  for example in generate(task, level, split, start=stored):
    if len(found) >= num:
      break
    if data_lib.has_kind(example, kinds):
      found.append(example)
  return found
