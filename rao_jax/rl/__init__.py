"""RL over call trees: credit assignment, packing, losses and the update."""

from rao_jax.rl.credit import assign_credit
from rao_jax.rl.credit import CreditConfig
from rao_jax.rl.credit import depth_weights
from rao_jax.rl.losses import LossConfig
from rao_jax.rl.losses import policy_loss
from rao_jax.rl.losses import token_logprobs
from rao_jax.rl.packing import pack
from rao_jax.rl.packing import TrainSequence
from rao_jax.rl.update import make_optimizer
from rao_jax.rl.update import OptimConfig
from rao_jax.rl.update import train_step
