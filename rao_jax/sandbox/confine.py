"""The operating-system layers a sandbox worker puts around itself.

A worker applies these once, after loading the modules model code may
import and before it reads its first block; none of them can be undone
from inside. Each guards something the others do not:

- rlimits (`resource`): address space (a huge allocation fails with
  MemoryError), file size (a write past it fails), open files, no core
  dumps, CPU seconds over the worker's life (a backstop: SIGXCPU kills a
  worker whose blocks add up past it), and no new processes
  (RLIMIT_NPROC 0, which the kernel enforces only for a non-root user).
- privileges: a worker started as root becomes `nobody` (uid/gid 65534,
  no supplementary groups), so RLIMIT_NPROC holds and root's file
  permissions are gone.
- landlock (the `landlock` package, Linux >= 5.13): the file system is
  reduced to the worker's private directory, read and write; every other
  path, /proc and the trainer's files included, is refused by the kernel
  whatever the path's permissions.
- seccomp (the `pyseccomp` package over libseccomp): system calls refused
  with EPERM: sockets (no network, not even a local one), new processes
  and programs (fork, vfork, clone of anything but a thread, execve),
  signals to any process (kill, tkill, tgkill, sigqueue), ptrace, and the
  calls that change these layers (setrlimit/prlimit, mount, chroot,
  unshare, setns, bpf). clone3 answers ENOSYS, so the C library falls back
  to clone, whose flags the filter can read.

This module imports only the standard library at its top: the worker
loads it without rao_jax on its path.
"""

from __future__ import annotations

import errno
import os
import resource

NOBODY = 65534
CLONE_THREAD = 0x00010000
# Refused outright (EPERM): the module doc says why.
DENIED_SYSCALLS = (
    'socket', 'socketpair', 'connect', 'bind', 'listen', 'accept',
    'accept4', 'fork', 'vfork', 'execve', 'execveat', 'ptrace', 'kill',
    'tkill', 'tgkill', 'rt_sigqueueinfo', 'rt_tgsigqueueinfo',
    'pidfd_send_signal', 'pidfd_open', 'setrlimit', 'prlimit64', 'mount',
    'umount2', 'chroot', 'pivot_root', 'unshare', 'setns', 'bpf',
    'process_vm_readv', 'process_vm_writev', 'keyctl', 'add_key',
    'request_key', 'perf_event_open', 'init_module', 'finit_module',
    'reboot', 'swapon', 'swapoff', 'personality', 'userfaultfd')


def set_rlimits(*, memory_bytes: int, file_bytes: int, cpu_s: int,
                open_files: int) -> str:
  """Hard and soft limits alike, so code cannot raise them back."""
  limits = {resource.RLIMIT_AS: memory_bytes,
            resource.RLIMIT_FSIZE: file_bytes,
            resource.RLIMIT_CPU: cpu_s,
            resource.RLIMIT_NOFILE: open_files,
            resource.RLIMIT_CORE: 0,
            resource.RLIMIT_NPROC: 0}
  for which, value in limits.items():
    resource.setrlimit(which, (value, value))
  return 'applied'


def drop_privileges(workdir: str) -> str:
  """Becomes `nobody` when started as root (the private directory is
  handed over first, so the worker can still write there)."""
  if os.geteuid() != 0:
    return 'skipped: not root'
  os.chown(workdir, NOBODY, NOBODY)
  os.setgroups([])
  os.setresgid(NOBODY, NOBODY, NOBODY)
  os.setresuid(NOBODY, NOBODY, NOBODY)
  return 'applied'


def _load(name: str):
  """The module `name`, or the reason it cannot be loaded."""
  try:
    return __import__(name)
  except (ImportError, OSError) as e:  # OSError: libseccomp missing
    return f'unavailable: {e}'


def restrict_files(workdir: str, landlock) -> str:
  """Landlock: only `workdir` may be read or written."""
  if isinstance(landlock, str):
    return landlock
  ruleset = landlock.Ruleset()
  ruleset.allow(workdir)
  ruleset.apply()
  return 'applied'


def filter_syscalls(pyseccomp) -> str:
  """seccomp: the deny list of the module doc; everything else allowed
  (the interpreter needs memory, pipes and its own threads' calls)."""
  if isinstance(pyseccomp, str):
    return pyseccomp
  rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
  for name in DENIED_SYSCALLS:
    rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
  # A clone without CLONE_THREAD makes a process; threads stay allowed.
  rules.add_rule(pyseccomp.ERRNO(errno.EPERM), 'clone',
                 pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_THREAD, 0))
  rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), 'clone3')
  rules.load()
  return 'applied'


def confine(workdir: str, *, memory_bytes: int, file_bytes: int,
            cpu_s: int, open_files: int = 64) -> dict[str, str]:
  """Applies every layer, in the order each still can be; returns each
  layer's outcome ('applied', or why not) for the trainer to check."""
  os.chdir(workdir)
  # Loaded first: once landlock holds, their files cannot be read.
  landlock, pyseccomp = _load('landlock'), _load('pyseccomp')
  layers = {}
  # Privileges before rlimits: a non-root RLIMIT_NPROC of 0 would not stop
  # setresuid, but keeping root's until now is needed to chown.
  layers['privileges'] = drop_privileges(workdir)
  layers['rlimits'] = set_rlimits(memory_bytes=memory_bytes,
                                  file_bytes=file_bytes, cpu_s=cpu_s,
                                  open_files=open_files)
  layers['landlock'] = restrict_files(workdir, landlock)
  layers['seccomp'] = filter_syscalls(pyseccomp)  # last: it forbids setrlimit
  return layers
