"""A large vocabulary's logits are never held whole by the train step.

`update.train_step` compiled from shapes (as plan mode does) for a tiny
model with a 64k vocabulary: chunked log-probs keep its temporaries under
one `[rows, length, vocab]` fp32 logits tensor; computing all the logits at
once (one chunk of the whole row) does not, so the check can fail.
"""

import jax
import pytest

from rao_jax.model import config as config_lib
from rao_jax.model import sharding
from rao_jax.plan import programs
from rao_jax.rl import losses
from rao_jax.rl import update

# Gemma 3's vocabulary; a narrow width and short rows, so the logits, not
# the table or attention, would dominate.
_ROWS, _LENGTH, _VOCAB = 2, 512, 262_144


@pytest.mark.parametrize('estimator', ['sft', 'cispo'])
def test_train_step_holds_less_than_one_logits_tensor(estimator):
  model = config_lib.tiny(vocab_size=_VOCAB, embed_dim=32)
  mesh = sharding.make_mesh({'fsdp': 1}, jax.devices()[:1])
  logits_bytes = _ROWS * _LENGTH * _VOCAB * 4  # [rows, T, V] fp32

  def temporaries(chunk):
    loss = losses.LossConfig(estimator=estimator, logprob_chunk=chunk)
    return programs.compile_train_step(
        model, update.OptimConfig(), loss, _ROWS, _LENGTH, mesh,
        sharding.DEFAULT_RULES).temporaries

  chunked, whole = temporaries(32), temporaries(_LENGTH)
  assert chunked < logits_bytes < whole, (chunked, logits_bytes, whole)
