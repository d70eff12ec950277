"""Call trees for the viewer tests, made by the documents task's solver.

The reference solver is deterministic, so the G trees of a group would be
identical and every advantage 0. `NoisySolver` makes the group's trees
differ as sampled ones do: it gets some answers wrong (off by one), chosen
by a hash of the tree's variant and the node's sub-task, and the real
verifiers, `credit.assign_credit` and the scheduler do the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import os
import re
import zlib

import pytest

from rao_jax import tasks
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.agent import scripted_engine
from rao_jax.agent import tree as tree_lib
from rao_jax.rl import credit as credit_lib
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import context
from rao_jax.tasks import demonstrations

# Debian's chromium, driven by Playwright's own driver (never
# `playwright install`: nothing is downloaded). Flags keep it off the
# network and away from a sandbox a container may not allow.
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ('--headless', '--no-sandbox', '--disable-gpu',
                 '--disable-quic', '--no-first-run',
                 '--disable-background-networking',
                 '--disable-component-update', '--disable-sync')
WINDOW = context.Window()
TOKENIZER = context.TOKENIZER
_ANSWER_RE = re.compile(r'(.*<answer>)(\d+)(</answer>)', re.DOTALL)


def document_examples(data_dir: str, level: str) -> list[dict[str, str]]:
  """The test split of a documents level, built into data_dir if absent."""
  task = tasks.get('documents')
  return builder_lib.load(task.tfds_name, level, 'test', data_dir)


class NoisySolver:
  """The reference solver, off by one on a share of its numeric answers."""

  def __init__(self, solver: env_lib.ScriptedPolicy, variant: int,
               error_rate: float):
    self.solver = solver
    self.variant = variant
    self.error_rate = error_rate

  def __call__(self, view: env_lib.StepView) -> str:
    text = self.solver(view)
    match = _ANSWER_RE.fullmatch(text)
    key = f'{self.variant}|{view.spec.task}|{view.spec.data}'.encode()
    if match and zlib.crc32(key) % 1000 < 1000 * self.error_rate:
      return match.group(1) + str(int(match.group(2)) + 1) + match.group(3)
    return text


def group_trees(example: dict[str, str], group_size: int,
                error_rate: float, group: int = 0) -> list[tree_lib.Tree]:
  """`group_size` trees of one root task, variant 0 exact, the others
  noisy, with rewards and advantages (per-sub-task baseline, Eq. 1 bonus
  0.4)."""
  task = tasks.get('documents')
  trees = []
  for variant in range(group_size):
    solver = task.recursive_solver(WINDOW)
    if variant:
      solver = NoisySolver(solver, variant, error_rate)
    engine = scripted_engine.ScriptedEngine(
        solver, TOKENIZER, protocol.STOP_TAGS, num_slots=32,
        max_len=WINDOW.max_tokens, decode_steps=128)
    scheduler = scheduler_lib.FrontierScheduler(
        engine, TOKENIZER, demonstrations.RECURSIVE_BUDGETS,
        inline_chars=WINDOW.inline_chars, head_chars=WINDOW.head_chars)
    (tree,), _ = scheduler.run([task.make_env(example)], [variant],
                               groups=[group],
                               tree_ids=[group * group_size + variant])
    trees.append(tree)
  credit_lib.assign_credit(trees, credit_lib.CreditConfig(
      baseline='leave_one_out_task', child_bonus=0.4))
  return trees


def write_workdir(workdir: str, files: dict[str, list[tree_lib.Tree]],
                  with_turns: bool = True) -> None:
  """A workdir as a run leaves it: trees/, metrics.jsonl, config.json
  (byte tokenizer); trees saved with turns or, as older runs did, without."""
  os.makedirs(os.path.join(workdir, 'trees'), exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'tokenizer': {'kind': 'byte', 'path': ''}}, f)
  # Training steps log root success 0.5; an evaluation (`after_rl_LEVEL`)
  # logs 0.25 at the last step, as the trainer's do.
  steps = [int(name.split('_')[1]) for name in files
           if name.startswith(('sft_', 'rl_'))]
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for step in sorted(steps):
      f.write(json.dumps({'step': step, 'root_success': 0.5}) + '\n')
    for name in files:
      if name.startswith('after_rl_'):
        key = f'after_rl/{name[len("after_rl_"):]}/recursive/root_success'
        f.write(json.dumps({'step': max(steps, default=0), key: 0.25}) +
                '\n')
  for name, trees in files.items():
    tree_lib.save(trees, os.path.join(workdir, 'trees', name + '.jsonl'),
                  TOKENIZER if with_turns else None)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
  """A headless Chromium browser (Playwright); skips the test without one."""
  sync_api = pytest.importorskip(
      'playwright.sync_api', reason='playwright is not installed (pip '
      "install -e '.[test]')")
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'no {CHROMIUM} (apt-get install chromium; .ci/run does)')
  with sync_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                         args=list(CHROMIUM_ARGS))
    try:
      yield browser
    finally:
      browser.close()
