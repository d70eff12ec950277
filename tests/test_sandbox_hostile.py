"""Hostile model code against the sandbox: every escape or runaway ends
as an error observation (or a killed and replaced worker), and the
trainer's process, files and pool go on unharmed.

Model code reaches the real `os` through an allowed module's globals
(`random._os`) and the real importer through a module's `__builtins__`:
the Python-level limits are meant to be bypassed here, so that what is
tested is the operating-system layers (`sandbox.confine`).
"""

import os
import socket
import tempfile

import pytest

from rao_jax import sandbox

OS = 'import random\nos = random._os\n'
IMPORT = "import json\nreal_import = json.__builtins__['__import__']\n"


@pytest.fixture(scope='module')
def pool():
  with sandbox.WorkerPool(sandbox.Limits(
      # Wall-clock time well past the CPU time: on a loaded machine a
      # CPU second takes several.
      num_workers=2, block_cpu_s=0.5, block_wall_s=10.0,
      memory_mb=512, file_mb=1, dir_mb=4, dir_files=50,
      output_chars=200)) as p:
    yield p


def _run(pool, code, key='hostile', context='ctx'):
  return pool.run(key, code, context)


def _healthy(pool, key):
  """The pool still runs honest code, in a fresh or kept namespace."""
  result = pool.run(key, 'print(len(context) + 1)', 'abc')
  assert result.error is None and result.output == '4\n', result


def test_every_layer_applied(pool):
  layers = pool.layers
  for name in ('rlimits', 'landlock', 'seccomp'):
    assert layers[name] == 'applied', layers
  if os.geteuid() == 0:
    assert layers['privileges'] == 'applied'
    result = _run(pool, OS + 'print(os.getuid(), os.getgid())')
    assert result.output == '65534 65534\n', result


@pytest.mark.parametrize('path', ['/etc/passwd', '/proc/self/environ',
                                  os.path.abspath(__file__)])
def test_reading_outside_is_refused(pool, path):
  result = _run(pool, OS + f'print(os.open({path!r}, os.O_RDONLY))')
  assert result.error and 'PermissionError' in result.error, result
  assert result.output == ''


def test_reading_the_trainers_memory_is_refused(pool):
  code = OS + f"os.open('/proc/{os.getpid()}/mem', os.O_RDONLY)"
  result = _run(pool, code)
  assert 'PermissionError' in result.error, result


def test_writing_outside_is_refused(pool):
  target = os.path.join(tempfile.gettempdir(), 'rao_sandbox_escape')
  code = OS + f'os.open({target!r}, os.O_CREAT | os.O_WRONLY)'
  result = _run(pool, code)
  assert 'PermissionError' in result.error, result
  assert not os.path.exists(target)


def test_private_directory_is_writable_up_to_the_file_limit(pool):
  ok = _run(pool, OS + "fd = os.open('note', os.O_CREAT | os.O_WRONLY)\n"
            "print(os.write(fd, b'x' * 1000))")
  assert ok.error is None and ok.output == '1000\n', ok
  big = _run(pool, OS + "fd = os.open('big', os.O_CREAT | os.O_WRONLY)\n"
             'n = 0\nwhile n < (4 << 20):\n'
             "  n += os.write(fd, b'x' * 65536)")
  assert big.error and 'File too large' in big.error, big
  size = _run(pool, OS + "print(os.stat('big').st_size)")
  assert size.output == f'{1 << 20}\n', size


@pytest.mark.parametrize('files,size', [(10, 1000000), (80, 10)])
def test_filling_the_directory_replaces_the_worker(pool, files, size):
  before = pool.replaced
  code = OS + (f'for i in range({files}):\n'
               "  fd = os.open(f'f{i}', os.O_CREAT | os.O_WRONLY)\n"
               f"  os.write(fd, b'x' * {size})\n  os.close(fd)")
  result = _run(pool, code, key='disk')
  assert 'in its directory' in result.error, result
  assert pool.replaced == before + 1
  _healthy(pool, 'disk')


def test_open_and_builtins_are_gone(pool):
  for name in ('open', 'exec', 'eval', 'compile'):
    result = _run(pool, f'{name}')
    assert result.error == f"line 1: NameError: name '{name}' is not " \
        'defined', result


@pytest.mark.parametrize('code', [
    'import os', 'import sys', 'import subprocess', 'import ctypes',
    'import socket', '__import__("os")', 'from . import x',
    'import importlib', 'import json.decoder\nimport os.path'])
def test_imports_off_the_allow_list_are_refused(pool, code):
  result = _run(pool, code)
  assert 'ImportError' in result.error and 'not allowed' in result.error, (
      code, result)


@pytest.mark.parametrize('module', ['socket', 'multiprocessing', 'pty',
                                    'sqlite3', 'urllib.request'])
def test_the_real_importer_cannot_load_new_modules(pool, module):
  # The importer itself is reachable; the files it would read are not.
  result = _run(pool, IMPORT + f'real_import({module!r})')
  assert result.error is not None, result
  assert any(e in result.error for e in ('PermissionError', 'ImportError',
                                         'ModuleNotFoundError')), result


def test_ctypes_reaches_libc_but_not_past_the_kernel(pool):
  # The confinement packages load ctypes, so model code can reach it and
  # call libc directly: the kernel's layers still answer.
  code = IMPORT + ("ctypes = real_import('ctypes')\n"
                   'libc = ctypes.CDLL(None, use_errno=True)\n'
                   'print(libc.socket(2, 1, 0), libc.fork(),'
                   " libc.open(b'/etc/passwd', 0))")
  result = _run(pool, code)
  assert result.output == '-1 -1 -1\n', result


def test_subprocess_runs_nothing(pool):
  code = OS + ("subprocess = os.sys.modules.get('subprocess') or "
               "json.__builtins__['__import__']('subprocess')\n"
               "subprocess.run(['/bin/true'])")
  result = _run(pool, 'import json\n' + code)
  assert result.error and 'PermissionError' in result.error, result


def test_sockets_are_refused_and_nothing_connects(pool):
  listener = socket.socket()
  listener.bind(('127.0.0.1', 0))
  listener.listen(1)
  listener.settimeout(0.5)
  port = listener.getsockname()[1]
  # `_socket` is not loaded in a worker; the socket call itself is what
  # a loaded one would make, and seccomp refuses it (test_confine).
  code = (IMPORT + "s = real_import('_socket')\n"
          f"c = s.socket(); c.connect(('127.0.0.1', {port}))")
  result = _run(pool, code)
  assert result.error is not None, result
  with pytest.raises(socket.timeout):
    listener.accept()
  listener.close()


@pytest.mark.parametrize('code', [
    OS + 'os.fork()',
    OS + "os.posix_spawn('/bin/true', ['true'], {})",
    OS + "os.execv('/bin/sh', ['sh', '-c', 'true'])",
])
def test_new_processes_are_refused(pool, code):
  result = _run(pool, code)
  assert result.error and 'PermissionError' in result.error, result


def test_system_runs_nothing(pool):
  marker = os.path.join(tempfile.gettempdir(), 'rao_sandbox_system')
  result = _run(pool, OS + f"print(os.system('touch {marker}'))")
  assert result.output.strip() not in ('', '0'), result
  assert not os.path.exists(marker)


def test_signals_to_the_trainer_are_refused(pool):
  for sig in (9, 15, 2):
    result = _run(pool, OS + f'os.kill({os.getpid()}, {sig})')
    assert 'PermissionError' in result.error, result
    result = _run(pool, OS + f'os.kill(os.getppid(), {sig})')
    assert 'PermissionError' in result.error, result
  _healthy(pool, 'hostile')


def test_huge_allocations_fail_and_the_namespace_stays(pool):
  _run(pool, 'kept = 41', key='mem')
  for code in ('x = bytearray(8 << 30)', "x = 'a' * (1 << 33)",
               'x = [0] * (1 << 31)'):
    result = _run(pool, code, key='mem')
    assert 'MemoryError' in result.error, result
  result = _run(pool, 'print(kept + 1)', key='mem')
  assert result.output == '42\n' and not result.lost, result


def test_infinite_loop_hits_the_cpu_timer(pool):
  _run(pool, 'kept = 1', key='loop')
  result = _run(pool, 'while True:\n  pass', key='loop')
  assert 'CPU seconds' in result.error, result
  assert _run(pool, 'print(kept)', key='loop').output == '1\n'


def test_infinite_recursion_is_an_error(pool):
  result = _run(pool, 'def f(n):\n  return f(n + 1)\nf(0)')
  assert 'RecursionError' in result.error, result


def test_a_long_c_call_is_killed_by_the_wall_clock(pool):
  before = pool.replaced
  _run(pool, 'kept = 1', key='c_loop')
  # One C call the CPU timer cannot interrupt (it checks between
  # bytecodes): the trainer kills the worker and starts another.
  result = _run(pool, 'sum(range(10 ** 13))', key='c_loop')
  assert 'killed and replaced' in result.error, result
  assert pool.replaced == before + 1
  again = _run(pool, 'print(context)', key='c_loop', context='fresh')
  assert again.lost and again.output == 'fresh\n', again


def test_disabling_the_timer_is_killed_by_the_wall_clock(pool):
  code = (OS + "signal = os.sys.modules['signal']\n"
          'signal.setitimer(signal.ITIMER_PROF, 0)\n'
          'signal.signal(signal.SIGPROF, signal.SIG_IGN)\nwhile True:\n'
          '  pass')
  result = _run(pool, code, key='no_timer')
  assert 'killed and replaced' in result.error, result
  _healthy(pool, 'no_timer')


def test_output_floods_are_truncated_and_counted(pool):
  result = _run(pool, "print('x' * 10 ** 7)")
  assert len(result.output) == 200 and result.dropped == 10 ** 7 + 1 - 200
  result = _run(pool, "while True:\n  print('y' * 100)")
  assert len(result.output) == 200 and 'CPU seconds' in result.error


def test_a_worker_that_exits_is_replaced(pool):
  before = pool.replaced
  result = _run(pool, OS + 'os._exit(3)', key='exit')
  assert 'exit status 3' in result.error, result
  assert pool.replaced == before + 1
  _healthy(pool, 'exit')


def test_garbage_on_the_wire_kills_the_worker(pool):
  before = pool.replaced
  # Write a frame header announcing 4 GB to every descriptor the worker
  # may hold: the trainer refuses the frame and replaces the worker.
  code = OS + ('for fd in range(3, 12):\n  try:\n'
               "    os.write(fd, b'\\xff\\xff\\xff\\xff')\n"
               '  except OSError:\n    pass')
  result = _run(pool, code, key='wire')
  assert 'broke the wire' in result.error, result
  assert pool.replaced == before + 1
  _healthy(pool, 'wire')


def test_the_trainer_is_unharmed(pool):
  # Every hostile block above ran in this pool; it still answers, this
  # process still runs, and the round trip is milliseconds.
  assert os.getpid() not in pool.pids()
  _healthy(pool, 'final')
  assert pool.ping() < 0.5
