"""bf16 compute with fp32 parameters on the CPU: sampling and a train step.

Each tiny model (Gemma 3 and Qwen3) runs twice on the same weights, with
`dtype='float32'` and `dtype='bfloat16'`; the bf16 run must stay finite
and close to the fp32 one. Norms, softmax, RoPE and the logits run in fp32
either way; what bf16 rounds is the matmul inputs and the activations
between layers (8 significant bits, a relative step of 2**-8 = 0.4%).
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rao_jax import sampler as sampler_lib
from rao_jax import testing
from rao_jax.model import gemma
from rao_jax.rl import losses
from rao_jax.rl import packing
from rao_jax.rl import update
from rao_jax.sampler import sampling

_PRESETS = ['tiny', 'tiny_qwen3']
_NEW_TOKENS = 16
# Measured: on identical contexts the sampled tokens' log-probs differ by
# at most 0.052 nats (tiny) and 0.060 (tiny_qwen3). Each is a logit (std
# ~1.5-2.5) minus a logsumexp, both from bf16 hidden states whose every
# element carries ~0.2-0.4% rounding through 3 layers: a few hundredths of a
# nat is the expected size; the bound leaves 3x.
_LOGPROB_ATOL = 0.2
# Measured: the SFT loss (mean NLL, ~7-10 nats) differs by 2.0e-4 (tiny)
# and 2.4e-5 (tiny_qwen3) relative, the gradient norm by 3.7e-4 and 1.1e-3.
# The loss averages 80 tokens' rounding errors, which partly cancel; the
# bounds are about one bf16 step (2**-8 = 3.9e-3) for the loss and ~10x
# the measured gradient-norm difference.
_LOSS_RTOL = 5e-3
_GRAD_NORM_RTOL = 1e-2


def _fp32_and_bf16(preset: str) -> tuple[gemma.Transformer, gemma.Transformer]:
  """The same perturbed weights (fp32) under fp32 and bf16 compute."""
  # Noise of 0.1 keeps the next-token distributions spread (entropy ~1.1
  # nats for Gemma, ~4.8 for Qwen3); at 0.2 the tied Gemma predicts one
  # token with certainty and a log-prob comparison would say nothing.
  fp32 = testing.tiny_model(preset=preset, seed=1, scale=0.1)
  bf16 = gemma.Transformer(fp32.config.replace(dtype='bfloat16'),
                           rngs=nnx.Rngs(0))
  # Copies: a train step donates (deletes) its input parameters.
  nnx.update(bf16, jax.tree.map(jnp.copy, nnx.state(fp32)))
  assert bf16.embedder.table[...].dtype == jnp.float32
  return fp32, bf16


def _sample(model: gemma.Transformer) -> list[sampler_lib.Turn]:
  """Three prompts sampled at temperature 1, each with its own key."""
  # Short prompts and max_len 32: few window buckets, few compiles.
  sampler = sampler_lib.SlotSampler(model, num_slots=4, max_len=32,
                                    method=sampling.Temperature(1.0))
  rng = np.random.RandomState(0)
  requests = [sampler_lib.Request(rng.randint(3, 384, n).tolist(),
                                  jax.random.key(i), _NEW_TOKENS)
              for i, n in enumerate([5, 9, 12])]
  slots = sampler.admit(requests)
  turns = {}
  while sampler.num_running:
    turns.update({t.slot: t for t in sampler.decode(_NEW_TOKENS)})
  return [turns[s] for s in slots]


@pytest.mark.parametrize('preset', _PRESETS)
def test_bf16_sampler_logprobs_are_finite_and_track_fp32(preset):
  fp32, bf16 = _fp32_and_bf16(preset)
  assert bf16.config.dtype == 'bfloat16'
  compared = 0
  for ref, got in zip(_sample(fp32), _sample(bf16)):
    assert len(got.tokens) == _NEW_TOKENS
    # At temperature 1 without a filter the sampler's log-probs are the
    # model's softmax.
    assert np.all(np.isfinite(got.sampler_logprobs))
    assert np.all(got.sampler_logprobs <= 0)
    # The same key draws the same token while the two distributions agree;
    # up to the first token that differs, both saw the same context.
    same = np.cumprod(ref.tokens == got.tokens).astype(bool)
    diff = np.abs(got.sampler_logprobs - ref.sampler_logprobs)[same]
    assert diff.max(initial=0.0) <= _LOGPROB_ATOL, diff.max()
    compared += same.sum()
  # The comparison covered a real stretch of tokens.
  assert compared >= _NEW_TOKENS


def _batch() -> dict[str, jax.Array]:
  """Six random sequences, loss on their second half, in 4 rows of 32."""
  rng = np.random.RandomState(2)
  seqs = []
  for n in (30, 24, 19, 14, 12, 9):
    mask = (np.arange(n) >= n // 2).astype(np.int32)
    seqs.append(packing.TrainSequence(rng.randint(3, 384, n), mask,
                                      np.zeros(n, np.float32)))
  batches, _ = packing.pack(seqs, buckets=[32], rows_per_batch=4)
  assert len(batches) == 1
  return {k: jnp.asarray(v) for k, v in batches[0].items()}


@pytest.mark.parametrize('preset', _PRESETS)
def test_bf16_train_step_loss_is_finite_and_close_to_fp32(preset):
  batch = _batch()
  config = losses.LossConfig(estimator='sft', logprob_chunk=16)
  optim = update.OptimConfig(learning_rate=1e-3)
  metrics = {}
  for model in _fp32_and_bf16(preset):
    optimizer = nnx.Optimizer(model, update.make_optimizer(optim),
                              wrt=nnx.Param)
    graphdef, state = update.split_train_state(model, optimizer)
    state, step_metrics = update.train_step(graphdef, state, batch, config,
                                            1e-3)
    model, optimizer = nnx.merge(graphdef, state)
    assert update.nonfinite_counts(optimizer) == (0, 0)  # the update applied
    assert all(np.all(np.isfinite(x))
               for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    metrics[model.config.dtype] = {k: float(v)
                                   for k, v in step_metrics.items()}
  ref, got = metrics['float32'], metrics['bfloat16']
  assert np.isfinite(got['loss']) and np.isfinite(got['grad_norm'])
  print(f"{preset}: loss {ref['loss']:.5f} fp32, {got['loss']:.5f} bf16; "
        f"grad norm {ref['grad_norm']:.4f} fp32, {got['grad_norm']:.4f} bf16")
  assert got['loss'] == pytest.approx(ref['loss'], rel=_LOSS_RTOL)
  assert got['grad_norm'] == pytest.approx(ref['grad_norm'],
                                           rel=_GRAD_NORM_RTOL)
