"""The training benchmark trains the same thing in both systems.

`benchmarks/train_bench.py` times rao_jax's train step against HF
transformers; its numbers mean something only if both minimise the same
loss with the same optimiser. Three steps on the tiny model: the first
loss checks the model and the loss mask, the second and third the updates
(AdamW, clipping, the full learning rate from the first update). About
45 s on a 2-core CPU: marked slow.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'benchmarks'))

import bench_models  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import train_bench  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

pytest.importorskip('transformers')


@pytest.mark.slow
def test_both_systems_train_the_same_thing(tmp_path):
  config = bench_models.configs(quick=True)['tiny']
  bench_models.save_model(config, str(tmp_path))
  rows = 8  # divides over the 8 fake devices of conftest
  steps = train_bench.make_steps(config.vocab_size, rows, num_steps=3)
  for step in steps:
    lengths = [len(s['tokens']) for s in step]
    assert min(lengths) >= 64 and max(lengths) <= 256
    assert sum(lengths) > 0.75 * rows * 256  # steps are full
  kwargs = dict(warmup_steps=1, learning_rate=1e-2, weight_decay=0.02)
  ours = train_bench.run_ours(str(tmp_path), steps, rows=rows, **kwargs)
  hf = train_bench.run_hf(str(tmp_path), steps, **kwargs)
  np.testing.assert_allclose(ours['losses'], hf['losses'], rtol=1e-4)
  np.testing.assert_allclose(ours['grad_norms'], hf['grad_norms'], rtol=1e-4)
  assert ours['warmup_compiles'] == ours['timed_compiles'] == 0
