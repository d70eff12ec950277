"""The python action mode end to end: SFT on code demonstrations, RL and
evaluation through the real entry point (`cpu_tiny.py:prose,python,smoke`),
its trees valid call trees with code, output and children that the
viewer shows."""

import json
import os
import subprocess
import sys

import pytest

import xla_env

from rao_jax.agent import tree as tree_lib
from rao_jax.viewer import console
from rao_jax.viewer import run_files

# One entry-point run of the python action mode, read by every test.
pytestmark = pytest.mark.slow

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def python_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('python_smoke')
  command = [sys.executable, '-m', 'rao_jax.main',
             '--config=configs/cpu_tiny.py:prose,python,smoke',
             f'--workdir={workdir}', '--config.log.trees_every_steps=1']
  result = subprocess.run(command, cwd=_ROOT, env=xla_env.env(8),
                          capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_sft_rl_and_eval_run_in_the_python_mode(python_run):
  recorded = json.loads((python_run / 'config.json').read_text())
  assert recorded['rollout']['actions'] == 'python'
  steps = [r for r in _metrics(python_run) if 'loss' in r]
  assert [r['phase'] for r in steps] == ['sft'] * 3 + ['rl'] * 2
  # Demonstrations run every block in the sandbox: its cost is logged.
  assert all(r['sandbox_s'] > 0 for r in steps if r['phase'] == 'sft')
  summary = json.loads((python_run / 'summary.json').read_text())
  assert 'after_rl/easy/recursive/root_success' in summary['evals']


def _first_sft_trees(workdir):
  (name, *_) = sorted(f for f in os.listdir(workdir / 'trees')
                      if f.startswith('sft_'))
  return str(workdir / 'trees' / name)


def test_demonstration_trees_are_valid_call_trees_of_code(python_run):
  trees = tree_lib.load(_first_sft_trees(python_run))
  assert trees and all(t.root.success == 1.0 for t in trees)
  for tree in trees:
    assert len(tree.nodes) > 1
    for node in tree.nodes:
      assert node.status == tree_lib.DONE
      assert len(node.tokens) == len(node.loss_mask) == len(node.logprobs)
      for step in node.children:
        for child in step:
          assert tree.nodes[child].parent == node.node_id
          assert tree.nodes[child].depth == node.depth + 1


def test_the_viewer_shows_code_output_and_children(python_run):
  path = _first_sft_trees(python_run)
  (record, *_) = run_files.read_trees(
      path, run_files.run_tokenizer(str(python_run)))
  root = record['nodes'][0]
  text = console.format_turns(root)
  assert "h = [spawn('count" in text or "h = [spawn('sum" in text
  assert '<result>' in text  # the children's answers, injected
  leaf = next(n for n in record['nodes'] if not console.child_ids(n))
  leaf_text = console.format_turns(leaf)
  assert 'print(context)' in leaf_text and 'answer(' in leaf_text
  assert console.child_ids(root)  # the children the spawn made
