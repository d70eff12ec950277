"""Where a generated step ends, over any tokenization.

With the byte tokenizer every protocol tag is one token, and the slot
sampler stops on it inside its decode loop. With a Hugging Face tokenizer
a tag is several tokens (`</answer>` may be `['</', 'answer', '>']`) and
BPE merges its characters with its neighbours' (`'>\\n'`, `'x</'`), so no
table of token sequences covers every way the model can write it. The
rule is therefore on the text (`protocol` module doc): a step ends with the
first token whose decoded text completes a stop tag. The sampler applies
it on the host after its prefill and after every decode chunk
(`Request.find_stop`) and rolls the slot back to end at that token; the
scripted engine cuts its encoded steps with the same function.

A step's text is decoded from its own tokens, as the scheduler decodes it
for the parser. `find` assumes what the byte-level and SentencePiece
decoders do: a prefix of the tokens decodes to a prefix of the text, as
far as ASCII characters (every tag) go.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

from rao_jax.agent import protocol
from rao_jax.model import tokenizer as tokenizer_lib


class StopRule:
  """The stop rule of one tokenizer (see the module doc)."""

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer,
               tags: Sequence[str] = protocol.STOP_TAGS):
    if not tags:
      raise ValueError('a stop rule needs at least one stop tag')
    self.tokenizer = tokenizer
    self.tags = tuple(tags)

  @functools.cached_property
  def device_ids(self) -> tuple[int, ...]:
    """Tags that are one token, which always spells them (the byte
    tokenizer's): the sampler may stop on these inside its decode loop,
    where the host rule would find the same end."""
    ids = []
    for tag in self.tags:
      encoded = self.tokenizer.encode(tag)
      if len(encoded) == 1 and self.tokenizer.decode(encoded) == tag:
        ids.append(encoded[0])
    return tuple(ids)

  @functools.cached_property
  def host_find(self):
    """`find`, for the sampler to apply on the host; None when every tag
    is one token (`device_ids`), which the decode loop already stops on."""
    return None if len(self.device_ids) == len(self.tags) else self.find

  def _ends(self, tokens: Sequence[int]) -> bool:
    text = self.tokenizer.decode(tokens)
    return any(tag in text for tag in self.tags)

  def _tail_start(self, tokens: Sequence[int], checked: int) -> int:
    """Where a tag completed after `tokens[:checked]` can begin: within the
    last characters of their text (as many as a tag holds, and a few for a
    character the cut may break), so only the tail need be decoded and a
    chunk's check costs its own tokens, not the whole step's."""
    need = max(map(len, self.tags)) + 3
    start = max(0, checked - need)
    while start and len(self.tokenizer.decode(tokens[start:checked])) < need:
      start = max(0, start - need)  # tokens with little text: look further
    return start

  def find(self, tokens: Sequence[int], checked: int = 0) -> int | None:
    """How many of a step's tokens it keeps, or None if it goes on.

    Args:
      tokens: the step's tokens so far, as sampled.
      checked: a prefix of them already known to hold no stop tag.

    Returns:
      The length of the shortest prefix whose text holds a stop tag (the
      step ends with its last token), or None when no prefix does.
    """
    start = self._tail_start(tokens, checked)
    if not self._ends(tokens[start:]):
      return None
    # The shortest prefix that ends, by bisection: prefixes decode to
    # prefixes, so "holds a tag" only turns on as the prefix grows.
    low, high = checked, len(tokens)  # tokens[:low] go on, [:high] end
    while high - low > 1:
      middle = (low + high) // 2
      if self._ends(tokens[start:middle]):
        high = middle
      else:
        low = middle
    return high
