"""`python -m rao_jax.viewer PATH`: a run's call trees (see `cli`)."""

from rao_jax.viewer import cli

if __name__ == '__main__':
  cli.main()
