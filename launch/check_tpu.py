"""Prints the devices JAX sees on this host; exits 1 unless they are TPUs.

launch/setup.sh runs it on every worker after the install, where a libtpu
that does not match jax would leave JAX on the CPU without an error.
"""

import sys

import jax


def main() -> int:
  """Returns the exit status: 0 when JAX's default backend is the TPU."""
  backend = jax.default_backend()
  print(f'process {jax.process_index()} of {jax.process_count()}: '
        f'{jax.local_device_count()} of {jax.device_count()} {backend} '
        'devices')
  if backend != 'tpu':
    print(f'JAX found no TPU (backend {backend!r}): is libtpu installed '
          '(pip install -c constraints.txt -e ".[tpu]")?', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
