"""What each confinement layer guards on its own (`sandbox.confine`).

Each case applies one layer in a fresh interpreter and shows what it
refuses and what it lets through, so a layer that stopped working (an old
kernel, a missing library) fails here by name, not somewhere in the
hostile suite behind another layer.
"""

import os
import subprocess
import sys
import tempfile

import pytest

_SANDBOX = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'rao_jax', 'sandbox')


def _confined(layer_call: str, probe: str) -> str:
  """Runs `probe` after `layer_call` in a new interpreter; its stdout."""
  workdir = tempfile.mkdtemp()
  script = (f'import sys; sys.path.insert(0, {_SANDBOX!r})\n'
            'import confine, os, socket, errno\n'
            f'workdir = {workdir!r}\n{layer_call}\n'
            'def attempt(f):\n  try:\n    f()\n    return "ok"\n'
            '  except OSError as e:\n    return errno.errorcode[e.errno]\n'
            '  except MemoryError:\n    return "MemoryError"\n'
            f'{probe}\n')
  out = subprocess.run([sys.executable, '-I', '-c', script],
                       capture_output=True, text=True, timeout=60,
                       check=True)
  return out.stdout.strip()


_READ = "attempt(lambda: open('/etc/hostname').read())"
_WRITE = "attempt(lambda: open(os.path.join(workdir, 'f'), 'w').write('x'))"
_SOCKET = 'attempt(lambda: socket.socket().close())'
# The child exits at once; only the parent prints.
_FORK = ('attempt(lambda: (lambda pid: os._exit(0) if pid == 0 else '
         'os.waitpid(pid, 0))(os.fork()))')


def test_seccomp_refuses_sockets_and_processes_but_not_files():
  out = _confined("print(confine.filter_syscalls(__import__('pyseccomp')))",
                  f'print({_SOCKET}, {_FORK}, {_READ}, {_WRITE})')
  assert out.splitlines() == ['applied', 'EPERM EPERM ok ok']


def test_landlock_refuses_files_outside_but_not_sockets():
  out = _confined("print(confine.restrict_files(workdir, "
                  "__import__('landlock')))",
                  f'print({_READ}, {_WRITE}, {_SOCKET})')
  assert out.splitlines() == ['applied', 'EACCES ok ok']


def test_rlimits_refuse_memory_and_file_size():
  out = _confined(
      'print(confine.set_rlimits(memory_bytes=256 << 20, '
      'file_bytes=1 << 16, cpu_s=60, open_files=32))',
      "print(attempt(lambda: bytearray(1 << 30)), "
      "attempt(lambda: open(os.path.join(workdir, 'g'), 'wb')"
      ".write(b'x' * (1 << 17))), "
      "attempt(lambda: [open('/dev/null') for _ in range(64)]))")
  assert out.splitlines() == ['applied', 'MemoryError EFBIG EMFILE']


@pytest.mark.skipif(os.geteuid() != 0, reason='drops root only')
def test_privileges_drop_root_to_nobody():
  out = _confined('print(confine.drop_privileges(workdir))',
                  'print(os.getuid(), os.getgid(), os.getgroups())')
  assert out.splitlines() == ['applied', '65534 65534 []']
