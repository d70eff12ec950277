"""The tfds builder every task family shares, and building helpers.

A family subclasses `TaskBuilder`, names its difficulty levels in
`BUILDER_CONFIGS` and writes `make_example(rng, level)`. Every example has
the same text features, so one reader serves all families:

  task, data, format: the root's `NodeSpec`;
  answer:             the reference answer (for inspection and SFT);
  world:              JSON the environment needs (recipes, a graph, ...);
  level, id:          the difficulty level and a stable example id.

Examples are deterministic from the config's seed: example i of a split
draws from `random.Random(f'{name}/{level}/{seed}/{split}/{i}')`, so the
same seed gives the same bytes, and a split never depends on another's
size. Files are array_record, read without tensorflow through
`tfds.data_source(name, data_dir=..., split=...)` (Text comes back as
bytes; `decode` turns a record into str fields).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
import dataclasses
import inspect
import random
from typing import Any

from etils import epath
import tensorflow_datasets as tfds

SPLITS = ('train', 'validation', 'test')
FIELDS = ('task', 'data', 'format', 'answer', 'world', 'level', 'id')


@dataclasses.dataclass(eq=False, kw_only=True)
class LevelConfig(tfds.core.BuilderConfig):
  """One difficulty level of a family.

  Attributes:
    level: the level's name ('easy', 'medium', ...), also the config name.
    low, high: the difficulty parameter's range (inclusive), e.g. crafting
      depth or hops.
    seed: examples are drawn from this seed.
    num_train, num_validation, num_test: split sizes (tiny by default:
      they build in seconds on a laptop).
  """

  level: str = ''
  low: int = 1
  high: int = 1
  seed: int = 0
  num_train: int = 64
  num_validation: int = 16
  num_test: int = 16


def level_configs(ranges: Mapping[str, tuple[int, int]], what: str,
                  version: str = '1.0.0', **sizes: int) -> list[LevelConfig]:
  """Configs named by level, from level -> (low, high) of `what`.

  Changing what a config generates (its sizes, its examples) needs a new
  `version`: built data is cached under data_dir/<name>/<level>/<version>.
  """
  return [LevelConfig(name=level, level=level, low=low, high=high,
                      version=version,
                      description=f'{level}: {what} {low}-{high}', **sizes)
          for level, (low, high) in ranges.items()]


class _GeneratedInfo(tfds.core.DatasetInfo):
  """The DatasetInfo of a level generated here, which tfds's GCS bucket of
  precomputed metadata cannot hold."""

  def initialize_from_bucket(self) -> None:
    # tfds's version makes a temporary directory for files it would copy
    # from the bucket and, finding none, leaves it behind: one empty
    # `/tmp/tmp*tfds` for every builder of a level not built yet.
    pass


class TaskBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Shared tfds plumbing; a family writes `make_example`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds's default probes the `importlib_resources` backport, which it
    # does not install; for a module in a plain package this is the same.
    return epath.Path(inspect.getfile(cls))

  @abc.abstractmethod
  def make_example(self, rng: random.Random, config: LevelConfig
                   ) -> dict[str, str]:
    """One example: the FIELDS except level and id."""

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict(
        {name: tfds.features.Text() for name in FIELDS})
    return _GeneratedInfo(builder=self, features=features,
                          description=self.__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is generated offline from the seed
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    config = self.builder_config
    size = getattr(config, f'num_{split}')
    for index in range(size):
      example_id = f'{self.name}/{config.level}/{config.seed}/{split}/{index}'
      example = self.make_example(random.Random(example_id), config)
      yield example_id, dict(example, level=config.level, id=example_id)


def decode(record: Mapping[str, Any]) -> dict[str, str]:
  """A record from `tfds.data_source` (bytes) or a dict of str -> str."""
  return {name: (value.decode('utf-8') if isinstance(value, bytes)
                 else str(value))
          for name, value in record.items()}


def build(tfds_name: str, level: str, data_dir: str) -> None:
  """Generates one family level into data_dir as array_record files."""
  builder = tfds.builder(f'{tfds_name}/{level}', data_dir=data_dir)
  builder.download_and_prepare(file_format='array_record')


def load(tfds_name: str, level: str, split: str, data_dir: str,
         build_if_missing: bool = True) -> list[dict[str, str]]:
  """All examples of one split, decoded; builds the level if missing."""
  if build_if_missing:
    build(tfds_name, level, data_dir)
  source = tfds.data_source(f'{tfds_name}/{level}', data_dir=data_dir,
                            split=split, download=False)
  return [decode(source[i]) for i in range(len(source))]
