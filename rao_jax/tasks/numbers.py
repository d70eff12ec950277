"""Numbers as tools and verifiers read them from model-written text.

Only ASCII digits count. `str.isdigit()` also accepts superscripts ('¹',
which `int` refuses) and other scripts' digits ('٣', which `int` reads as
3): a model's output must not crash a tool, and a task's numbers are
written in ASCII, so anything else is malformed.
"""

import re

# [0-9], not \d: \d matches every script's decimal digits.
DIGITS = '[0-9]'
_NUMBER_RE = re.compile(r'[0-9]+')


def is_number(text: str, max_digits: int | None = None) -> bool:
  """Whether `text` is a non-negative integer in ASCII digits, at most
  `max_digits` of them (None: any length)."""
  return (_NUMBER_RE.fullmatch(text) is not None and
          (max_digits is None or len(text) <= max_digits))
