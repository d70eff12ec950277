"""notebooks/rao_demo.ipynb: committed clean, and run headless end to end
through papermill at the smoke size (about 3 minutes on 2 cores): every
cell succeeds, the plots come out as PNGs and the call trees as text and
as the viewer's page, which works inside the notebook's iframe."""

import ast
import base64
import io
import os

import nbformat
from PIL import Image
import papermill
import pytest

from rao_jax.viewer import plots
from rao_jax.viewer import run_files

import view_testing

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(_ROOT, 'notebooks', 'rao_demo.ipynb')
# The smoke size: 2 SFT steps, 1 RL step, 2 tasks evaluated.
SMALL = dict(INSTALL=False, VARIANT='smoke', SFT_STEPS=2, RL_STEPS=1,
             NUM_SLOTS=8, NUM_EVAL=2, START_OVER=False)


def _cell(notebook, cell_id):
  cells = [c for c in notebook.cells if c.get('id') == cell_id]
  assert len(cells) == 1, f'no single cell {cell_id!r}'
  return cells[0]


def _outputs(cell, mime):
  return [o['data'][mime] for o in cell.outputs
          if o.output_type in ('display_data', 'execute_result')
          and mime in o['data']]


def _stdout(cell):
  return ''.join(o.text for o in cell.outputs
                 if o.output_type == 'stream' and o.name == 'stdout')


def test_committed_notebook_is_clean_and_takes_the_parameters():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, cell.id
  tagged = [c for c in notebook.cells
            if 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1
  # papermill only warns about a parameter the cell does not set.
  assigned = {target.id for node in ast.parse(tagged[0].source).body
              if isinstance(node, ast.Assign) for target in node.targets}
  assert set(SMALL) | {'SOURCE', 'WORKDIR'} <= assigned


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
  """(the executed notebook, its workdir)."""
  folder = tmp_path_factory.mktemp('notebook')
  workdir = str(folder / 'run')
  output = str(folder / 'rao_demo.ipynb')
  # The kernel inherits this process's environment (8 fake CPU devices)
  # and starts in notebooks/, so it finds this checkout.
  papermill.execute_notebook(
      NOTEBOOK, output, parameters=dict(SMALL, WORKDIR=workdir),
      cwd=os.path.dirname(NOTEBOOK), kernel_name='python3',
      progress_bar=False, execution_timeout=900)
  return nbformat.read(output, as_version=4), workdir


@pytest.mark.slow
def test_every_cell_runs_and_the_run_is_shown(executed):
  notebook, workdir = executed
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert cell.execution_count is not None, cell.id
      assert not [o for o in cell.outputs if o.output_type == 'error']
  assert f'checkout {_ROOT};' in _stdout(_cell(notebook, 'install'))
  assert 'answer: ' in _stdout(_cell(notebook, 'data'))
  # The plots: one after SFT, the run's four at the end, as drawn.
  assert len(_outputs(_cell(notebook, 'sft'), 'image/png')) == 1
  shown = _outputs(_cell(notebook, 'plots'), 'image/png')
  assert len(shown) == len(plots.PLOTS)
  for data, name in zip(shown, plots.PLOTS):
    png = base64.b64decode(data)
    with open(os.path.join(workdir, 'plots', name), 'rb') as f:
      assert f.read() == png
    with Image.open(io.BytesIO(png)) as image:
      assert image.size == (plots.FIGSIZE[0] * plots.DPI,
                            plots.FIGSIZE[1] * plots.DPI)
  # The console view: the file table, then trees.
  text = _stdout(_cell(notebook, 'console-tree'))
  files = run_files.list_tree_files(workdir)
  assert {'sft', 'rl', 'after_sft', 'after_rl'} <= {f.phase for f in files}
  for tree_file in files:
    assert f'\n{tree_file.name} ' in text
  assert text.count('\n#0 ') == 2  # the newest RL tree, the evaluated one
  (page,) = _outputs(_cell(notebook, 'html-tree'), 'text/html')
  assert page.startswith('<div><iframe')
  assert 'srcdoc="&lt;!DOCTYPE html&gt;' in page


@pytest.mark.slow
def test_the_tree_page_works_inside_the_notebook_iframe(executed, tmp_path):
  notebook, workdir = executed
  (iframe,) = _outputs(_cell(notebook, 'html-tree'), 'text/html')
  host = tmp_path / 'host.html'
  host.write_text(f'<!DOCTYPE html><html><body>{iframe}</body></html>',
                  encoding='utf-8')
  files = run_files.list_tree_files(workdir)
  with view_testing.chromium() as browser:
    page = browser.new_page()
    errors, requests = [], []
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.on('console', lambda m: errors.append(m.text)
            if m.type == 'error' else None)
    page.on('request', lambda r: requests.append(r.url))
    page.goto(f'file://{host}')
    frame = page.frame_locator('iframe')
    frame.locator('html[data-rendered]').wait_for()
    assert frame.locator('table.files tr').count() == 1 + len(files)
    # A file's link is a fragment: it must open the file in the frame, not
    # navigate the frame to the notebook's URL.
    rl = next(i for i, f in enumerate(files) if f.phase == 'rl')
    frame.locator(f'table.files a[href="#file={rl}"]').click()
    frame.locator('.tree').first.wait_for()
    assert frame.locator('.tree').count() == len(
        run_files.read_trees(files[rl].path))
    frame.locator('#run-link').click()
    frame.locator('table.files').wait_for()
    frame.locator('#search').fill('sum')
    frame.locator('.hit').first.click()
    frame.locator('.tree').first.wait_for()
    assert page.frames[1].url.startswith('about:srcdoc#file=')
  assert errors == []
  assert {u.split('#')[0] for u in requests} == {f'file://{host}'}
