"""A sandbox for model code: warm, confined worker processes.

`pool.WorkerPool` runs blocks of Python in worker processes (`worker`)
that confine themselves (`confine`: rlimits, privileges, landlock,
seccomp) and give model code a namespace of its own per node
(`namespace`); frames travel as JSON (`wire`). `limits.Limits` holds the
budgets. The package imports nothing else of rao_jax: its worker runs
outside the trainer's import path.
"""

from rao_jax.sandbox import limits
from rao_jax.sandbox import pool
from rao_jax.sandbox.limits import Limits
from rao_jax.sandbox.pool import BlockResult
from rao_jax.sandbox.pool import WorkerPool
