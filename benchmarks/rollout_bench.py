"""Frontier scheduling vs node-by-node rollouts of the same call trees.

  python benchmarks/rollout_bench.py                 # tiny model, CPU: ~1 min
  python benchmarks/rollout_bench.py --trees=128 --slots=64

Every tree is a binary split to depth 3 (15 nodes: inner nodes spawn two
children on halves of their digits then answer; leaves read their digits
with a tool then answer), written by a scripted policy. The model does the
real work: each step is prefilled and decoded by the slot sampler for as
many tokens as the scripted step has (stop tags off), and the scripted
tokens then stand for the sampled ones, so the compute is exactly that of
a policy which wrote these trees. (a) runs all trees through the frontier
scheduler with `--slots` slots; (b) runs them node by node with one slot,
as a naive recursive implementation (one agent call at a time) would.
Both are warmed up first, so compile time is not timed; `compiles` counts
programs compiled during the timed frontier run (0 after warm-up). In both,
a node that spawns is suspended with its KV cache and resumed by
prefilling only its children's results.

Last line: JSON with `speedup`, `slot_utilization` (useful slot-steps over
all slot-steps, counted while ready nodes were waiting for a slot, i.e.
while work remained for the whole batch), `slot_utilization_overall` and
`compiles`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from flax import nnx
import jax

from rao_jax import sampler as sampler_lib
from rao_jax.agent import engine as engine_lib
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.agent import model_engine
from rao_jax.agent import scheduler as scheduler_lib
from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.model import tokenizer as tokenizer_lib

TOK = tokenizer_lib.ByteTokenizer(protocol.SPECIAL_TOKENS)


@dataclasses.dataclass
class DigitsEnv:
  """Sum mod 10 of a digit string; a node's state is its digits."""

  digits: str

  def root_spec(self):
    return env_lib.NodeSpec('sum mod 10', self.digits, 'a digit')

  def tools(self):
    return [env_lib.Tool('read', 'read <start> <end>', lambda data, args:
                         env_lib.ToolResult(data[int(args.split()[0]):
                                                 int(args.split()[1])]))]

  def root_state(self):
    return self.digits

  def child_state(self, parent_state, spec):
    return spec.data

  def score_root(self, answer, state):
    return float(answer == str(sum(map(int, self.digits)) % 10))

  def score_subtask(self, spec, answer, state):
    return float(answer == str(sum(map(int, spec.data)) % 10))


def split_policy(view: env_lib.StepView) -> str:
  data = view.spec.data
  if len(data) <= 2:
    if view.step == 0:
      return (protocol.think('two digits: read them') +
              protocol.tool_call('read', f'0 {len(data)}'))
    return protocol.answer(str(sum(map(int, view.observations[-1])) % 10))
  if view.step == 0:
    half = len(data) // 2
    return protocol.think('split in halves') + protocol.spawn([
        ('sum mod 10', protocol.data_slice(0, half), 'a digit'),
        ('sum mod 10', protocol.data_slice(half, len(data)), 'a digit')])
  total = sum(int(a) for a in view.children_answers[-1]) % 10
  return protocol.think('add the halves') + protocol.answer(str(total))


class ForcedEngine(model_engine.ModelEngine):
  """The sampler computes each step; the scripted policy's tokens stand in.

  Each step runs for exactly as many tokens as the scripted step has (no
  stop tags), so prefill and decode cost what they would for a policy
  that wrote these steps; the returned tokens are the scripted ones. A
  tool-calling node extends its slot as it would with a real policy (its
  cache holds the sampled tokens, which only changes values, not work).
  """

  def __init__(self, sampler, policy, decode_steps, max_suspended):
    super().__init__(sampler, stop_ids=(), decode_steps=decode_steps,
                     max_suspended=max_suspended)
    self.policy = policy
    self._scripted: dict[int, tuple[int, ...]] = {}

  def admit(self, requests):
    forced = {}
    for slot, request in requests.items():
      ids = TOK.encode(self.policy(request.view))[:request.max_new_tokens]
      self._scripted[slot] = tuple(ids)
      forced[slot] = dataclasses.replace(request, max_new_tokens=len(ids))
    super().admit(forced)

  def decode(self):
    result = super().decode()
    finished = {}
    for slot, out in result.finished.items():
      scripted = self._scripted[slot][:len(out.tokens)]
      # The slot's context as the scheduler will know it: scripted tokens.
      self._context[slot] = self._context[slot][:-len(out.tokens)] + scripted
      finished[slot] = engine_lib.StepOutput(scripted, out.logprobs,
                                             engine_lib.STOP)
    return engine_lib.DecodeResult(result.num_steps, result.new_tokens,
                                   finished)


def run(model, num_slots, num_trees, decode_steps, budgets, max_len):
  sampler = sampler_lib.SlotSampler(model, num_slots=num_slots,
                                    max_len=max_len)
  # Both arms may keep the KV of every waiting parent (7 per tree): the
  # node-by-node arm saves its parents' re-prefill as the frontier does.
  engine = ForcedEngine(sampler, split_policy, decode_steps,
                        max_suspended=7 * num_trees)
  scheduler = scheduler_lib.FrontierScheduler(engine, TOK, budgets)
  envs = [DigitsEnv(str(10**15 + 7919 * i)[-16:]) for i in range(num_trees)]
  start = time.perf_counter()
  trees, stats = scheduler.run(envs, list(range(num_trees)))
  seconds = time.perf_counter() - start
  assert all(t.root.success == 1.0 and len(t.nodes) == 15 for t in trees)
  print(f'  {num_slots} slots: {seconds:.2f} s, {stats.admissions} '
        f'prefills of {stats.prefill_tokens} tokens, '
        f'{engine.extended_tokens} tokens by extend, '
        f'{engine.resumed_tokens} context tokens resumed from a suspend')
  return seconds, stats, engine.num_compiles()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trees', type=int, default=64)
  parser.add_argument('--slots', type=int, default=64)
  parser.add_argument('--decode_steps', type=int, default=8)
  parser.add_argument('--max_len', type=int, default=512)
  args = parser.parse_args()
  config = config_lib.tiny(vocab_size=TOK.vocab_size)
  model = gemma.Transformer(config, rngs=nnx.Rngs(0))
  budgets = scheduler_lib.Budgets(max_depth=3, max_children=2, max_steps=4,
                                  max_nodes=15, max_new_tokens=96)
  print(f'device: {jax.devices()[0].device_kind}; {args.trees} trees of '
        f'15 nodes (binary split, depth 3)')
  # Warm-up: the same shapes compile here, not in the timed runs.
  run(model, args.slots, args.trees, args.decode_steps, budgets,
      args.max_len)
  run(model, 1, 2, args.decode_steps, budgets, args.max_len)
  frontier_s, stats, compiles = run(model, args.slots, args.trees,
                                    args.decode_steps, budgets, args.max_len)
  sequential_s, seq_stats, _ = run(model, 1, args.trees, args.decode_steps,
                                   budgets, args.max_len)
  speedup = sequential_s / frontier_s
  print(f'{"":24}{"seconds":>10}{"decode calls":>14}{"utilisation":>13}')
  print(f'{"frontier, " + str(args.slots) + " slots":24}{frontier_s:10.2f}'
        f'{stats.decode_calls:14d}{stats.slot_utilization:13.2f}')
  print(f'{"node by node, 1 slot":24}{sequential_s:10.2f}'
        f'{seq_stats.decode_calls:14d}{seq_stats.slot_utilization:13.2f}')
  print(f'speed-up {speedup:.1f}x; utilisation while the batch had work: '
        f'{stats.saturated_utilization:.3f}; compiles in the timed run: '
        f'{compiles}')
  print(json.dumps(dict(
      speedup=round(speedup, 2),
      slot_utilization=round(stats.saturated_utilization, 4),
      slot_utilization_overall=round(stats.slot_utilization, 4),
      compiles=compiles, frontier_s=round(frontier_s, 3),
      sequential_s=round(sequential_s, 3), trees=args.trees,
      slots=args.slots, device=jax.devices()[0].device_kind)))


if __name__ == '__main__':
  main()
