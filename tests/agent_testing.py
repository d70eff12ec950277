"""A small environment and scripted policies for the agent tests.

The task: the sum mod 10 of a string of digits. A node reads its digits
with the `read` tool, answers directly when it holds at most two, else
spawns two children on the halves (as data slices) and adds their answers.
"""

from __future__ import annotations

import dataclasses

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol


def _read(data: str, args: str) -> env_lib.ToolResult:
  parts = args.split()
  if len(parts) != 2 or not all(p.isdigit() for p in parts):
    return env_lib.ToolResult('usage: read <start> <end>', error=True)
  start, end = int(parts[0]), int(parts[1])
  if not start <= end <= len(data):
    return env_lib.ToolResult(f'bad range {start} {end}', error=True)
  return env_lib.ToolResult(data[start:end])


def digit_sum(text: str) -> int:
  return sum(int(c) for c in text if c.isdigit()) % 10


@dataclasses.dataclass
class SumEnv:
  """The environment of one root task; a node's state is its data."""

  digits: str

  def root_spec(self) -> env_lib.NodeSpec:
    return env_lib.NodeSpec('sum mod 10', self.digits, 'a digit')

  def tools(self):
    return [env_lib.Tool('read', 'read <start> <end>', _read)]

  def root_state(self):
    return self.digits

  def child_state(self, parent_state, spec):
    del parent_state
    return spec.data

  def score_root(self, answer, state):
    return float(answer == str(digit_sum(self.digits)))

  def score_subtask(self, spec, answer, state):
    return float(answer == str(digit_sum(spec.data)))


def split_policy(view: env_lib.StepView) -> str:
  """Reads then answers at most two digits; else splits into two halves.

  A node whose spawn was refused reads and answers its digits itself.
  """
  data = view.spec.data
  refused = any(o.startswith('error:') for o in view.observations)
  if len(data) <= 2 or view.budgets['depth'] == 0 or refused:
    if view.observations and not view.observations[-1].startswith('error:'):
      return protocol.answer(str(digit_sum(view.observations[-1])))
    return protocol.think('small') + protocol.tool_call('read',
                                                        f'0 {len(data)}')
  if view.step == 0:
    half = len(data) // 2
    return protocol.spawn([
        ('sum mod 10', protocol.data_slice(0, half), 'a digit'),
        ('sum mod 10', protocol.data_slice(half, len(data)), 'a digit')])
  answers = view.children_answers[-1]
  return protocol.answer(str(sum(int(a) for a in answers if a) % 10))
