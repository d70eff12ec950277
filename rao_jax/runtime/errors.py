"""Refusals: what a user can fix, said in one line.

`rao_jax.main` prints a `Refusal` as one line on stderr (`error: ...`)
and exits with status 2; the traceback only with `--verbosity=1` or
`RAO_TRACEBACK=1`. Anything else that escapes is a bug and keeps its
traceback. Each refusal names the field or path and what is accepted.
"""

from __future__ import annotations

# Set to 1 for the traceback of a refusal too.
TRACEBACK_ENV = 'RAO_TRACEBACK'
EXIT_STATUS = 2  # as argparse and absl's usage errors


class Refusal(Exception):
  """Bad input, refused before it could do harm."""

  def one_line(self) -> str:
    """The message as one line (a multi-line message's lines joined)."""
    return one_line(str(self))


class ConfigError(Refusal, ValueError):
  """A config field holds a value the run cannot use."""


class MissingInput(Refusal, FileNotFoundError):
  """A file or directory the config names is not there, or is not what
  the field needs."""


class WorkdirInUse(Refusal):
  """Another process holds the workdir's lock."""


class Stopped(BaseException):
  """The run was stopped from outside (a signal): said in one line too,
  with its own exit status. A BaseException, as KeyboardInterrupt is, so
  no `except Exception` on the way (a checkpoint restore's) takes it for
  an error of its own."""

  def __init__(self, message: str, exit_status: int):
    super().__init__(message)
    self.exit_status = exit_status


def one_line(message: str) -> str:
  """`message` with its lines stripped and joined by '; '."""
  return '; '.join(line.strip() for line in message.splitlines()
                   if line.strip())
