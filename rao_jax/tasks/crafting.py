"""Crafting (after TextCraft-Synth): obtain N units of an item.

A world is a set of recipes over meaningless item names in five material
domains: base materials (in the starting inventory) and tiers of
intermediate items, each crafted from two ingredients with counts. The
target's tier is the crafting depth (easy 2-3, medium 4-6, hard 7-9,
extreme 10-12, as in the paper). Each tier-t item needs one unit of a
tier t-1 item (the chain that sets the depth) and a few units of a base
material or, now and then, of a tier-1 item (a short branch), so a tree
has about two nodes per tier.

Tools (the inventory is shared by reference with every child):
  get_info ITEM      its recipe: 'kelu needs 1 zapo, 2 mira (base)'
  craft N ITEM       consumes N times the ingredients, adds N units
  inventory [ITEM]   what the inventory holds

Task grammar: 'obtain N ITEM' (format 'done'). Reward is binary: N units of
the target were crafted in this tree (the starting inventory does not
count). A child asked to obtain an intermediate item is checked the same
way, over the units crafted by its own subtree.
"""

from __future__ import annotations

from collections.abc import Mapping
import collections
import dataclasses
import json
import random
import re

import tensorflow_datasets as tfds

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import context
from rao_jax.tasks import numbers
from rao_jax.tasks import registry

NUM_DOMAINS, BASES_PER_DOMAIN = 5, 2
MAX_CRAFT = 999  # a bigger count is an argument error, not a huge loop
_TASK_RE = re.compile(r'obtain ([0-9]{1,3}) ([a-z]+)')
_INFO_RE = re.compile(r'([a-z]+) needs (.+)')
_INGREDIENT_RE = re.compile(r'([0-9]+) ([a-z]+)( \(base\))?')
_CRAFTED_RE = re.compile(r'crafted ([0-9]+) ([a-z]+)')
_CONSONANTS, _VOWELS = 'bdfgklmnprstvz', 'aeiou'

# ------------------------------------------------------------------ World


def _fresh_name(rng: random.Random, taken: set[str]) -> str:
  while True:
    name = ''.join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
                   for _ in range(2))
    if name not in taken:
      taken.add(name)
      return name


def make_world(rng: random.Random, depth: int) -> dict:
  """Recipes, a starting inventory and a target of the given depth."""
  taken: set[str] = set()
  bases = [[_fresh_name(rng, taken) for _ in range(BASES_PER_DOMAIN)]
           for _ in range(NUM_DOMAINS)]
  recipes: dict[str, list[tuple[str, int]]] = {}

  def new_item(tier: int, domain: int) -> str:
    name = _fresh_name(rng, taken)
    if tier == 1:
      first, second = rng.sample(bases[domain], 2)
      recipes[name] = [(first, rng.randint(1, 2)), (second, rng.randint(1, 2))]
      return name
    main = new_item(tier - 1, domain)
    if tier >= 3 and rng.random() < 0.3:
      side = (new_item(1, rng.randrange(NUM_DOMAINS)), 1)
    else:
      side = (rng.choice(bases[rng.randrange(NUM_DOMAINS)]), rng.randint(1, 2))
    recipes[name] = [(main, 1), side]
    return name

  target = new_item(depth, rng.randrange(NUM_DOMAINS))
  for _ in range(2):  # distractor recipes a lost agent may look up
    new_item(rng.randint(1, 2), rng.randrange(NUM_DOMAINS))
  count = rng.randint(1, 2)
  needs: collections.Counter = collections.Counter()

  def add_needs(item: str, units: int) -> None:
    for ingredient, per_unit in recipes.get(item, ()):
      if ingredient in recipes:
        add_needs(ingredient, units * per_unit)
      else:
        needs[ingredient] += units * per_unit

  add_needs(target, count)
  inventory = {b: needs[b] + rng.randint(0, 2)
               for domain in bases for b in domain}
  return {'recipes': recipes, 'inventory': inventory, 'target': target,
          'count': count}


def task_text(count: int, item: str) -> str:
  return f'obtain {count} {item}'


def parse_task(task: str) -> tuple[int, str] | None:
  match = _TASK_RE.fullmatch(task.strip())
  return (int(match.group(1)), match.group(2)) if match else None


# ------------------------------------------------------------------ State


class Inventory:
  """One node's view of the tree's inventory.

  The item counts are one dict shared by every node of the tree (by
  reference); `crafted` counts the units crafted by this node's subtree, so
  a child's sub-task is checkable on its own.
  """

  def __init__(self, recipes: Mapping[str, list], counts: dict[str, int],
               parent: Inventory | None = None):
    self.recipes = recipes
    self.counts = counts
    self.parent = parent
    self.crafted: collections.Counter = collections.Counter()

  def child(self) -> Inventory:
    return Inventory(self.recipes, self.counts, self)

  def craft(self, item: str, units: int) -> str | None:
    """Crafts units of item; returns why not, or None on success."""
    recipe = self.recipes.get(item)
    if recipe is None:
      return (f'{item} is a base material' if item in self.counts else
              f'unknown item {item!r}')
    missing = [f'{n * units} {i} (have {self.counts.get(i, 0)})'
               for i, n in recipe if self.counts.get(i, 0) < n * units]
    if missing:
      return 'not enough ' + ', '.join(missing)
    for ingredient, per_unit in recipe:
      self.counts[ingredient] -= per_unit * units
    self.counts[item] = self.counts.get(item, 0) + units
    node = self
    while node is not None:  # the units count for every ancestor's task
      node.crafted[item] += units
      node = node.parent
    return None


def _get_info(state: Inventory, args: str) -> env_lib.ToolResult:
  item = args.strip()
  if not item:
    return env_lib.ToolResult('usage: get_info ITEM', error=True)
  recipe = state.recipes.get(item)
  if recipe is None:
    if item in state.counts:
      return env_lib.ToolResult(f'{item} is a base material')
    return env_lib.ToolResult(f'unknown item {item[:40]!r}', error=True)
  parts = [f'{n} {i}' + ('' if i in state.recipes else ' (base)')
           for i, n in recipe]
  return env_lib.ToolResult(f'{item} needs ' + ', '.join(parts))


def _craft(state: Inventory, args: str) -> env_lib.ToolResult:
  parts = args.split()
  if len(parts) != 2 or not numbers.is_number(parts[0]):
    return env_lib.ToolResult('usage: craft N ITEM', error=True)
  units = int(parts[0]) if len(parts[0]) <= 4 else MAX_CRAFT + 1
  if not 1 <= units <= MAX_CRAFT:
    return env_lib.ToolResult(f'N must be 1 to {MAX_CRAFT}', error=True)
  why_not = state.craft(parts[1], units)
  if why_not is not None:
    return env_lib.ToolResult(why_not[:200], error=True)
  return env_lib.ToolResult(f'crafted {units} {parts[1]}')


def _inventory(state: Inventory, args: str) -> env_lib.ToolResult:
  item = args.strip()
  if item:
    return env_lib.ToolResult(f'{item[:40]} {state.counts.get(item, 0)}')
  held = [f'{i} {n}' for i, n in sorted(state.counts.items()) if n > 0]
  return env_lib.ToolResult(', '.join(held) or 'empty')


TOOLS = (env_lib.Tool('get_info', 'get_info ITEM', _get_info),
         env_lib.Tool('craft', 'craft N ITEM', _craft),
         env_lib.Tool('inventory', 'inventory [ITEM]', _inventory))


@dataclasses.dataclass
class CraftingEnv:
  """One root task's world; make one per call tree (the inventory is
  mutable)."""

  world: dict

  def root_spec(self) -> env_lib.NodeSpec:
    return env_lib.NodeSpec(
        task_text(self.world['count'], self.world['target']), '', 'done')

  def tools(self) -> tuple[env_lib.Tool, ...]:
    return TOOLS

  def root_state(self) -> Inventory:
    recipes = {k: [tuple(x) for x in v]
               for k, v in self.world['recipes'].items()}
    return Inventory(recipes, dict(self.world['inventory']))

  def child_state(self, parent_state: Inventory, spec: env_lib.NodeSpec
                  ) -> Inventory:
    del spec
    return parent_state.child()

  def score_root(self, answer: str, state: Inventory) -> float:
    del answer  # the reward is what was crafted, not what was said
    return float(state.crafted[self.world['target']] >= self.world['count'])

  def score_subtask(self, spec: env_lib.NodeSpec, answer: str,
                    state: Inventory) -> float | None:
    del answer
    parsed = parse_task(spec.task)
    if parsed is None or parsed[1] not in self.world['recipes']:
      return None
    return float(state.crafted[parsed[1]] >= parsed[0])


def make_env(example: Mapping[str, str]) -> CraftingEnv:
  return CraftingEnv(json.loads(example['world']))


# ---------------------------------------------------------------- Solvers


def _parse_info(text: str) -> list[tuple[int, str, bool]] | None:
  """'kelu needs 1 zapo, 2 mira (base)' -> [(1, 'zapo', False), ...]."""
  match = _INFO_RE.fullmatch(text)
  if match is None:
    return None
  parts = [_INGREDIENT_RE.fullmatch(p) for p in match.group(2).split(', ')]
  if not all(parts):
    return None
  return [(int(p.group(1)), p.group(2), bool(p.group(3))) for p in parts]


# Tokens a tool observation of this family can take (a recipe with
# two-digit counts is ~45 characters), allowed for before a call.
_OBSERVATION_TOKENS = 48


class DirectSolver:
  """Looks up and crafts the whole recipe tree in one node (depth first).

  It learns recipes only from its own `get_info` observations, and stops
  (answers, uncrafted) when the next call would not fit the window.
  """

  def __init__(self, window: context.Window):
    self.window = window

  def plan(self, view: env_lib.StepView) -> str:
    parsed = parse_task(view.spec.task)
    if parsed is None:
      return protocol.answer('cannot parse the task')
    recipes, crafted = {}, set()
    for text in view.observations:
      if text.startswith('error:'):
        return protocol.answer('failed: ' + text[:40])
      info = _INFO_RE.fullmatch(text)
      if info is not None:
        recipes[info.group(1)] = _parse_info(text) or []
      elif (done := _CRAFTED_RE.fullmatch(text)) is not None:
        crafted.add(done.group(2))

    def next_step(item: str, units: int) -> str | None:
      if item not in recipes:
        return protocol.tool_call('get_info', item)
      for per_unit, ingredient, is_base in recipes[item]:
        if not is_base:
          step = next_step(ingredient, units * per_unit)
          if step is not None:
            return step
      if item not in crafted:
        return protocol.tool_call('craft', f'{units} {item}')
      return None

    return next_step(parsed[1], parsed[0]) or protocol.answer('done')

  def __call__(self, view: env_lib.StepView) -> str:
    step = self.plan(view)
    if step.startswith(protocol.ANSWER):
      return step
    seen = [context.observation_tokens(o, self.window)
            for o in view.observations]
    # Room for the step, its observation and the answer after it. The next
    # observation can be longer than any seen (longer names, two-digit
    # counts): at least _OBSERVATION_TOKENS, the longest a recipe takes.
    needed = (context.step_tokens(step, self.window) +
              max([_OBSERVATION_TOKENS, *seen]) +
              context.step_tokens(protocol.answer('done'), self.window))
    used = context.context_tokens(view, TOOLS, self.window, self.plan)
    if used + needed > self.window.max_tokens:
      return protocol.answer('done')  # out of room: give up, uncrafted
    return step


class RecursiveSolver:
  """get_info; spawn one child per intermediate ingredient; craft; answer.

  A node whose depth budget is spent crafts its subtree directly.
  """

  def __init__(self, window: context.Window):
    self.direct = DirectSolver(window)

  def __call__(self, view: env_lib.StepView) -> str:
    parsed = parse_task(view.spec.task)
    if parsed is None:
      return protocol.answer('cannot parse the task')
    if view.budgets.get('depth', 0) <= 0:
      return self.direct(view)
    units, item = parsed
    if view.step == 0:
      return protocol.tool_call('get_info', item)
    recipe = _parse_info(view.observations[0])
    if recipe is None:
      return protocol.answer('failed: no recipe')
    subtasks = [(task_text(units * n, i), '', 'done')
                for n, i, is_base in recipe if not is_base]
    craft_step = 2 if subtasks else 1
    if view.step == 1 and subtasks:
      return protocol.spawn(subtasks)
    if view.step == craft_step:
      return protocol.tool_call('craft', f'{units} {item}')
    last = view.observations[-1]
    return protocol.answer('failed' if last.startswith('error:') else 'done')


# ---------------------------------------------------------------- Builder


class RaoCrafting(builder_lib.TaskBuilder):
  """Crafting worlds (after TextCraft-Synth); configs are crafting depths."""

  # Enough worlds that training does not memorise their made-up names
  # (with 64, SFT learnt the worlds and could not copy a new name), and
  # held-out splits large enough for a stable success estimate.
  BUILDER_CONFIGS = builder_lib.level_configs(
      {'easy': (2, 3), 'medium': (4, 6), 'hard': (7, 9), 'extreme': (10, 12)},
      'crafting depth', version='1.1.0', num_train=4096, num_validation=256,
      num_test=256)
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'First release.',
                   '1.1.0': '4096 / 256 / 256 worlds a level.'}

  def make_example(self, rng: random.Random,
                   config: builder_lib.LevelConfig) -> dict[str, str]:
    world = make_world(rng, rng.randint(config.low, config.high))
    return {'task': task_text(world['count'], world['target']), 'data': '',
            'format': 'done', 'answer': 'done',
            'world': json.dumps(world, sort_keys=True)}


TASK = registry.register(registry.Task(
    name='crafting', tfds_name='rao_crafting', builder=RaoCrafting,
    make_env=make_env, recursive_solver=RecursiveSolver,
    direct_solver=DirectSolver))
