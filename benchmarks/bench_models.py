"""The model configs and weights every benchmark in this folder shares.

Benchmarks run as scripts (`python benchmarks/<name>.py`), so this folder is
on `sys.path` and they import this module by its bare name. Nothing here
imports jax at module level: tunix and other peers' workers import the
benchmark scripts from venvs that may lack rao_jax's stack.
"""

from __future__ import annotations

import json
import os


def configs(quick: bool) -> dict:
  """{name: ModelConfig}: the tiny test model, plus ~130M unless `quick`."""
  from rao_jax.model import config as config_lib  # pylint: disable=g-import-not-at-top
  named = {'tiny': config_lib.tiny()}
  if not quick:
    named['130M'] = config_lib.ModelConfig(
        family='gemma3', vocab_size=8192, embed_dim=1024, num_layers=8,
        num_heads=8, num_kv_heads=2, head_dim=128, mlp_dim=4096)
  return named


def add_hf_dir_flag(parser) -> None:
  """The `--hf_dir` flag every benchmark that runs `models` takes."""
  parser.add_argument('--hf_dir', default=None,
                      help='a real checkpoint (a Hugging Face directory, '
                      'e.g. Gemma 3 270M from `python -m '
                      'rao_jax.model.gguf_io --out=DIR`) to run instead of '
                      'the random-weight configs')


def models(quick: bool, hf_dir: str | None, tmp: str):
  """[(name, ModelConfig, Hugging Face directory)] to benchmark: the
  checkpoint in `hf_dir` alone (its real weights, named by its folder),
  else `configs(quick)` with random weights written under `tmp`."""
  if hf_dir:
    from rao_jax.model import hf_io  # pylint: disable=g-import-not-at-top
    with open(os.path.join(hf_dir, 'config.json')) as f:
      config = hf_io.config_from_hf(json.load(f))
    return [(os.path.basename(os.path.normpath(hf_dir)), config, hf_dir)]
  named = []
  for name, config in configs(quick).items():
    model_dir = os.path.join(tmp, name)
    save_model(config, model_dir)
    named.append((name, config, model_dir))
  return named


def save_model(config, path: str) -> None:
  """Writes random weights for `config` to `path` with `save_hf`."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from rao_jax import model as model_lib  # pylint: disable=g-import-not-at-top

  model = model_lib.Transformer(config, rngs=nnx.Rngs(0))
  # Norm scales start at zero; random ones make outputs less uniform, so
  # greedy agreement between systems is a real check, and a missing `1 +`
  # in a peer's RMSNorm would show in its loss.
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) if x.ndim == 1
            else x for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  model_lib.save_hf(model, path)
