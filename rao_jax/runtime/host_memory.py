"""Host memory: the malloc setting the entry point starts XLA:CPU with.

XLA:CPU allocates a program's temporaries with malloc at every call; the
cpu_tiny train step asks for 551 MB at once. glibc serves an allocation that
large with a fresh mmap and unmaps it on free, so the kernel faults in and
zeroes every 4 KiB page of it again at every update: about 200 million page
faults in the README's main command, a quarter of its CPU time in the
kernel. With the tunable `glibc.malloc.hugetlb=1` glibc asks for transparent
huge pages on its mappings (`madvise`), 512 times fewer faults: the train
step took 0.36 s instead of 0.44 s (README, "Choices made by hand"). glibc
reads its tunables once, when the process starts, so `rao_jax.main`
re-executes itself with the setting before it imports jax. A
`glibc.malloc.hugetlb` already in `GLIBC_TUNABLES` is left as it is
(`glibc.malloc.hugetlb=0` turns this off).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLE = 'glibc.malloc.hugetlb'
VALUE = '1'


def environment_with_tunable(environ: Mapping[str, str]
                             ) -> dict[str, str] | None:
  """`environ` with `glibc.malloc.hugetlb=1` added to GLIBC_TUNABLES, or
  None when it already names that tunable (whatever its value)."""
  tunables = environ.get('GLIBC_TUNABLES', '')
  names = [item.split('=', 1)[0] for item in tunables.split(':') if item]
  if TUNABLE in names:
    return None
  return {**environ,
          'GLIBC_TUNABLES': ':'.join(filter(None, (tunables,
                                                   f'{TUNABLE}={VALUE}')))}


def reexec_with_huge_pages() -> None:
  """Re-executes this process with the tunable set; returns when it is
  already set or the C library is not glibc (nothing to tune)."""
  if sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc':
    return
  environ = environment_with_tunable(os.environ)
  if environ is None:
    return
  # exec does not flush Python's buffers.
  sys.stdout.flush()
  sys.stderr.flush()
  # orig_argv keeps the interpreter's own options (`-m rao_jax.main`).
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
