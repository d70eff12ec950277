"""Length-prefixed JSON frames between the trainer and a sandbox worker.

JSON, not pickle: the trainer reads what a worker writes, and a worker runs
model code, so nothing it sends may execute when decoded. A frame is a
4-byte big-endian length and that many bytes of UTF-8 JSON. This module
imports only the standard library: the worker loads it before confining
itself, without rao_jax on its path.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

_HEADER = struct.Struct('>I')


class WireError(Exception):
  """A frame that is missing, too long or not JSON."""


def write_frame(fd: int, message: dict[str, Any]) -> None:
  """Writes one message to a file descriptor, whole."""
  # ASCII escapes: a lone surrogate in model text encodes too (as \udXXX)
  # instead of failing to encode as UTF-8.
  body = json.dumps(message, ensure_ascii=True).encode('ascii')
  data = _HEADER.pack(len(body)) + body
  while data:
    written = os.write(fd, data)
    data = data[written:]


def read_exact(fd: int, size: int) -> bytes:
  """size bytes from fd; WireError at end of file."""
  chunks, left = [], size
  while left:
    chunk = os.read(fd, min(left, 1 << 16))
    if not chunk:
      raise WireError('the other end closed the pipe')
    chunks.append(chunk)
    left -= len(chunk)
  return b''.join(chunks)


def decode_header(header: bytes, max_bytes: int) -> int:
  """The body length a header announces; WireError past max_bytes."""
  (size,) = _HEADER.unpack(header)
  if size > max_bytes:
    raise WireError(f'frame of {size} bytes (limit {max_bytes})')
  return size


HEADER_BYTES = _HEADER.size


def decode_body(body: bytes) -> dict[str, Any]:
  """The message of a frame's body; WireError if it is not a JSON object."""
  try:
    message = json.loads(body.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WireError(f'malformed frame: {e}') from e
  if not isinstance(message, dict):
    raise WireError('a frame must hold a JSON object')
  return message


def read_frame(fd: int, max_bytes: int = 1 << 26) -> dict[str, Any]:
  """Reads one message (blocking)."""
  size = decode_header(read_exact(fd, HEADER_BYTES), max_bytes)
  return decode_body(read_exact(fd, size))
