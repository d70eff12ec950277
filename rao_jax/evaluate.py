"""The `eval` mode: held-out root success of a workdir's newest checkpoint.

Greedy trees per level of `tasks.eval_levels`, recursive (at the training
and the evaluation depth budgets) and as a single agent (depth budget 0);
logged into the run's `metrics.jsonl` at the checkpoint's step under the
tag `eval`, and summarised in `summary.json`. Without a checkpoint it
evaluates the initial model (`init_from_hf`, or random).
"""

from __future__ import annotations

from typing import Any

from rao_jax import config as config_lib
from rao_jax.runtime import run_log as run_log_lib
from rao_jax.runtime import workdir as workdir_lib
from rao_jax.training import data as data_lib
from rao_jax.training import rollouts as rollouts_lib
from rao_jax.training import setup as setup_lib


def run(config: config_lib.RunConfig, workdir: str, *,
        start_over: bool = False) -> dict[str, Any]:
  """Evaluates the newest checkpoint in `workdir`; returns the summary."""
  s = setup_lib.setup(config)
  workdir = workdir_lib.prepare(workdir, config, start_over=start_over)
  state, record = setup_lib.newest_state(config, s, workdir)
  log = run_log_lib.RunLog(workdir, state.step, s.tokenizer)
  evals: dict[str, float] = dict(record.get('evals', {}))
  data_dir = setup_lib.data_dir(config.tasks, workdir)
  data_lib.prepare_once(s.task, config.tasks.eval_levels, data_dir)
  rollouts = setup_lib.rollouts(config, s, state.model)
  evals.update(rollouts_lib.evaluate_levels(rollouts, config.tasks, data_dir,
                                            log, state.step, 'eval'))
  summary = log.summary(config.mode, config.tasks, evals, steps=0,
                        draw=config.log.plots)
  log.close()
  return summary
