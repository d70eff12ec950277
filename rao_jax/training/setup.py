"""What every mode that runs the model builds first, from its config.

`setup` turns a validated `RunConfig` into the mesh, the policy tokenizer
and chat format, and the task, checking everything that can be checked
before a weight loads or a program compiles (the model shards over the
mesh, the tokenizer fits the model, batch sizes divide over the data
axes). `restore_state`, `newest_state` and `rollouts` build the train
state and the rollouts of a run from the config sections they read.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import os
from typing import Any

from absl import logging
import jax

from rao_jax import config as config_lib
from rao_jax.runtime import errors
from rao_jax.agent import chat as chat_lib
from rao_jax.model import gemma
from rao_jax.model import lora
from rao_jax.model import params as params_lib
from rao_jax.model import sharding
from rao_jax.model import tokenizer as tokenizer_lib
from rao_jax.runtime import checkpoint as checkpoint_lib
from rao_jax.runtime import workdir as workdir_lib
from rao_jax.tasks import registry
from rao_jax.training import phases as phases_lib
from rao_jax.training import policy_tokenizer
from rao_jax.training import rollouts as rollouts_lib
from rao_jax.training import train_state as train_state_lib


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run needs beyond its config: the mesh and what it checks."""

  mesh: jax.sharding.Mesh
  rules: tuple
  tokenizer: tokenizer_lib.Tokenizer
  chat: chat_lib.ChatFormat  # over `tokenizer`, checked against the model
  task: registry.Task | None  # None when the mode reads no task


def setup(config: config_lib.RunConfig, *, with_task: bool = True) -> Setup:
  """The mesh over this host's devices, and the checks that need it.

  Raises:
    errors.ConfigError: naming the field that does not fit (the mesh, the
      tokenizer, a batch size).
  """
  try:
    return _setup(config, with_task)
  except errors.ConfigError:
    raise
  except ValueError as e:
    # Every check here is of the config against the devices or the
    # tokenizer, before anything is built: the user's to fix.
    raise errors.ConfigError(str(e)) from e


def _setup(config: config_lib.RunConfig, with_task: bool) -> Setup:
  mesh = sharding.make_mesh(config.mesh.sizes())
  params_lib.check_shardable(config.model, mesh, config.sharding_rules)
  tokenizer = policy_tokenizer.build(config.tokenizer, config.model.vocab_size)
  chat = policy_tokenizer.check_run(  # before any weight is read
      tokenizer, config.tokenizer, config.model, config.init_from_hf)
  task = config.tasks.resolve() if with_task else None
  data_parallel = mesh.shape['data'] * mesh.shape['fsdp']
  for field, value in (('sampler.num_slots', config.sampler.num_slots),
                       ('sft.rows_per_batch', config.sft.rows_per_batch),
                       ('rl.rows_per_batch', config.rl.rows_per_batch)):
    if value % data_parallel:
      raise ValueError(f'{field}={value} does not divide over the data x '
                       f'fsdp mesh axes ({data_parallel})')
  logging.info('mesh %s, model %.2fM parameters', dict(mesh.shape),
               config.model.num_params() / 1e6)
  return Setup(mesh, config.sharding_rules, tokenizer, chat, task)


def data_dir(tasks: config_lib.TasksConfig, workdir) -> str:
  """`tasks.data_dir`, else `<workdir>/data`; for a remote workdir, a local
  directory per process (the files are generated from their seed, so every
  process builds the same ones, where the array_record reader can read
  them)."""
  if tasks.data_dir:
    return tasks.data_dir
  if '://' in str(workdir):
    return os.path.expanduser(
        f'~/.cache/rao_jax/data/process_{jax.process_index()}')
  return str(workdir / 'data')


def restore_state(config: config_lib.RunConfig, s: Setup,
                  ckpt: checkpoint_lib.Checkpointer,
                  phases: Sequence[phases_lib.Phase]
                  ) -> tuple[train_state_lib.TrainState, dict[str, Any]]:
  """The run's train state and its checkpoint's record: the newest good
  checkpoint in `ckpt`, else the initial model (`init_from_hf` or random)
  with the first phase's fresh optimiser (RL's when `phases` is empty)."""
  model = train_state_lib.initial_model(config.model, config.init_from_hf,
                                        config.seed, s.mesh, s.rules)
  # Fresh adapters change nothing; with them only they train (`lora`).
  with sharding.use_mesh(s.mesh, s.rules):
    lora.add_adapters(model, config.lora, seed=config.seed)
  initial = train_state_lib.fresh(
      model, phases[0].optim if phases else config.optim, s.mesh, s.rules)
  return train_state_lib.restore(
      ckpt, initial, optims={phases_lib.SFT: config.sft.optim,
                             phases_lib.RL: config.optim},
      phases=phases, mesh=s.mesh, rules=s.rules)


def newest_state(config: config_lib.RunConfig, s: Setup, workdir
                 ) -> tuple[train_state_lib.TrainState, dict[str, Any]]:
  """The train state and record of `workdir`'s newest good checkpoint
  (the initial model's state when there is none), for a mode that reads a
  run and trains nothing; the run's config is recorded as `workdir`
  rules."""
  ckpt = checkpoint_lib.Checkpointer(workdir / 'checkpoints',
                                     max_to_keep=config.checkpoint.max_to_keep)
  try:
    state, record = restore_state(config, s, ckpt, phases=())
  finally:
    ckpt.close()
  workdir_lib.record(workdir, config, restored=state.step > 0)
  return state, record


def rollouts(config: config_lib.RunConfig, s: Setup,
             model: gemma.Transformer) -> rollouts_lib.Rollouts:
  """The run's rollouts (one sampler for every kind of tree) of `model`."""
  return rollouts_lib.Rollouts(
      s.task, s.chat, model, s.mesh, s.rules, sampler=config.sampler,
      rollout=config.rollout, seed=config.seed,
      group_size=config.rl.group_size, sft_solver=config.sft.solver)
