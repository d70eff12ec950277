"""Call trees as indented text for a terminal.

A tree prints one line a node: its task, data handle, status, answer,
success, reward, advantage and token count, under box-drawing branches.
Big trees are cut so the top stays readable: each node shows at most
`max_children` children and the tree at most `max_nodes` nodes, chosen
breadth first (the upper levels whole before any deep branch); what is
left out is counted on a '... N more' line.

Everything printed that a model or a file wrote goes through `printable`:
the byte tokenizer can emit ESC (0x1b), and a terminal obeys what follows
it (set the title, clear the screen, rewrite the clipboard). Control
characters are shown as `\x1b`-style escapes instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import collections
import os
import re
from typing import Any, TextIO

from rao_jax.viewer import run_files

_RESET = '\x1b[0m'
BOLD, DIM, RED, GREEN, YELLOW, BLUE, MAGENTA, CYAN = (
    '1', '2', '31', '32', '33', '34', '35', '36')
_STATUS_COLOR = {'done': GREEN, 'failed': RED, 'aborted': YELLOW}
_TURN_COLOR = {'prompt': DIM, 'policy': BOLD, 'results': MAGENTA,
               'observation': YELLOW}
ELLIPSIS = '…'
# C0 controls but newline and tab, DEL, C1 controls (0x9b is a one-byte
# CSI on some terminals), and the bidirectional overrides and isolates,
# which reorder what the reader sees.
_CONTROL_RE = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f'
                         '\u202a-\u202e\u2066-\u2069]')


def printable(text: Any) -> str:
  """`text` (any value, as `str`) safe to print on a terminal: control
  characters other than newline and tab as `\\xNN` or `\\uNNNN`."""
  return _CONTROL_RE.sub(_escape, str(text))


def _escape(match: re.Match[str]) -> str:
  code = ord(match.group())
  return f'\\x{code:02x}' if code < 0x100 else f'\\u{code:04x}'


def use_color(stream: TextIO) -> bool:
  """ANSI colours only on a terminal, and not when NO_COLOR is set."""
  return stream.isatty() and not os.environ.get('NO_COLOR')


class Painter:
  """Wraps text in ANSI colour codes, or leaves it plain."""

  def __init__(self, color: bool):
    self.color = color

  def __call__(self, text: str, *codes: str) -> str:
    if not self.color or not codes:
      return text
    return f'\x1b[{";".join(codes)}m{text}{_RESET}'


def shorten(text: str, width: int) -> str:
  """One line of at most `width` characters: newlines shown as '↵', the
  cut marked with an ellipsis."""
  text = printable(text).replace('\n', '↵').replace('\t', ' ')
  return text if len(text) <= width else text[:max(width - 1, 0)] + ELLIPSIS


def _number(value: float | None, signed: bool = False) -> str:
  if value is None:
    return '-'
  text = f'{value:+.2f}' if signed else f'{value:.2f}'
  # No '-0.00' or '+0.00': a value that rounds to zero prints as zero.
  return '0.00' if text.lstrip('+-') == '0.00' else text


def _success_color(value: float | None) -> str:
  if value is None:
    return DIM
  return GREEN if value >= 1.0 else YELLOW if value > 0 else RED


def _sign_color(value: float | None) -> str:
  if not value:
    return DIM
  return GREEN if value > 0 else RED


def child_ids(node: Mapping[str, Any]) -> list[int]:
  """A node record's children over all its spawn steps, in order."""
  return [c for step in node.get('children', ()) for c in step]


def node_line(node: Mapping[str, Any], paint: Painter) -> str:
  """One node's summary line (without the branch prefix)."""
  spec = node['spec']
  data = spec.get('data', '')
  parts = [paint(f'#{node["node_id"]}', BOLD) + ' ' +
           paint(shorten(spec['task'], 40), CYAN)]
  if data:
    parts.append(paint('data', DIM) + f' {len(data)} ch "' +
                 shorten(data, 24) + '"')
  status = node['status']
  answer = node.get('answer')
  status_text = paint(shorten(status, 20), _STATUS_COLOR.get(status, DIM))
  if answer is not None:
    status_text += ' → "' + shorten(answer, 30) + '"'
  parts.append(status_text)
  success = node.get('success')
  parts.append(paint('success ', DIM) +
               paint(_number(success), _success_color(success)))
  if node.get('reward') is not None:
    parts.append(paint('reward ', DIM) + _number(node['reward']))
  if node.get('advantage') is not None:
    advantage = node['advantage']
    parts.append(paint('adv ', DIM) +
                 paint(_number(advantage, signed=True),
                       _sign_color(advantage)))
  parts.append(paint(f'{len(node.get("tokens", ()))} tok', DIM))
  return ' · '.join(parts)


def _shown(nodes: Mapping[int, Mapping[str, Any]], max_children: int,
           max_nodes: int) -> set[int]:
  """Ids to print: breadth first from the root, `max_children` a node,
  `max_nodes` in all (0: no limit)."""
  root = next(iter(nodes))
  shown, queue = {root}, collections.deque([root])
  while queue:
    for child in child_ids(nodes[queue.popleft()])[:max_children or None]:
      if max_nodes and len(shown) >= max_nodes:
        return shown
      shown.add(child)
      queue.append(child)
  return shown


def _subtree_sizes(nodes: Mapping[int, Mapping[str, Any]]) -> dict[int, int]:
  sizes: dict[int, int] = {}

  def size(node_id: int) -> int:
    if node_id not in sizes:
      sizes[node_id] = 1 + sum(size(c) for c in child_ids(nodes[node_id]))
    return sizes[node_id]

  for node_id in nodes:
    size(node_id)
  return sizes


def tree_header(tree: Mapping[str, Any], paint: Painter) -> str:
  """The tree's summary: id, group, seed, status, size."""
  nodes = tree['nodes']
  depth = max(n['depth'] for n in nodes)
  num_tokens = sum(len(n.get('tokens', ())) for n in nodes)
  return ' · '.join([
      paint(f'tree {printable(tree["tree_id"])}', BOLD),
      f'group {printable(tree.get("group", 0))}',
      f'seed {printable(tree["seed"])}',
      paint(shorten(tree['status'], 20),
            _STATUS_COLOR.get(tree['status'], DIM)),
      f'{len(nodes)} node{"s" if len(nodes) != 1 else ""}',
      f'depth {depth}', f'{num_tokens} tokens'])


def format_tree(tree: Mapping[str, Any], *, max_children: int = 4,
                max_nodes: int = 40, color: bool = False) -> str:
  """A tree record as indented text.

  Args:
    tree: a tree record (`Tree.to_json`).
    max_children: children shown per node (0: all).
    max_nodes: nodes shown in all (0: all).
    color: ANSI colours.

  Returns:
    The header line, then one line a node, without a final newline.
  """
  paint = Painter(color)
  nodes = {n['node_id']: n for n in tree['nodes']}
  shown = _shown(nodes, max_children, max_nodes)
  sizes = _subtree_sizes(nodes)
  lines = [tree_header(tree, paint)]

  def visit(node_id: int, prefix: str, branch: str, below: str) -> None:
    lines.append(prefix + paint(branch, DIM) + node_line(nodes[node_id],
                                                         paint))
    children = child_ids(nodes[node_id])
    visible = [c for c in children if c in shown]
    hidden = [c for c in children if c not in shown]
    for i, child in enumerate(visible):
      last = i == len(visible) - 1 and not hidden
      visit(child, prefix + below, '└─ ' if last else '├─ ',
            '   ' if last else '│  ')
    if hidden:
      count = sum(sizes[c] for c in hidden)
      lines.append(prefix + below + paint(
          f'└─ ... {len(hidden)} more '
          f'{"child" if len(hidden) == 1 else "children"} ({count} '
          f'{"node" if count == 1 else "nodes"})', DIM))

  visit(next(iter(nodes)), '', '', '')
  return '\n'.join(lines)


def format_turns(node: Mapping[str, Any], color: bool = False) -> str:
  """A node's turns, each under a label of its kind."""
  paint = Painter(color)
  turns = node.get('turns')
  header = paint('node ', BOLD) + node_line(node, paint)
  if turns is None:
    return header + '\n(no turns: the file stores none and no tokenizer ' \
        'was found)'
  lines = [header]
  for turn in turns:
    lines.append(paint(printable(f'--- {turn["kind"]} [{turn["start"]}:'
                                 f'{turn["end"]}]'),
                       _TURN_COLOR.get(turn['kind'], DIM)))
    lines.append(printable(turn['text']))
  return '\n'.join(lines)


def format_files(files: Sequence[run_files.TreeFile],
                 contents: Mapping[str, Sequence[Mapping[str, Any]]],
                 color: bool = False) -> str:
  """The table of a workdir's tree files.

  Args:
    files: the files, in order.
    contents: file name -> its tree records.
    color: ANSI colours.

  Returns:
    One header line and one line a file: name, phase, step, trees, nodes,
    root success of the saved trees and as the run logged it.
  """
  paint = Painter(color)
  # File names come from the file system: printable too.
  names = [printable(f.name) for f in files]
  phases = [printable(f.phase + (f' {f.level}' if f.level else ''))
            for f in files]
  width = max([len('file')] + [len(n) for n in names])
  phase_width = max([len('phase')] + [len(p) for p in phases])
  rows = [paint(f'{"file":<{width}}  {"phase":<{phase_width}}  '
                f'{"step":>6}  {"trees":>5}  {"nodes":>6}  '
                f'{"root success":>12}  {"run":>5}', BOLD)]
  for f, name, phase in zip(files, names, phases):
    trees = contents[f.name]
    saved = run_files.root_success(trees)
    rows.append(
        f'{name:<{width}}  {phase:<{phase_width}}  '
        f'{"-" if f.step is None else f.step:>6}  {len(trees):>5}  '
        f'{sum(len(t["nodes"]) for t in trees):>6}  '
        + paint(f'{_number(saved):>12}', _success_color(saved)) +
        f'  {_number(f.run_root_success):>5}')
  return '\n'.join(rows)
