"""configs/gemma3_270m.py:smoke end to end on the real checkpoint.

The packaged Gemma 3 270M GGUF is converted by `gguf_io`, then the entry
point runs every phase (SFT, eval, RL, eval, export) on one CPU device;
`transformers` loads the export. Slow: tens of minutes on 2 cores.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers

from rao_jax.model import gguf_io

import xla_env

pytestmark = pytest.mark.slow

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_config_runs_end_to_end(tmp_path):
  checkpoint = tmp_path / 'gemma3-270m'
  gguf_io.convert(gguf_io.packaged_gguf(str(tmp_path)), str(checkpoint))
  workdir = tmp_path / 'run'
  # One device: fake devices would each gather the 1 GB of weights.
  result = subprocess.run(
      [sys.executable, '-m', 'rao_jax.main',
       '--config=configs/gemma3_270m.py:smoke', f'--workdir={workdir}',
       f'--config.init_from_hf={checkpoint}',
       f'--config.tokenizer.path={checkpoint}'],
      cwd=_ROOT, env=xla_env.env(1), capture_output=True, text=True,
      timeout=7200)
  assert result.returncode == 0, result.stderr[-4000:]

  summary = json.loads((workdir / 'summary.json').read_text())
  for tag in ('after_sft', 'after_rl'):
    assert f'{tag}/easy/recursive/root_success' in summary['evals']
  metrics = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  sft_losses = [m['loss'] for m in metrics if 'loss' in m][:2]
  assert all(0 < loss < 10 for loss in sft_losses)  # a pretrained start

  exported = transformers.AutoModelForCausalLM.from_pretrained(
      str(workdir / 'hf'), dtype=torch.float32)
  initial = transformers.AutoModelForCausalLM.from_pretrained(
      str(checkpoint), dtype=torch.float32)
  moved = [name for name, p in exported.state_dict().items()
           if not torch.equal(p, initial.state_dict()[name])]
  assert moved
  ids = torch.tensor([[2, 651, 6037, 529]])
  assert torch.isfinite(exported(ids).logits).all()
