"""Peak memory of one train step of Gemma 3 270M, as XLA compiles it.

  python benchmarks/train_memory.py --rows=2 --length=1024 --chunks=1024,256

Compiles `update.train_step` (the loss's forward, backward and the AdamW
update) on one CPU device for a `[rows, length]` minibatch at each
`rl.loss.logprob_chunk`, from shapes alone (no weights are read), and
prints XLA's memory analysis: arguments (parameters, optimiser state,
batch; donated, so the outputs reuse them) and the temporaries at the
step's peak. The last line is JSON.
"""

import argparse
import json
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top

from rao_jax.model import config as config_lib
from rao_jax.model import sharding
from rao_jax.plan import programs
from rao_jax.rl import losses
from rao_jax.rl import update


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', type=int, default=2)
  parser.add_argument('--length', type=int, default=1024)
  parser.add_argument('--chunks', default='1024,256,128')
  parser.add_argument('--estimator', default='sft')
  parser.add_argument('--dtype', default='float32')
  args = parser.parse_args()
  model = config_lib.gemma3_270m(dtype=args.dtype)
  mesh = sharding.make_mesh({'fsdp': 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  gib = 1 << 30
  results = []
  print('| logprob_chunk | arguments GiB | temporaries GiB | total GiB |')
  print('|---|---|---|---|')
  for chunk in (int(c) for c in args.chunks.split(',')):
    loss = losses.LossConfig(estimator=args.estimator, logprob_chunk=chunk)
    figures = programs.compile_train_step(
        model, update.OptimConfig(), loss, args.rows, args.length, mesh,
        rules)
    results.append(dict(chunk=chunk, arguments=figures.arguments,
                        temporaries=figures.temporaries,
                        total=figures.total))
    print(f'| {chunk} | {figures.arguments / gib:.2f} | '
          f'{figures.temporaries / gib:.2f} | {figures.total / gib:.2f} |',
          flush=True)
  print(json.dumps(dict(rows=args.rows, length=args.length,
                        dtype=args.dtype, results=results)))


if __name__ == '__main__':
  main()
