r"""The sandbox's cost: worker start-up, a block's round trip, and the
share of a python-mode rollout spent in the sandbox.

  PYTHONPATH=. python benchmarks/sandbox_round_trip.py

Prints JSON: seconds to start a confined worker; per-block round trips in
milliseconds (mean, median, 99th percentile) for an empty block, a block
that prints 1,000 characters and one that spawns two children; and the
reference solver's rollouts on `documents_prose` easy documents in the
python mode (cpu_tiny's window and budgets): blocks, sandbox seconds and
their share of the rollout's seconds.
"""

from __future__ import annotations

import json
import random
import statistics
import time

from rao_jax import sandbox
from rao_jax import tasks
from rao_jax.agent import code_runtime
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.tasks import context
from rao_jax.tasks import demonstrations
from rao_jax.tasks import documents


def _millis(samples: list[float]) -> dict[str, float]:
  ordered = sorted(samples)
  return {'mean_ms': 1e3 * statistics.fmean(ordered),
          'median_ms': 1e3 * statistics.median(ordered),
          'p99_ms': 1e3 * ordered[int(0.99 * (len(ordered) - 1))]}


def round_trips(pool: sandbox.WorkerPool, repeats: int = 1000) -> dict:
  blocks = {'empty': 'pass', 'print_1000': "print('x' * 1000)",
            'spawn_2': "h = [spawn('count red', p) for p in "
                       'split(context, 2)]'}
  found = {}
  for name, code in blocks.items():
    found[name] = _millis([pool.run(f'{name}{i % 16}', code,
                                    'kim red 4\n' * 8).seconds
                           for i in range(repeats)])
  return found


def rollout_share(num_examples: int = 16) -> dict:
  rng = random.Random(0)
  examples = []
  while len(examples) < num_examples:
    document = documents.make_document(rng, rng.randint(8, 30), prose=True)
    question = documents.make_question(rng, document)
    if question is not None and question[0].split()[0] in ('count', 'sum'):
      examples.append({'task': question[0], 'data': document,
                       'answer': question[1], 'format': ''})
  runtime = code_runtime.CodeRuntime(sandbox.Limits(num_workers=2))
  try:
    trees, stats = demonstrations.rollout(
        tasks.get('documents_prose'), examples, recursive=True,
        window=context.Window(max_tokens=256, inline_chars=24,
                              head_chars=10),
        budgets=scheduler_lib.Budgets(max_depth=8, max_steps=6,
                                      max_nodes=512, max_new_tokens=96),
        seeds=list(range(len(examples))), code=runtime)
  finally:
    runtime.close()
  return {'trees': len(trees),
          'root_success': statistics.fmean(t.root.success for t in trees),
          'nodes': sum(len(t.nodes) for t in trees),
          'blocks': stats.code_blocks, 'sandbox_s': stats.code_s,
          'rollout_s': stats.wall_s,
          'sandbox_ms_per_block': 1e3 * stats.code_s / stats.code_blocks,
          'sandbox_share': stats.code_s / stats.wall_s}


def main() -> None:
  start = time.perf_counter()
  pool = sandbox.WorkerPool(sandbox.Limits(num_workers=1))
  started_s = time.perf_counter() - start
  try:
    trips = round_trips(pool)
    layers = pool.layers
  finally:
    pool.close()
  print(json.dumps({'worker_start_s': started_s, 'layers': layers,
                    'round_trips': trips,
                    'rollout': rollout_share()}, indent=1))


if __name__ == '__main__':
  main()
