"""The malloc tunable the entry point re-executes itself with."""

import os
import platform
import subprocess
import sys

import pytest

from rao_jax.runtime import host_memory


def test_tunable_is_added_to_what_is_there():
  assert host_memory.environment_with_tunable({'A': '1'}) == {
      'A': '1', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  env = host_memory.environment_with_tunable(
      {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
  assert env['GLIBC_TUNABLES'] == (
      'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')


@pytest.mark.parametrize('tunables', [
    'glibc.malloc.hugetlb=1', 'glibc.malloc.hugetlb=0',
    'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0'])
def test_a_tunable_already_set_is_kept(tunables):
  assert host_memory.environment_with_tunable(
      {'GLIBC_TUNABLES': tunables}) is None


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_reexec_starts_the_same_command_with_the_tunable():
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  code = ('import os, sys; from rao_jax.runtime import host_memory; '
          'print("run", sys.argv[1:], os.getpid()); '
          'host_memory.reexec_with_huge_pages(); '
          'print(os.environ["GLIBC_TUNABLES"])')
  result = subprocess.run([sys.executable, '-c', code, 'x', '--y=1'],
                          env=env, capture_output=True, text=True,
                          timeout=60, check=True)
  # Printed before the re-exec and after it, by the same process (exec, not
  # a child) with the same arguments.
  before, after, tunables = result.stdout.splitlines()
  assert before == after
  assert before.startswith("run ['x', '--y=1'] ")
  assert tunables == 'glibc.malloc.hugetlb=1'
