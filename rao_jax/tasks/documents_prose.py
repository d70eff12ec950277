"""Documents whose records must be read: the same facts, many phrasings.

The documents family's questions over records written in the phrasings
of `documents.PHRASINGS` ('kim red 4', '4 for kim (red)', 'red by kim,
worth 4', ...), one drawn per record. A one-line parser over
`splitlines()` no longer answers, and one written for the phrasings seen
does not generalise, so an agent reads: it prints its context (python
mode) or reads it with the `read` tool (tags), and beyond its window it
hands slices to children. The verifier is the documents family's: roots
against the stored answer, children by `documents.solve` over their own
data, whose parser reads every phrasing.

Levels are the documents family's lengths in records: easy 8-30,
moderate 26-60, mixed 2-32.
"""

from __future__ import annotations

import functools
import json
import random

import tensorflow_datasets as tfds

from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import documents
from rao_jax.tasks import documents_code
from rao_jax.tasks import registry

# A node reads its context itself up to this many characters (about
# three records; `moderate` documents then split four or five deep).
LEAF_CHARS = 64


class RaoDocumentsProse(builder_lib.TaskBuilder):
  """Aggregation over documents of records in many phrasings."""

  BUILDER_CONFIGS = builder_lib.level_configs(
      {'easy': (8, 30), 'moderate': (26, 60), 'mixed': (2, 32)},
      'records', version='1.0.0', num_train=4096, num_validation=256,
      num_test=256)
  VERSION = tfds.core.Version('1.0.0')

  def make_example(self, rng: random.Random,
                   config: builder_lib.LevelConfig) -> dict[str, str]:
    while True:
      document = documents.make_document(
          rng, rng.randint(config.low, config.high), prose=True)
      question = documents.make_question(rng, document)
      if question is not None:
        break
    task, gold = question
    return {'task': task, 'data': document,
            'format': documents.FORMATS[task.split()[0]], 'answer': gold,
            'world': json.dumps({'records': document.count('\n')})}


TASK = registry.register(registry.Task(
    name='documents_prose', tfds_name='rao_documents_prose',
    builder=RaoDocumentsProse, make_env=documents.make_env,
    recursive_solver=functools.partial(documents.RecursiveSolver,
                                       leaf_chars=LEAF_CHARS),
    direct_solver=functools.partial(documents.DirectSolver,
                                    fixed_width=False),
    code_recursive_solver=functools.partial(
        documents_code.CodeRecursiveSolver, leaf_chars=LEAF_CHARS),
    code_direct_solver=documents_code.CodeDirectSolver,
    levels=('easy', 'moderate', 'mixed')))
