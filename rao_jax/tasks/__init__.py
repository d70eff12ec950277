"""Compositional tasks as tfds datasets, with verifiers and solvers.

Importing this package registers the built-in families: 'crafting',
'documents', 'documents_prose', 'documents_scan' and 'multihop' (see
`registry` for the difficulty splits).
"""

from rao_jax.tasks import builder
from rao_jax.tasks import context
from rao_jax.tasks import registry
from rao_jax.tasks import crafting
from rao_jax.tasks import demonstrations
from rao_jax.tasks import documents
from rao_jax.tasks import documents_code
from rao_jax.tasks import documents_prose
from rao_jax.tasks import documents_scan
from rao_jax.tasks import jsonl
from rao_jax.tasks import multihop
from rao_jax.tasks.builder import build
from rao_jax.tasks.builder import load
from rao_jax.tasks.context import Window
from rao_jax.tasks.demonstrations import demonstrations as demonstrate
from rao_jax.tasks.registry import Task
from rao_jax.tasks.registry import get
from rao_jax.tasks.registry import names
from rao_jax.tasks.registry import register
