"""Bring your own data: question / document / answer triples as JSON lines.

Each line is an object with 'question', 'document' and 'answer' (strings;
a number is turned into its text) and optionally 'format'. The examples
come out in the builders' shape (task, data, format, answer, world, level,
id), so `documents.make_env` serves them: a `read` tool over the document,
partial credit for numeric answers and exact match for others. Lines that
are not such objects are reported with their line number, not skipped.
"""

from __future__ import annotations

import json
import os

from rao_jax.tasks import documents
from rao_jax.tasks import numbers

_REQUIRED = ('question', 'document', 'answer')


def parse_line(line: str, where: str) -> dict[str, str]:
  """One JSON line -> an example; ValueError naming `where` if bad."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f'{where}: not JSON ({e.msg})') from None
  if not isinstance(record, dict):
    raise ValueError(f'{where}: expected an object')
  missing = [k for k in _REQUIRED if k not in record]
  if missing:
    raise ValueError(f'{where}: missing {", ".join(missing)}')
  values = {k: record[k] for k in _REQUIRED + ('format',) if k in record}
  for key, value in values.items():
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
      raise ValueError(f'{where}: {key} must be a string or a number')
  answer = str(values['answer']).strip()
  default_format = 'an integer' if numbers.is_number(answer) else 'text'
  return {'task': str(values['question']), 'data': str(values['document']),
          'format': str(values.get('format', default_format)),
          'answer': answer, 'world': '{}', 'level': 'real', 'id': where}


def load_jsonl(path: str | os.PathLike[str]) -> list[dict[str, str]]:
  """All examples of a JSON-lines file (blank lines are skipped)."""
  examples = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        examples.append(parse_line(line, f'{os.fspath(path)}:{number}'))
  return examples


def environments(path: str | os.PathLike[str]
                 ) -> list[documents.DocumentEnv]:
  """One environment per line of a JSON-lines file."""
  return [documents.make_env(e) for e in load_jsonl(path)]
