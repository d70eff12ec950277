"""Plan mode: will this config fit its slice? (`--config.mode=plan`)

`plan(config)` builds the run's arrays and programs as shapes on a mesh of
the target's devices (`config.plan.topology`), compiles them ahead of time
where libtpu is here, estimates them where not, and says per device what
each part costs; `run(config)` prints it and refuses a run that does not
fit. See docs/plan.md.
"""

from rao_jax.plan.planner import Plan
from rao_jax.plan.planner import plan
from rao_jax.plan.planner import refusal
from rao_jax.plan.planner import run
from rao_jax.plan.targets import TOPOLOGIES
