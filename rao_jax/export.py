"""The `export` mode: a workdir's newest checkpoint as a Hugging Face
directory, `<workdir>/hf` (`runtime.hf_export` writes it)."""

from __future__ import annotations

from typing import Any

from rao_jax import config as config_lib
from rao_jax.runtime import hf_export
from rao_jax.runtime import workdir as workdir_lib
from rao_jax.training import setup as setup_lib


def run(config: config_lib.RunConfig, workdir: str, *,
        start_over: bool = False) -> dict[str, Any]:
  """Exports the newest checkpoint in `workdir` (the initial model when
  there is none); returns the step and the directory."""
  s = setup_lib.setup(config)
  workdir = workdir_lib.prepare(workdir, config, start_over=start_over)
  state, _ = setup_lib.newest_state(config, s, workdir)
  out = hf_export.export(state.model, s.tokenizer, config.tokenizer,
                         workdir / 'hf', step=state.step)
  return {'mode': config.mode, 'step': state.step, 'export': str(out)}
