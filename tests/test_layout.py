"""The module boundaries of docs/design.md, checked on the source."""

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'rao_jax'

# package -> rao_jax packages and modules it may import (besides itself).
# Library packages first: they never see the runtime, the training layer or
# a mode; `runtime` (checkpoints, workdir, logs, processes) serves
# `training`, which serves the modes (the top-level modules).
_ALLOWED = {
    'model': set(),
    'sampler': {'model'},
    'sandbox': set(),
    'agent': {'model', 'sampler', 'sandbox'},
    'tasks': {'agent', 'model'},
    'rl': {'agent', 'model'},
    'viewer': {'agent', 'model'},
    'plan': {'config', 'model', 'rl', 'sampler'},
    'runtime': {'config', 'agent', 'model', 'viewer'},
    'training': {'config', 'runtime', 'agent', 'model', 'rl', 'sampler',
                 'tasks'},
}
_LIBRARY = ('model', 'sampler', 'sandbox', 'agent', 'tasks', 'rl', 'viewer',
            'plan')
# The entry point and the modes it dispatches to.
_MODES = ('main', 'train', 'evaluate', 'export', 'generate')
# Only the config boundary and the entry point see ml_collections.
_CONFIG_DICT_USERS = {'config.py', 'main.py'}


def _imports(path: pathlib.Path) -> set[str]:
  """Absolute module names `path` imports."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return names


def _sources():
  for path in sorted(_PACKAGE.rglob('*.py')):
    yield path.relative_to(_PACKAGE), path


@pytest.mark.parametrize('package', sorted(_ALLOWED))
def test_packages_import_one_way(package):
  allowed = _ALLOWED[package] | {package}
  for relative, path in _sources():
    if relative.parts[0] != package:
      continue
    for name in _imports(path):
      parts = name.split('.')
      if parts[0] == 'rao_jax' and len(parts) > 1:
        assert parts[1] in allowed, f'{relative} imports {name}'


def test_library_packages_never_import_the_runtime_or_a_mode():
  forbidden = {'runtime', 'training', *_MODES}
  for relative, path in _sources():
    if relative.parts[0] not in _LIBRARY:
      continue
    for name in _imports(path):
      parts = name.split('.')
      if parts[0] == 'rao_jax' and len(parts) > 1:
        assert parts[1] not in forbidden, f'{relative} imports {name}'


def test_every_module_is_in_a_package_but_a_few():
  top = sorted(p.name for p in _PACKAGE.glob('*.py'))
  assert len(top) <= 8, top
  packages = {p.name for p in _PACKAGE.iterdir()
              if (p / '__init__.py').exists()}
  assert packages == set(_ALLOWED), packages


def test_no_function_is_longer_than_80_lines():
  for relative, path in _sources():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        assert lines <= 80, f'{relative}:{node.lineno} {node.name}: {lines}'


def test_the_training_loop_names_no_other_mode():
  # Modes are modules reached through `main.MODES`; the loop trains the
  # phases it is given.
  source = (_PACKAGE / 'train.py').read_text()
  for mode in ('eval', 'export', 'generate', 'plan'):
    assert f"'{mode}'" not in source and f'"{mode}"' not in source, mode
  assert 'config.mode ==' not in source and 'config.mode in' not in source


def test_the_mode_table_covers_every_mode():
  from rao_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from rao_jax import main  # pylint: disable=g-import-not-at-top
  from rao_jax.training import phases  # pylint: disable=g-import-not-at-top
  assert tuple(main.MODES) == tuple(config_lib.MODES)
  for mode, (module, kwargs) in main.MODES.items():
    assert callable(importlib.import_module(module).run), mode
    assert set(kwargs.get('phase_names', ())) <= {phases.SFT, phases.RL}


def test_a_refusal_imports_no_mode():
  # A refused command answers before the training stack is imported.
  code = ('import sys; from rao_jax import main; '
          'print(sorted(m for m in ("rao_jax.train", "rao_jax.evaluate", '
          '"orbax.checkpoint", "tensorboardX") if m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, check=True, cwd=_PACKAGE.parent)
  assert result.stdout.strip() == '[]', result.stdout


def test_ml_collections_stops_at_the_config_boundary():
  for relative, path in _sources():
    uses = any(n.split('.')[0] == 'ml_collections' for n in _imports(path))
    if uses:
      assert str(relative) in _CONFIG_DICT_USERS, relative


def test_nothing_imports_the_trainer():
  for relative, path in _sources():
    if str(relative) in ('train.py', 'main.py'):
      continue
    assert 'rao_jax.train' not in _imports(path), relative


def test_nothing_points_outside_the_repository():
  root = _PACKAGE.parent
  for directory in ('rao_jax', 'configs', 'docs', 'benchmarks', 'tests'):
    for path in sorted((root / directory).rglob('*')):
      if path.suffix in ('.py', '.md') and path.name != os.path.basename(
          __file__):
        text = path.read_text()
        assert '../shared' not in text and 'shared folder' not in text, path
  assert '../shared' not in (root / 'README.md').read_text()


def test_importing_rao_jax_starts_no_xla_backend():
  # A multi-process run calls `jax.distributed.initialize` after its
  # imports, which fails once any module computed with jax at import.
  modules = [str(path.with_suffix('')).replace(os.sep, '.')
             for path, _ in _sources() if path.name != '__main__.py']
  code = ('import importlib\n'
          f'for m in {modules!r}:\n'
          "  importlib.import_module('rao_jax.' + m.removesuffix('.__init__'))\n"
          'from jax._src import xla_bridge\n'
          'assert not xla_bridge._backends, "a module started the backend"\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, cwd=_PACKAGE.parent, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]


def test_the_readme_stays_short():
  # Users read it first; what does not fit goes to docs/.
  readme = (_PACKAGE.parent / 'README.md').read_text()
  assert len(readme.splitlines()) <= 200
