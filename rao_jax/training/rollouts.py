"""The call trees of a run: demonstrations, sampled groups and evaluations.

`Rollouts` holds the run's slot sampler, one for every kind of rollout
(RL's groups at `sampler.temperature`, evaluations greedy: the temperature
is each request's data, so both share one KV cache and one set of compiled
programs), and hands each rollout to the frontier scheduler with the run's
budgets and window. Every tree's seed
derives from (run seed, step, index), so a resumed run rolls out the same
trees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from flax import nnx
import jax
import numpy as np

from rao_jax import config as config_lib
from rao_jax.training import data as data_lib
from rao_jax.runtime import run_log as run_log_lib
from rao_jax.agent import chat as chat_lib
from rao_jax.agent import code_runtime
from rao_jax.agent import model_engine
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import tree as tree_lib
from rao_jax.model import gemma
from rao_jax.rl import metrics as metrics_lib
from rao_jax.sampler import sampling
from rao_jax.sampler import slots as slots_lib
from rao_jax.tasks import demonstrations as demonstrations_lib
from rao_jax.tasks import registry

Trees = tuple[list[tree_lib.Tree], scheduler_lib.RolloutStats]
# The last part of the seed of a mixture's coin (`sft.solver`): no
# group index reaches it.
_MIXTURE_STREAM = 2**31 - 2


def seed_of(*parts: int) -> int:
  """A 31-bit seed derived from integers (run seed, step, index, ...)."""
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] >> 1)


class Rollouts:
  """Runs call trees for one run: scripted demos, sampled trees, evals."""

  def __init__(self, task: registry.Task, chat: chat_lib.ChatFormat,
               model: gemma.Transformer, mesh: jax.sharding.Mesh,
               rules: Sequence[Any], *, sampler: config_lib.SamplerConfig,
               rollout: config_lib.RolloutConfig, seed: int,
               group_size: int, sft_solver: str):
    """`chat`: every node's turns in the run's chat format (over the
    run's tokenizer), every step ended by its stop rule. `sampler` sizes
    the slot batch, `rollout` gives the budgets and window; trees' seeds
    derive from `seed`; RL samples `group_size` trees a task; SFT's
    demonstrations come from `sft_solver`."""
    self.task = task
    # The python mode: its stop rule and preamble, and one warm sandbox
    # for every rollout of the run.
    self.chat = chat.for_actions(rollout.actions)
    self.code = (code_runtime.CodeRuntime(rollout.sandbox)
                 if rollout.actions == 'python' else None)
    self.tokenizer = chat.tokenizer
    self.sampler_config = sampler
    self.rollout_config = rollout
    self.seed = seed
    self.group_size = group_size
    self.sft_solver = sft_solver
    method = sampling.Temperature(sampler.temperature)
    if sampler.top_k:
      method = sampling.TopK(sampler.top_k, sampler.temperature)
    # One sampler: RL asks for `sampler.temperature`, evaluations for 0
    # (greedy), per request; only the top-k filter is compiled in.
    self.sampler = slots_lib.SlotSampler(
        model, method=method, num_slots=sampler.num_slots,
        max_len=sampler.max_len, mesh=mesh, rules=rules)

  def set_params(self, params: nnx.State) -> None:
    """The policy the sampler decodes with from now on."""
    self.sampler.set_params(params)

  def scheduler(self, temperature: float,
                budgets: scheduler_lib.Budgets | None = None,
                version: int = 0, sequential_children: bool = False,
                root_prefix: scheduler_lib.RootPrefix = ''
                ) -> scheduler_lib.FrontierScheduler:
    """A scheduler over a fresh engine on the run's sampler, as every
    rollout of the run decodes: its stop rule, chat format, window and
    budgets (`budgets` replaces them), at `temperature` (0: greedy); every
    root's first step forced to begin with `root_prefix`."""
    # A fresh engine per rollout: its suspended-KV store belongs to this
    # rollout's trees; the sampler and its compiled programs are reused.
    stops = self.chat.stops
    engine = model_engine.ModelEngine(
        self.sampler, stops.device_ids,
        decode_steps=self.sampler_config.decode_steps,
        find_stop=stops.host_find, temperature=temperature)
    window = self.rollout_config.window
    return scheduler_lib.FrontierScheduler(
        engine, self.tokenizer, budgets or self.rollout_config.budgets,
        policy_version=version, inline_chars=window.inline_chars,
        head_chars=window.head_chars,
        show_depth_budget=window.show_depth_budget, chat=self.chat,
        sequential_children=sequential_children, code=self.code,
        root_prefix=root_prefix)

  def _run(self, temperature: float, envs, seeds, groups=None,
           budgets: scheduler_lib.Budgets | None = None,
           version: int = 0, root_prefix: scheduler_lib.RootPrefix = ''
           ) -> Trees:
    return self.scheduler(temperature, budgets, version,
                          root_prefix=root_prefix).run(envs, seeds, groups)

  def demonstrations(self, examples: Sequence[Mapping[str, str]],
                     step: int) -> Trees:
    """The reference solver's call trees for `examples` (`sft_solver`)."""
    n = len(examples)
    recursive = [self.sft_solver == 'recursive'] * n
    if self.sft_solver == 'mixture':
      # A coin per tree from (seed, step, index): a resumed run draws alike.
      recursive = [seed_of(self.seed, step, i, _MIXTURE_STREAM) % 2 == 0
                   for i in range(n)]
    return demonstrations_lib.rollout(
        self.task, examples, recursive=recursive,
        window=self.rollout_config.window,
        budgets=self.rollout_config.budgets,
        seeds=[seed_of(self.seed, step, i) for i in range(n)],
        tokenizer=self.tokenizer, chat=self.chat,
        num_slots=self.sampler_config.num_slots,
        decode_steps=self.sampler_config.decode_steps, code=self.code)

  def sample_groups(self, examples: Sequence[Mapping[str, str]], step: int,
                    version: int) -> Trees:
    """`group_size` sampled trees per example; groups by example."""
    envs, seeds, groups = [], [], []
    for i, example in enumerate(examples):
      for g in range(self.group_size):
        # Each tree its own environment (a crafting inventory is mutable
        # state) and its own seed: the G trees differ only by sampling.
        envs.append(self.task.make_env(example))
        seeds.append(seed_of(self.seed, step, i, g))
        groups.append(i)
    return self._run(self.sampler_config.temperature, envs, seeds, groups,
                     version=version)

  def evaluate(self, examples: Sequence[Mapping[str, str]], max_depth: int,
               seed: int, temperature: float = 0.0,
               root_prefix: scheduler_lib.RootPrefix = '') -> Trees:
    """Greedy trees for held-out examples with depth budget `max_depth`
    (or sampled ones at `temperature` > 0, one tree a task per seed),
    every root's first step forced to begin with `root_prefix`."""
    budgets = dataclasses.replace(self.rollout_config.budgets,
                                  max_depth=max_depth)
    envs = [self.task.make_env(ex) for ex in examples]
    return self._run(temperature, envs,
                     [seed_of(seed, i) for i in range(len(envs))],
                     budgets=budgets, root_prefix=root_prefix)


def evaluate_levels(rollouts: Rollouts, tasks: config_lib.TasksConfig,
                    data_dir: str, log: run_log_lib.RunLog, step: int,
                    tag: str) -> dict[str, float]:
  """Root success per level of `tasks.eval_levels` for `tasks.eval_agents`:
  recursive at the train and eval depth budgets, the single agent at depth
  budget 0; logged at `step` under `tag` (e.g. 'after_sft'), with the
  recursive agent's first trees."""
  rollout = rollouts.rollout_config
  depths = {}
  if 'recursive' in tasks.eval_agents:
    depths['recursive'] = rollout.budgets.max_depth
    # At the evaluation budget too, unless it is the same (the same trees).
    if rollout.eval_max_depth != rollout.budgets.max_depth:
      depths['recursive_eval_depth'] = rollout.eval_max_depth
  if 'single_agent' in tasks.eval_agents:
    depths['single_agent'] = 0
  results = {}
  for level in tasks.eval_levels:
    examples = data_lib.eval_examples(
        rollouts.task, level, data_dir, split=tasks.eval_split,
        num_examples=tasks.num_eval, kinds=tasks.task_kinds)
    for name, depth in depths.items():
      # The same seed after every phase: greedy trees of one task differ
      # only by the policy (ties aside), so evaluations compare.
      trees, _ = rollouts.evaluate(examples, depth, seed=rollouts.seed + 1)
      tree_metrics = metrics_lib.tree_metrics(trees)
      prefix = f'{tag}/{level}/{name}'
      for key in ('root_success', 'root_exact', 'nodes_per_tree'):
        results[f'{prefix}/{key}'] = tree_metrics[key]
      for key, value in tree_metrics.items():
        if key.startswith('success/depth'):
          results[f'{prefix}/{key}'] = value
      if name == 'recursive':
        log.trees(f'{tag}_{level}', trees[:8])
  log.write(step, results)
  return results
