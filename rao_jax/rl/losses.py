"""Token log-probs of packed sequences and the policy objectives (Eq. 5).

Each packed token carries its sampler log-prob, its node's advantage A and
depth weight w. With the trainer's log-prob `logp` and the ratio
`rho = exp(logp - sampler_logprob)`, the per-token losses are:

  cispo  -sg(clip(rho, 0, epsilon_max)) * A * w * logp   (the paper's; 5)
  ppo    -min(rho * A * w, clip(rho, 1 - clip_low, 1 + clip_high) * A * w)
  sft    -logp                                     (supervised warm start)

plus, optionally, `kl_coef * k3` to a frozen reference, where
`k3 = exp(ref - logp) - (ref - logp) - 1`. Only tokens with loss mask 1
count; `aggregation` turns per-token losses into one number.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rao_jax.model import gemma
from rao_jax.rl import registry

# Name -> per-token objective (see the module docstring); registered below.
ESTIMATORS = registry.Registry('rl.loss.estimator')
AGGREGATIONS = ('token_mean', 'sequence_mean', 'constant_sum')


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
  """The objective; every field is a switch of the paper's ablations.

  Attributes:
    estimator: 'cispo', 'ppo' or 'sft'.
    epsilon_max: CISPO's upper clip of the (stop-gradient) ratio.
    clip_low, clip_high: PPO's clip range [1 - low, 1 + high].
    kl_coef: weight of the k3 KL to the reference policy (0: off).
    aggregation: 'token_mean' (all loss tokens of the minibatch),
      'sequence_mean' (mean over sequences of each one's token mean) or
      'constant_sum' (sum divided by `constant`).
    constant: the divisor of 'constant_sum'.
    logprob_chunk: tokens per chunk when computing log-probs, so a large
      vocabulary never materialises `[rows, length, vocab]` at once.
    temperature: log-probs are of softmax(logits / temperature), the
      distribution the sampler drew from, so the ratio is 1 on fresh samples
      (RL: `sampler.temperature`; SFT: 1).
  """

  estimator: str = 'cispo'
  epsilon_max: float = 5.0
  clip_low: float = 0.2
  clip_high: float = 0.2
  kl_coef: float = 0.0
  aggregation: str = 'token_mean'
  constant: float = 1024.0
  logprob_chunk: int = 128
  temperature: float = 1.0

  def __post_init__(self):
    ESTIMATORS.check(self.estimator)
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f'rl.loss.aggregation={self.aggregation!r}: expected '
                       f'one of {AGGREGATIONS}')
    for name in ('epsilon_max', 'constant', 'logprob_chunk', 'temperature'):
      if getattr(self, name) <= 0:
        raise ValueError(f'rl.loss.{name}={getattr(self, name)}: must be > 0')
    for name in ('clip_low', 'clip_high', 'kl_coef'):
      if getattr(self, name) < 0:
        raise ValueError(f'rl.loss.{name}={getattr(self, name)}: must be '
                         '>= 0')
    if self.clip_low >= 1:
      raise ValueError(f'rl.loss.clip_low={self.clip_low}: must be < 1')


def token_logprobs(model: gemma.Transformer, tokens_BL: jax.Array,
                   positions_BL: jax.Array, segment_ids_BL: jax.Array,
                   chunk: int, temperature: float = 1.0
                   ) -> tuple[jax.Array, jax.Array]:
  """Log-prob and entropy of the next-token distribution at every token.

  `logp_BL[:, i]` is log p(token i | earlier tokens of its segment) under
  softmax(logits / temperature); it is 0 at a segment's first token and on
  padding, where nothing predicts it.
  Logits are computed `chunk` tokens at a time under `jax.checkpoint`, so
  neither the forward nor the backward pass holds `[B, L, V]`.
  """
  hidden_BLD, _ = model.hidden_states(tokens_BL, positions_BL,
                                      segment_ids_BL)
  b, length, d = hidden_BLD.shape
  # Hidden state i-1 predicts token i.
  prev_BLD = jnp.concatenate(
      [jnp.zeros((b, 1, d), hidden_BLD.dtype), hidden_BLD[:, :-1]], axis=1)
  prev_seg_BL = jnp.concatenate(
      [jnp.zeros((b, 1), segment_ids_BL.dtype), segment_ids_BL[:, :-1]], 1)
  predicted_BL = (segment_ids_BL != 0) & (segment_ids_BL == prev_seg_BL)
  chunk = min(chunk, length)
  if length % chunk:
    raise ValueError(f'sequence length {length} is not a multiple of '
                     f'rl.loss.logprob_chunk={chunk}')
  n = length // chunk
  prev_NBCD = prev_BLD.reshape(b, n, chunk, d).swapaxes(0, 1)
  tokens_NBC = tokens_BL.reshape(b, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one_chunk(args):
    h_BCD, t_BC = args
    # The model's own output head (tied or not, soft-capped, fp32).
    logits_BCV = model.logits(h_BCD) / temperature
    logz_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
    picked_BC = jnp.take_along_axis(logits_BCV, t_BC[..., None], -1)[..., 0]
    probs_BCV = jax.nn.softmax(logits_BCV, axis=-1)
    entropy_BC = logz_BC - jnp.sum(probs_BCV * logits_BCV, axis=-1)
    return picked_BC - logz_BC, entropy_BC

  logp_NBC, entropy_NBC = jax.lax.map(one_chunk, (prev_NBCD, tokens_NBC))
  logp_BL = logp_NBC.swapaxes(0, 1).reshape(b, length)
  entropy_BL = entropy_NBC.swapaxes(0, 1).reshape(b, length)
  return (jnp.where(predicted_BL, logp_BL, 0.0),
          jnp.where(predicted_BL, entropy_BL, 0.0))


def _sequence_token_counts(mask_BL: jax.Array, sequence_ids_BL: jax.Array
                           ) -> tuple[jax.Array, jax.Array]:
  """(ids, loss-token count per sequence id); ids are bounded by the token
  count, a static size."""
  ids = sequence_ids_BL.reshape(-1)
  counts = jax.ops.segment_sum(mask_BL.reshape(-1), ids,
                               num_segments=ids.shape[0] + 1)
  return ids, counts


def denominator_of_counts(loss_tokens: np.ndarray | jax.Array,
                          config: LossConfig) -> np.ndarray | jax.Array:
  """The divisor of `aggregation` for sequences with these loss-token
  counts: the token mean divides by all their loss tokens, the sequence
  mean by the sequences that have any, the constant sum by `constant`.

  The one definition of the divisor: the jitted loss applies it to a
  minibatch's counts (`policy_loss`), the host to the counts of the
  minibatches of an update (`loss_denominator`). NumPy counts give a NumPy
  scalar, traced ones a traced scalar.
  """
  xp = jnp if isinstance(loss_tokens, jax.Array) else np
  if config.aggregation == 'token_mean':
    return xp.maximum(xp.sum(loss_tokens), 1.0).astype(xp.float32)
  if config.aggregation == 'constant_sum':
    return xp.asarray(config.constant, xp.float32)
  return xp.maximum(xp.sum(loss_tokens > 0), 1).astype(xp.float32)


def loss_denominator(batches: Sequence[Mapping[str, np.ndarray]],
                     config: LossConfig) -> float:
  """The divisor of `aggregation` over minibatches that make one update.

  Their gradients, each computed with this divisor, add up to the gradient
  of the aggregated loss over all of them: the token mean over all their
  loss tokens, the mean over all their sequences, or the constant sum.
  """
  # Sequence ids are unique across a packed batch; id 0 is padding.
  ids = np.concatenate([b['sequence_ids'].ravel() for b in batches])
  mask = np.concatenate([b['loss_mask'].ravel() for b in batches])
  return float(denominator_of_counts(np.bincount(ids, weights=mask)[1:],
                                     config))


def _aggregate(per_token_BL: jax.Array, mask_BL: jax.Array,
               sequence_ids_BL: jax.Array, config: LossConfig,
               denominator: jax.Array) -> jax.Array:
  total = jnp.sum(per_token_BL * mask_BL)
  if config.aggregation != 'sequence_mean':
    return total / denominator
  # sequence_mean: per-sequence token means over sequences with loss tokens.
  ids, counts = _sequence_token_counts(mask_BL, sequence_ids_BL)
  seq_loss = jax.ops.segment_sum((per_token_BL * mask_BL).reshape(-1), ids,
                                 num_segments=counts.shape[0])
  means = jnp.where(counts > 0, seq_loss / jnp.maximum(counts, 1.0), 0.0)
  return jnp.sum(means) / denominator


def policy_loss(logp_BL: jax.Array, batch: dict[str, jax.Array],
                config: LossConfig,
                ref_logp_BL: jax.Array | None = None,
                denominator: jax.Array | float | None = None,
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The objective of `config.estimator` over a packed minibatch.

  Args:
    logp_BL: the trainer's log-probs (from `token_logprobs`).
    batch: packed fields (see `packing.FIELDS`).
    config: the objective.
    ref_logp_BL: the reference policy's log-probs (needed when kl_coef > 0).
    denominator: the aggregation's divisor; None: this minibatch's own.
      Minibatches accumulated into one update share `loss_denominator` of
      them all, so their losses add up to the update's loss.

  Returns:
    The scalar loss and per-token-averaged metrics.
  """
  mask_BL = batch['loss_mask'].astype(jnp.float32)
  weighted_adv_BL = batch['advantages'] * batch['weights']
  log_ratio_BL = jnp.where(mask_BL > 0, logp_BL - batch['sampler_logprobs'],
                           0.0)
  ratio_BL = jnp.exp(log_ratio_BL)
  per_token_BL, clipped_frac_BL = ESTIMATORS.get(config.estimator)(
      logp_BL, ratio_BL, weighted_adv_BL, batch['weights'], config)

  metrics = {}
  if config.kl_coef > 0:
    if ref_logp_BL is None:
      raise ValueError('rl.loss.kl_coef > 0 needs reference log-probs')
    delta_BL = ref_logp_BL - logp_BL
    k3_BL = jnp.exp(delta_BL) - delta_BL - 1.0
    per_token_BL = per_token_BL + config.kl_coef * k3_BL
    metrics['kl'] = _masked_mean(k3_BL, mask_BL)

  if denominator is None:
    _, counts = _sequence_token_counts(mask_BL, batch['sequence_ids'])
    denominator = denominator_of_counts(counts[1:], config)  # 0: padding
  loss = _aggregate(per_token_BL, mask_BL, batch['sequence_ids'], config,
                    denominator)
  metrics.update(
      ratio_mean=_masked_mean(ratio_BL, mask_BL),
      clip_fraction=_masked_mean(clipped_frac_BL, mask_BL),
      # |log pi_trainer - log pi_sampler|: 0 up to float error on the first
      # minibatch of a fresh batch; large values mean the two disagree.
      logprob_mismatch=_masked_mean(jnp.abs(log_ratio_BL), mask_BL),
      loss_tokens=jnp.sum(mask_BL))
  return loss, metrics


# -------------------------------------------------------------- estimators
#
# Each maps the trainer's log-probs, the ratio to the sampler, the weighted
# advantages and the depth weights ([B, L] each) to the per-token loss and
# the share of tokens whose ratio was clipped.


@ESTIMATORS.register('cispo')
def _cispo(logp_BL, ratio_BL, weighted_adv_BL, weights_BL, config):
  """The paper's: the clipped ratio is a constant weight on log pi."""
  del weights_BL  # inside the weighted advantages
  clipped_BL = jnp.clip(ratio_BL, 0.0, config.epsilon_max)
  per_token_BL = -jax.lax.stop_gradient(clipped_BL) * weighted_adv_BL * logp_BL
  return per_token_BL, (ratio_BL > config.epsilon_max).astype(jnp.float32)


@ESTIMATORS.register('ppo')
def _ppo(logp_BL, ratio_BL, weighted_adv_BL, weights_BL, config):
  """PPO/GRPO's clipped surrogate."""
  del logp_BL, weights_BL  # through the ratio; inside the advantages
  clipped_BL = jnp.clip(ratio_BL, 1 - config.clip_low, 1 + config.clip_high)
  per_token_BL = -jnp.minimum(ratio_BL * weighted_adv_BL,
                              clipped_BL * weighted_adv_BL)
  return per_token_BL, (clipped_BL != ratio_BL).astype(jnp.float32)


@ESTIMATORS.register('sft')
def _sft(logp_BL, ratio_BL, weighted_adv_BL, weights_BL, config):
  """Supervised warm start: the weighted negative log-likelihood."""
  del weighted_adv_BL, config
  return -logp_BL * weights_BL, jnp.zeros_like(ratio_BL)


def _masked_mean(x_BL: jax.Array, mask_BL: jax.Array) -> jax.Array:
  return jnp.sum(x_BL * mask_BL) / jnp.maximum(jnp.sum(mask_BL), 1.0)

