"""`python -m rao_jax.viewer` on a real run: the suite's smoke run
(`smoke_run` in tests/conftest.py, made once by `python -m rao_jax.main`),
its trees saved at every step and without stored turns (decoded with the
byte tokenizer its config names)."""

import os
import re
import subprocess
import sys

import pytest

import xla_env

from rao_jax.viewer import run_files

import view_testing

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(*args: str) -> subprocess.CompletedProcess:
  env = xla_env.env(8)
  result = subprocess.run([sys.executable, *args], cwd=_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope='module')
def smoke(smoke_run, tmp_path_factory):
  """(workdir, the view's output, its page) of the suite's smoke run
  (`smoke_run`, tests/conftest.py: its trees saved at every step)."""
  workdir = str(smoke_run[0])
  page = str(tmp_path_factory.mktemp('page') / 'run.html')
  output = _python('-m', 'rao_jax.viewer', workdir, '--html', page).stdout
  return workdir, output, page


@pytest.fixture(scope='module')
def browser():
  with view_testing.chromium() as b:
    yield b


@pytest.mark.slow
def test_view_prints_the_run_and_writes_the_page(smoke):
  workdir, output, page = smoke
  files = run_files.list_tree_files(workdir)
  assert {'sft', 'rl', 'after_sft', 'after_rl'} <= {f.phase for f in files}
  listed = [line.split()[0] for line in output.splitlines()[1:1 + len(files)]]
  assert listed == [f.name for f in files]
  newest_rl = [f for f in files if f.phase == 'rl'][-1]
  assert f'{newest_rl.name}:' in output.splitlines()
  assert re.search(r'^tree \d+ · group \d+ · seed \d+', output, re.M)
  assert re.search(r'^#0 \S', output, re.M)
  assert f'wrote {page}' in output
  with open(page, encoding='utf-8') as f:
    text = f.read()
  assert text.startswith('<!DOCTYPE html>')
  assert all(f'id="rao-file-{i}"' in text for i in range(len(files)))


@pytest.mark.slow
def test_smoke_page_opens_every_file(smoke, browser):
  workdir, _, page_path = smoke
  files = run_files.list_tree_files(workdir)
  page = browser.new_page()
  errors, requests = [], []
  page.on('pageerror', lambda e: errors.append(str(e)))
  page.on('request', lambda r: requests.append(r.url))
  url = f'file://{page_path}'
  page.goto(url)
  page.wait_for_selector('html[data-rendered]')
  assert page.locator('table.files tr').count() == 1 + len(files)
  for index, tree_file in enumerate(files):
    page.goto(f'{url}#file={index}')
    page.wait_for_selector('.tree')
    assert page.locator('.tree').count() == len(
        run_files.read_trees(tree_file.path))
    # The trainer stored no turns; the page has them from the byte
    # tokenizer of the run's config.
    page.locator('.node[data-id="0"] > .row .turns').first.click()
    assert page.locator('.details .turn.prompt').count() == 1
  assert errors == []
  assert {u.split('#')[0] for u in requests} == {url}
