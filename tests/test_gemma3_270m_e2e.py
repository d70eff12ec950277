"""configs/gemma3_270m.py:smoke end to end on the real checkpoint.

The packaged Gemma 3 270M GGUF is converted by `gguf_io`, then the entry
point runs every phase (SFT, eval, RL, eval, export) on one CPU device
with rank-8 LoRA adapters; `transformers` loads the merged export, in
which the adapted projections moved and nothing else did. Slow: minutes on
2 cores.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers

import xla_env

pytestmark = pytest.mark.slow

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_config_runs_end_to_end(gemma3_270m, tmp_path):
  _, checkpoint = gemma3_270m  # converted by `gguf_io`
  workdir = tmp_path / 'run'
  # One device: fake devices would each gather the 1 GB of weights.
  result = subprocess.run(
      [sys.executable, '-m', 'rao_jax.main',
       '--config=configs/gemma3_270m.py:smoke', f'--workdir={workdir}',
       f'--config.init_from_hf={checkpoint}',
       f'--config.tokenizer.path={checkpoint}', '--config.lora.rank=8'],
      cwd=_ROOT, env=xla_env.env(1), capture_output=True, text=True,
      timeout=7200)
  assert result.returncode == 0, result.stderr[-4000:]

  summary = json.loads((workdir / 'summary.json').read_text())
  for tag in ('after_sft', 'after_rl'):
    assert f'{tag}/easy/recursive/root_success' in summary['evals']
  metrics = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  sft_losses = [m['loss'] for m in metrics if m.get('phase') == 'sft']
  # A pretrained start (a random one is ~12.5 on this vocabulary).
  assert sft_losses and all(0 < loss < 10 for loss in sft_losses)

  # Checkpoints hold what trains: the adapters and their optimiser state
  # (tens of MB), not the 1 GB of base weights.
  for step in (workdir / 'checkpoints').iterdir():
    saved = sum(f.stat().st_size for f in step.rglob('*') if f.is_file())
    assert saved < 100e6, (step.name, saved)

  exported = transformers.AutoModelForCausalLM.from_pretrained(
      str(workdir / 'hf'), dtype=torch.float32)
  initial = transformers.AutoModelForCausalLM.from_pretrained(
      str(checkpoint), dtype=torch.float32)
  moved = {name for name, p in exported.state_dict().items()
           if not torch.equal(p, initial.state_dict()[name])}
  # The adapters' projections, in every layer; the embedding, the norms
  # and everything else as loaded.
  projections = {f'model.layers.{i}.{module}.{name}.weight'
                 for i in range(initial.config.num_hidden_layers)
                 for module, names in (
                     ('self_attn', ('q_proj', 'k_proj', 'v_proj', 'o_proj')),
                     ('mlp', ('gate_proj', 'up_proj', 'down_proj')))
                 for name in names}
  assert moved and moved <= projections, sorted(moved - projections)[:5]
  ids = torch.tensor([[2, 651, 6037, 529]])
  assert torch.isfinite(exported(ids).logits).all()
