"""The optimiser and the jitted update over packed minibatches.

Adam(W) (or SGD with momentum) with warm-up and cosine decay, global-norm
clipping, and `optax.apply_if_finite`: an update whose gradients are not
finite is skipped and counted, and the trainer stops the run when too many
come in a row.
"""

from __future__ import annotations

import dataclasses
import functools

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from rao_jax.model import gemma
from rao_jax.rl import losses


OPTIMIZERS = ('adamw', 'sgd')


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
  """Paper defaults at 4B scale: lr 3e-6, betas (0.9, 0.95), wd ~0.02, clip 1.

  Attributes:
    optimizer: 'adamw', or 'sgd' (momentum b1, decoupled weight decay):
      Adam moves every parameter by about the learning rate whatever the
      size of its gradient, SGD in proportion to it, so a thin RL gradient
      leaves the parameters it barely touches where they are.
    learning_rate: peak learning rate.
    warmup_steps: linear warm-up from 0, in trainer steps of the phase.
    decay_steps: cosine decay length after warm-up, in trainer steps (0:
      constant).
    end_lr_fraction: final learning rate as a fraction of the peak.
    b1, b2, eps: Adam moments (b1: SGD's momentum).
    weight_decay: decoupled weight decay (AdamW).
    grad_clip: global-norm clip (0: off).
    max_consecutive_nonfinite: skipped updates in a row before the run stops.
  """

  optimizer: str = 'adamw'
  learning_rate: float = 3e-6
  warmup_steps: int = 0
  decay_steps: int = 0
  end_lr_fraction: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.02
  grad_clip: float = 1.0
  max_consecutive_nonfinite: int = 5

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f'optim.optimizer={self.optimizer!r}: expected one of '
                       f'{OPTIMIZERS}')
    for name in ('learning_rate', 'max_consecutive_nonfinite'):
      if getattr(self, name) <= 0:
        raise ValueError(f'optim.{name}={getattr(self, name)}: must be > 0')
    for name in ('warmup_steps', 'decay_steps', 'weight_decay', 'grad_clip'):
      if getattr(self, name) < 0:
        raise ValueError(f'optim.{name}={getattr(self, name)}: must be >= 0')
    for name in ('b1', 'b2'):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f'optim.{name}={getattr(self, name)}: must be in '
                         '[0, 1)')


def learning_rate_schedule(config: OptimConfig) -> optax.Schedule:
  """The learning rate at each trainer step of a phase (0-based).

  Counted in trainer steps, not optimiser updates: a step makes one update
  per packed minibatch per pass, a number its data decides, so a schedule
  counted in updates would end long before (or after) its phase.
  """
  if config.decay_steps:
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps,
        config.warmup_steps + config.decay_steps,
        end_value=config.learning_rate * config.end_lr_fraction)
  if config.warmup_steps:
    return optax.linear_schedule(0.0, config.learning_rate,
                                 config.warmup_steps)
  return optax.constant_schedule(config.learning_rate)


def scale_by_given_learning_rate() -> optax.GradientTransformationExtraArgs:
  """Scales updates by `-learning_rate`, an argument of every update call.

  The trainer evaluates `learning_rate_schedule` at its own step and hands
  the rate to each of that step's updates (see `train_step`).
  """

  def update_fn(updates, state, params=None, *, learning_rate, **extra_args):
    del params, extra_args
    updates = jax.tree.map(
        lambda u: (-learning_rate * u).astype(u.dtype), updates)
    return updates, state

  return optax.GradientTransformationExtraArgs(
      lambda params: optax.EmptyState(), update_fn)


def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
  """Clip, then AdamW (as `optax.adamw`, every parameter decayed) or SGD
  with momentum and decoupled decay, at the learning rate given to each
  update; non-finite updates are skipped."""
  if config.optimizer == 'sgd':
    direction = optax.trace(decay=config.b1)
  else:
    direction = optax.scale_by_adam(b1=config.b1, b2=config.b2,
                                    eps=config.eps)
  tx = optax.chain(
      optax.clip_by_global_norm(config.grad_clip) if config.grad_clip else
      optax.identity(),
      direction,
      optax.add_decayed_weights(config.weight_decay),
      scale_by_given_learning_rate())
  # The count is read by the trainer, which stops the run before optax would
  # give up and apply a non-finite update.
  return optax.apply_if_finite(
      tx, max_consecutive_errors=config.max_consecutive_nonfinite + 1)


def nonfinite_counts(optimizer: nnx.Optimizer) -> tuple[int, int]:
  """(skipped updates in a row, skipped in total) from the optimiser state."""
  state = optimizer.opt_state
  return (int(state.notfinite_count[...]),
          int(state.total_notfinite[...]))


def loss_and_metrics(model: gemma.Transformer, batch: dict[str, jax.Array],
                     config: losses.LossConfig,
                     ref_logp_BL: jax.Array | None = None,
                     denominator: jax.Array | None = None):
  logp_BL, entropy_BL = losses.token_logprobs(
      model, batch['tokens'], batch['positions'], batch['segment_ids'],
      config.logprob_chunk, config.temperature)
  loss, metrics = losses.policy_loss(logp_BL, batch, config, ref_logp_BL,
                                     denominator)
  mask_BL = batch['loss_mask'].astype(jnp.float32)
  metrics['entropy'] = (jnp.sum(entropy_BL * mask_BL) /
                        jnp.maximum(jnp.sum(mask_BL), 1.0))
  return loss, metrics


def split_train_state(model: gemma.Transformer, optimizer: nnx.Optimizer
                      ) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state) of model and optimiser together, for `train_step`."""
  return nnx.split((model, optimizer))


def _grads(model, wrt, batch, config, ref_logp_BL, denominator):
  # Only what the optimiser trains (`wrt`: every nnx.Param, or the LoRA
  # adapters' nnx.LoRAParam alone) is differentiated: with adapters no
  # gradient of a base weight is ever computed or held.
  grad_fn = nnx.value_and_grad(loss_and_metrics,
                               argnums=nnx.DiffState(0, wrt), has_aux=True)
  (loss, metrics), grads = grad_fn(model, batch, config, ref_logp_BL,
                                   denominator)
  metrics['loss'] = loss
  return grads, metrics


def _apply(model, optimizer, grads, learning_rate):
  optimizer.update(model, grads, learning_rate=learning_rate)
  return {'learning_rate': jnp.asarray(learning_rate, jnp.float32),
          'grad_norm': optax.tree.norm(grads)}


@functools.partial(jax.jit, static_argnames=('graphdef', 'config'),
                   donate_argnames=('state',))
def train_step(graphdef: nnx.GraphDef, state: nnx.State,
               batch: dict[str, jax.Array], config: losses.LossConfig,
               learning_rate: float | jax.Array,
               ref_logp_BL: jax.Array | None = None,
               denominator: float | jax.Array | None = None
               ) -> tuple[nnx.State, dict[str, jax.Array]]:
  """One optimiser update on one packed minibatch.

  Args:
    graphdef: from `split_train_state` (static: one program per structure).
    state: parameters and optimiser state; donated, so XLA updates them in
      place instead of holding two copies.
    batch: packed minibatch (see `packing.FIELDS`).
    config: the objective (static).
    learning_rate: this update's rate (`learning_rate_schedule` at the
      trainer's step); traced, so a new rate compiles nothing.
    ref_logp_BL: reference log-probs when `config.kl_coef > 0`.
    denominator: the aggregation's divisor (traced); None: the minibatch's
      own (`losses.policy_loss`).

  Returns:
    The new state and the step's metrics.
  """
  model, optimizer = nnx.merge(graphdef, state)
  grads, metrics = _grads(model, optimizer.wrt, batch, config, ref_logp_BL,
                          denominator)
  metrics.update(_apply(model, optimizer, grads, learning_rate))
  return nnx.state((model, optimizer)), metrics


@functools.partial(jax.jit, static_argnames=('graphdef', 'config'),
                   donate_argnames=('grads_sum',))
def accumulate_grads(graphdef: nnx.GraphDef, state: nnx.State,
                     batch: dict[str, jax.Array], config: losses.LossConfig,
                     denominator: jax.Array, grads_sum: nnx.State,
                     ref_logp_BL: jax.Array | None = None
                     ) -> tuple[nnx.State, dict[str, jax.Array]]:
  """Adds one minibatch's gradient to `grads_sum` (from `zero_grads`).

  `denominator` is `losses.loss_denominator` of all the minibatches of the
  update, so the sum is the gradient of their aggregated loss, as one
  minibatch holding them all would give. Returns the sum and the
  minibatch's metrics ('loss': its share of the update's loss).
  """
  model, optimizer = nnx.merge(graphdef, state)
  grads, metrics = _grads(model, optimizer.wrt, batch, config, ref_logp_BL,
                          denominator)
  return jax.tree.map(jnp.add, grads_sum, grads), metrics


@functools.partial(jax.jit, static_argnames=('graphdef',))
def zero_grads(graphdef: nnx.GraphDef, state: nnx.State) -> nnx.State:
  """Zeros shaped and sharded like the trained parameters' gradients."""
  model, optimizer = nnx.merge(graphdef, state)
  return jax.tree.map(jnp.zeros_like, nnx.state(model, optimizer.wrt))


@functools.partial(jax.jit, static_argnames=('graphdef',),
                   donate_argnames=('state',))
def apply_grads(graphdef: nnx.GraphDef, state: nnx.State, grads: nnx.State,
                learning_rate: float | jax.Array
                ) -> tuple[nnx.State, dict[str, jax.Array]]:
  """One optimiser update with accumulated gradients (`accumulate_grads`)."""
  model, optimizer = nnx.merge(graphdef, state)
  metrics = _apply(model, optimizer, grads, learning_rate)
  return nnx.state((model, optimizer)), metrics
