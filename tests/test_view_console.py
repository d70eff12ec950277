"""The console view and `python -m rao_jax.viewer`: a workdir's file listing,
a tree as text, a node's turns, and bad input."""

import io
import json
import os
import re
import subprocess
import sys

import pytest

from rao_jax.viewer import cli as view
from rao_jax.agent import tree as tree_lib
from rao_jax.viewer import console
from rao_jax.viewer import run_files

import view_testing

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NODE_LINE = re.compile(r'#(\d+) ')
_HIDDEN = re.compile(r'\.\.\. (\d+) more child(?:ren)? \((\d+) nodes?\)')


@pytest.fixture(scope='module')
def groups(tmp_path_factory):
  """Two RL groups of 4 medium-document trees with rewards and advantages."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  examples = view_testing.document_examples(data_dir, 'medium')
  return (view_testing.group_trees(examples[0], 4, 0.05, group=0) +
          view_testing.group_trees(examples[1], 4, 0.05, group=1))


@pytest.fixture(scope='module')
def workdir(groups, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('run'))
  view_testing.write_workdir(path, {'sft_000002': groups[:2],
                                    'rl_000003': groups[4:],
                                    'rl_000004': groups,
                                    'after_rl_medium': groups[:1]})
  return path


def _records(trees):
  return [t.to_json(view_testing.TOKENIZER) for t in trees]


def _run(*argv):
  out = io.StringIO()
  view.run(list(argv), out=out)
  return out.getvalue()


def test_tree_text_counts_every_node_shown_or_left_out(groups):
  record = _records(groups[:1])[0]
  text = console.format_tree(record, max_children=2, max_nodes=25)
  lines = text.splitlines()
  assert f'{len(record["nodes"])} nodes' in lines[0]
  shown = [int(_NODE_LINE.search(line).group(1)) for line in lines[1:]
           if _NODE_LINE.search(line)]
  hidden = sum(int(m.group(2)) for m in _HIDDEN.finditer(text))
  assert len(shown) == 25
  assert len(shown) + hidden == len(record['nodes'])
  assert shown[0] == 0
  root = record['nodes'][0]
  assert root['spec']['task'] in lines[1] and f'"{root["answer"]}"' in lines[1]
  assert f'adv {root["advantage"]:+.2f}' in lines[1]


def test_tree_text_shows_all_without_limits(groups):
  record = _records(groups[1:2])[0]
  text = console.format_tree(record, max_children=0, max_nodes=0)
  assert len(text.splitlines()) == 1 + len(record['nodes'])
  assert not _HIDDEN.search(text)


def test_colour_only_on_a_terminal_without_no_color(groups, monkeypatch):
  record = _records(groups[:1])[0]
  assert '\x1b[' in console.format_tree(record, color=True)
  assert '\x1b[' not in console.format_tree(record, color=False)

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  monkeypatch.delenv('NO_COLOR', raising=False)
  assert console.use_color(Terminal())
  assert not console.use_color(io.StringIO())
  monkeypatch.setenv('NO_COLOR', '1')
  assert not console.use_color(Terminal())


def test_shorten_marks_newlines_and_cuts():
  assert console.shorten('ab\ncd', 10) == 'ab↵cd'
  assert console.shorten('abcdefgh', 5) == 'abcd…'


def test_workdir_lists_files_and_prints_the_newest_rl_tree(workdir, groups):
  output = _run(workdir)
  lines = output.splitlines()
  table = lines[:5]
  assert table[0].split()[:3] == ['file', 'phase', 'step']
  names = [line.split()[0] for line in table[1:]]
  assert names == ['sft_000002', 'rl_000003', 'rl_000004',
                   'after_rl_medium']
  rl_row = table[3].split()
  # phase, step, trees, nodes, saved root success, logged root success.
  assert rl_row[1:5] == ['rl', '4', '8',
                         str(sum(len(t.nodes) for t in groups))]
  assert float(rl_row[5]) == pytest.approx(
      sum(t.root.success for t in groups) / 8, abs=0.005)
  assert rl_row[6] == '0.50'
  assert table[4].split()[1:4] == ['after_rl', 'medium', '4']
  assert table[4].split()[-1] == '0.25'
  assert 'rl_000004:' in lines
  assert f'tree {groups[0].tree_id} ·' in output


def test_tree_and_node_flags(workdir, groups):
  path = os.path.join(workdir, 'trees', 'rl_000004.jsonl')
  tree = groups[5]
  output = _run(path, '--tree', str(tree.tree_id), '--max-nodes', '5')
  assert output.splitlines()[1].startswith(f'tree {tree.tree_id} ·')
  output = _run(path, '--tree', str(tree.tree_id), '--node', '1')
  node = tree.nodes[1]
  for turn in tree_lib.turns(node, view_testing.TOKENIZER):
    assert f'--- {turn["kind"]} [{turn["start"]}:{turn["end"]}]' in output
    assert turn['text'] in output


def test_bad_tree_and_node_ids_are_named(workdir):
  path = os.path.join(workdir, 'trees', 'sft_000002.jsonl')
  with pytest.raises(ValueError, match=r'--tree=99: sft_000002 has no such '
                     r'tree \(ids: 0, 1\)'):
    _run(path, '--tree', '99')
  with pytest.raises(ValueError, match='--node=9999'):
    _run(path, '--node', '9999')


def test_files_without_turns_decode_with_the_runs_byte_tokenizer(
    groups, tmp_path):
  view_testing.write_workdir(str(tmp_path), {'rl_000001': groups[:2]},
                             with_turns=False)
  path = str(tmp_path / 'trees' / 'rl_000001.jsonl')
  with open(path) as f:
    assert 'turns' not in json.loads(f.readline())['nodes'][0]
  tokenizer = run_files.run_tokenizer(str(tmp_path))
  records = run_files.read_trees(path, tokenizer)
  assert records[1]['nodes'][3]['turns'] == tree_lib.turns(
      groups[1].nodes[3], view_testing.TOKENIZER)
  # Away from its workdir nothing names the tokenizer: no turns, said so.
  alone = tmp_path / 'alone.jsonl'
  alone.write_text(open(path).read())
  assert run_files.read_trees(str(alone))[0]['nodes'][0]['turns'] is None
  assert 'no turns' in _run(str(alone), '--node', '0')


def test_a_bad_path_or_file_gets_a_clear_error(tmp_path):
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"tree_id": 0}\n')
  with pytest.raises(ValueError, match='record 1 is not a call tree'):
    run_files.read_trees(str(bad))
  bad.write_text('not json\n')
  with pytest.raises(ValueError, match=r'bad.jsonl:1: not JSON'):
    run_files.read_trees(str(bad))
  with pytest.raises(FileNotFoundError, match='no trees/ folder'):
    run_files.list_tree_files(str(tmp_path))
  result = subprocess.run(
      [sys.executable, '-m', 'rao_jax.viewer', str(tmp_path / 'missing')],
      cwd=_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert 'error:' in result.stderr and 'missing' in result.stderr
  assert 'Traceback' not in result.stderr


# What a model may write (the byte tokenizer emits any byte): a terminal
# title, clear screen, a one-byte C1 CSI, a right-to-left override; and
# for the HTML page, markup that must stay text.
HOSTILE = ('x\x1b]0;pwned\x07\x1b[2J\x9b31m\r\x08\u202eevil'
           '</script><img src=x onerror=alert(1)><!--')
_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]')


def _hostile_workdir(path):
  """A workdir whose one saved tree carries HOSTILE in every text field."""
  text = dict(task=HOSTILE, data=HOSTILE, format=HOSTILE)
  turn = dict(kind='policy', start=0, end=2, text=HOSTILE)
  nodes = [dict(node_id=i, parent=None if i == 0 else 0, depth=min(i, 1),
                spec=text, status='done' if i == 0 else HOSTILE,
                answer=HOSTILE, success=1.0, tokens=[1, 2],
                children=[[1]] if i == 0 else [], turns=[turn])
           for i in range(2)]
  tree = dict(tree_id=0, group=0, seed=0, status=HOSTILE, nodes=nodes)
  os.makedirs(path / 'trees')
  (path / 'config.json').write_text(json.dumps(
      {'tokenizer': {'kind': 'byte', 'path': ''}}))
  (path / 'trees' / 'rl_000001.jsonl').write_text(json.dumps(tree) + '\n')
  return path


def test_control_characters_never_reach_the_terminal(tmp_path):
  workdir = _hostile_workdir(tmp_path / 'run')
  tree_file = str(workdir / 'trees' / 'rl_000001.jsonl')
  for argv in ([str(workdir)], [tree_file, '--node', '0'],
               [tree_file, '--node', '1'], [tree_file, '--tree', '7']):
    result = subprocess.run(
        [sys.executable, '-m', 'rao_jax.viewer', *argv], cwd=_ROOT,
        capture_output=True, text=True, timeout=120)
    printed = result.stdout + result.stderr
    assert not _CONTROL.search(printed), (argv, printed)
    if argv[-1] != '7':
      assert result.returncode == 0, result.stderr
      # Shown, not obeyed: the escapes are readable.
      assert '\\x1b]0;pwned\\x07' in printed
    if '--node' in argv:  # a node's turns print whole
      assert '\\u202eevil' in printed
  assert console.printable('a\tb\nc\x1b') == 'a\tb\nc\\x1b'


def test_html_page_keeps_hostile_text_as_text(tmp_path):
  # The page embeds trees as JSON in <script type="application/json"> and
  # its script sets only textContent: no text can become markup.
  import html.parser  # pylint: disable=import-outside-toplevel
  workdir = _hostile_workdir(tmp_path / 'run')
  page = tmp_path / 'page.html'
  _run(str(workdir), '--html', str(page))

  class Elements(html.parser.HTMLParser):
    def __init__(self):
      super().__init__()
      self.tags, self.scripts, self.open_id = [], {}, None

    def handle_starttag(self, tag, attrs):
      self.tags.append(tag)
      if tag == 'script':
        self.open_id = dict(attrs).get('id', 'code')

    def handle_data(self, data):
      if self.open_id:
        self.scripts[self.open_id] = data

    def handle_endtag(self, tag):
      if tag == 'script':
        self.open_id = None

  parsed = Elements()
  parsed.feed(page.read_text(encoding='utf-8'))
  assert 'img' not in parsed.tags
  assert parsed.tags.count('script') == 3
  assert sorted(parsed.scripts) == ['code', 'rao-file-0', 'rao-meta']
  (tree,) = json.loads(parsed.scripts['rao-file-0'])
  root = tree['nodes'][0]
  assert root['task'] == root['answer'] == HOSTILE
  assert root['turns'][0]['text'] == HOSTILE
  script = parsed.scripts['code']
  for sink in ('innerHTML', 'outerHTML', 'insertAdjacentHTML',
               'document.write'):
    assert sink not in script
