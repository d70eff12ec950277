"""Shows a run's call trees: `python -m rao_jax.viewer PATH`.

  python -m rao_jax.viewer runs/tiny                  # list files, one tree
  python -m rao_jax.viewer runs/tiny/trees/rl_000010.jsonl --tree 3
  python -m rao_jax.viewer runs/tiny/trees/rl_000010.jsonl --tree 3 --node 0
  python -m rao_jax.viewer runs/tiny --html /tmp/tiny.html

Given a workdir it lists the saved tree files (phase, step, trees, nodes,
root success) and prints the newest RL file's first tree; given a tree
file, its first tree; `--tree` picks a tree by id, `--node` prints that
node's turns, `--html` writes the whole run (or file) as one
self-contained page. See docs/viewer.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys
from typing import Any

from rao_jax.viewer import console
from rao_jax.viewer import html
from rao_jax.viewer import run_files


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m rao_jax.viewer',
      description='Show the call trees a rao_jax run saved.')
  parser.add_argument('path', help='a workdir, or one of its trees/*.jsonl')
  parser.add_argument('--tree', type=int, default=None,
                      help='id of the tree to print (default: the first)')
  parser.add_argument('--node', type=int, default=None,
                      help="print this node's turns instead of the tree")
  parser.add_argument('--html', default=None, metavar='OUT',
                      help='also write a self-contained HTML page to OUT')
  parser.add_argument('--max-children', type=int, default=4,
                      help='children printed per node (0: all)')
  parser.add_argument('--max-nodes', type=int, default=40,
                      help='nodes printed per tree (0: all)')
  return parser


def _load(path: str) -> tuple[list[run_files.TreeFile],
                              dict[str, list[dict[str, Any]]],
                              run_files.TreeFile, bool]:
  """(files, their records, the file to print, whether path is a run)."""
  if os.path.isdir(path):
    workdir = path
    files = run_files.list_tree_files(workdir)
    chosen = run_files.default_file(files)
  elif os.path.isfile(path):
    workdir = run_files.workdir_of(path)
    name = os.path.basename(path).removesuffix('.jsonl')
    known = (run_files.list_tree_files(workdir)
             if workdir and os.path.isdir(os.path.join(workdir, 'trees'))
             else [])
    chosen = next((f for f in known if f.name == name), None) or (
        run_files.TreeFile(path, name, *run_files.parse_name(name)))
    files = [chosen]
  else:
    raise FileNotFoundError(f'{path}: no such workdir or tree file')
  tokenizer = run_files.run_tokenizer(workdir) if workdir else None
  contents = {f.name: run_files.read_trees(f.path, tokenizer) for f in files}
  return files, contents, chosen, os.path.isdir(path)


def _pick(records: Sequence[dict[str, Any]], tree_id: int | None,
          name: str) -> dict[str, Any]:
  if not records:
    raise ValueError(f'{name} holds no trees')
  if tree_id is None:
    return records[0]
  for record in records:
    if record['tree_id'] == tree_id:
      return record
  ids = ', '.join(str(r['tree_id']) for r in records)
  raise ValueError(f'--tree={tree_id}: {name} has no such tree (ids: {ids})')


def run(argv: Sequence[str], out=sys.stdout) -> None:
  """Parses argv (without the program name) and prints to `out`."""
  args = _parser().parse_args(argv)
  color = console.use_color(out)
  files, contents, chosen, is_run = _load(args.path)
  if is_run:
    print(console.format_files(files, contents, color), file=out)
    print(file=out)
  tree = _pick(contents[chosen.name], args.tree, chosen.name)
  if args.node is None:
    print(f'{console.printable(chosen.name)}:', file=out)
    print(console.format_tree(tree, max_children=args.max_children,
                              max_nodes=args.max_nodes, color=color),
          file=out)
  else:
    node = next((n for n in tree['nodes'] if n['node_id'] == args.node),
                None)
    if node is None:
      raise ValueError(f'--node={args.node}: tree {tree["tree_id"]} has '
                       f'{len(tree["nodes"])} nodes (ids 0-'
                       f'{len(tree["nodes"]) - 1})')
    print(console.format_turns(node, color), file=out)
  if args.html:
    title = os.path.basename(os.path.abspath(args.path))
    page = html.render_page(title, files, contents, chosen.name,
                            run_page=is_run)
    html.write_page(args.html, page)
    print(f'wrote {console.printable(args.html)} '
          f'({len(page.encode()) // 1024} KB, '
          f'{sum(len(c) for c in contents.values())} trees)', file=out)


def main() -> None:
  try:
    run(sys.argv[1:])
  except (FileNotFoundError, ValueError) as e:
    # Bad input: say what is wrong, without a traceback.
    print(f'error: {console.printable(e)}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
