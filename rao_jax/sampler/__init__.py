"""Jitted slot-batch sampling with a KV cache, log-probs and stop sequences."""

from rao_jax.sampler.sampling import Greedy
from rao_jax.sampler.sampling import SamplingMethod
from rao_jax.sampler.sampling import Temperature
from rao_jax.sampler.sampling import TopK
from rao_jax.sampler.sampling import TopP
from rao_jax.sampler.slots import Request
from rao_jax.sampler.slots import SlotSampler
from rao_jax.sampler.slots import Suspended
from rao_jax.sampler.slots import Turn
