"""Call trees as one self-contained HTML page.

The page needs nothing but itself: its script (`page.js`) and styles
(`page.css`) are inlined, and the trees are embedded as JSON, one
`<script type="application/json">` element per tree file, which the script
parses only when that file is opened. Node records are slimmed for the
page (token ids and log-probs dropped, a node's data cut to a head), so a
run's page stays a few MB at most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import html
import json
import os
from typing import Any

from rao_jax.viewer import run_files

DATA_CHARS = 2000  # of a node's data kept for the page (the rest is counted)
_ASSETS = os.path.dirname(os.path.abspath(__file__))


def _asset(name: str) -> str:
  with open(os.path.join(_ASSETS, name), encoding='utf-8') as f:
    return f.read()


def page_node(node: Mapping[str, Any]) -> dict[str, Any]:
  """The fields of a node record the page shows."""
  spec = node['spec']
  data = spec.get('data', '')
  turns = node.get('turns')
  return dict(
      id=node['node_id'], parent=node['parent'], depth=node['depth'],
      task=spec['task'], format=spec.get('format', ''), data_len=len(data),
      data=data[:DATA_CHARS], status=node['status'], answer=node['answer'],
      success=node['success'], reward=node.get('reward'),
      advantage=node.get('advantage'), tokens=len(node.get('tokens', ())),
      steps=node.get('num_steps', 0), children=node.get('children', []),
      turns=None if turns is None else [
          dict(kind=t['kind'], text=t['text']) for t in turns])


def page_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
  """A tree record as the page embeds it."""
  return dict(tree_id=tree['tree_id'], group=tree.get('group', 0),
              seed=tree['seed'], status=tree['status'],
              nodes=[page_node(n) for n in tree['nodes']])


def _json_script(element_id: str, value: Any) -> str:
  # '<' as \u003c keeps '</script>' and '<!--' in texts from ending the
  # element early; JSON.parse reads the escape back.
  text = json.dumps(value, ensure_ascii=False, separators=(',', ':'))
  return (f'<script type="application/json" id="{element_id}">'
          f'{text.replace("<", chr(92) + "u003c")}</script>')


def render_page(title: str, files: Sequence[run_files.TreeFile],
                contents: Mapping[str, Sequence[Mapping[str, Any]]],
                open_file: str, *, run_page: bool) -> str:
  """The page's HTML.

  Args:
    title: shown in the header and the tab.
    files: the tree files, in the order the run page lists them.
    contents: file name -> its tree records (with `turns`).
    open_file: the name of the file the page opens on (unless `run_page`).
    run_page: open on the run page (the table of files), for a workdir.

  Returns:
    One HTML document that loads nothing else.
  """
  names = [f.name for f in files]
  if open_file not in names:
    raise ValueError(f'open_file={open_file!r} is not one of {names}')
  meta = dict(
      title=title, run_page=run_page, open_file=names.index(open_file),
      files=[dict(name=f.name, phase=f.phase, level=f.level, step=f.step,
                  trees=len(contents[f.name]),
                  nodes=sum(len(t['nodes']) for t in contents[f.name]),
                  root_success=run_files.root_success(contents[f.name]),
                  run_root_success=f.run_root_success) for f in files])
  scripts = [_json_script('rao-meta', meta)] + [
      _json_script(f'rao-file-{i}', [page_tree(t) for t in contents[f.name]])
      for i, f in enumerate(files)]
  return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>
{_asset('page.css')}
</style>
</head>
<body>
<header>
  <a href="#run" id="run-link">run</a>
  <span id="title">{html.escape(title)}</span>
  <select id="file-select" aria-label="tree file"></select>
  <input id="search" type="search" placeholder="search tasks and answers"
         aria-label="search tasks and answers">
  <span class="legend">reward: <span class="swatch low"></span>0
    <span class="swatch high"></span>max</span>
</header>
<div id="results" hidden></div>
<main id="main"></main>
{chr(10).join(scripts)}
<script>
{_asset('page.js')}
</script>
</body>
</html>
"""


def write_page(path: str, page: str) -> None:
  """Writes the page (UTF-8), creating its folder."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(page)
