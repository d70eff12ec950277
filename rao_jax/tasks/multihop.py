"""Multi-hop lookup (after DeepDive): follow a chain of relations.

Each task has its own knowledge graph: meaningless entity names, each
with one object per relation (mentor, home, rival, maker), and a local
search tool that shows an entity's page (no network):

  search ENTITY   ->  'kavo: mentor zeli, home pura, rival tomi, maker bexa'

A question is a random walk of k hops (difficulty = k: easy 1-2, medium
3-5, hard 6-8, extreme 9-12), in the task grammar shared by roots and
children:

  follow START R1 R2 ... Rk   ->  the entity reached (format 'an entity')

Delegation here must be sequential: a chain's second half starts where
the first half ends, so the recursive solver spawns the first half, waits,
then spawns the second half from its answer. Every sub-question is checked
exactly against the graph (an unknown entity or relation: None).
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import json
import random
import re

from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.tasks import builder as builder_lib
from rao_jax.tasks import context
from rao_jax.tasks import registry

RELATIONS = ('mentor', 'home', 'rival', 'maker')
_TASK_RE = re.compile(r'follow ([a-z]{1,12})((?: [a-z]{1,12})*)')
_PAGE_RE = re.compile(r'([a-z]+): (.*)')
_CONSONANTS, _VOWELS = 'bdfgklmnprstvz', 'aeiou'

# ------------------------------------------------------------------ Graph


def make_graph(rng: random.Random, num_entities: int
               ) -> dict[str, dict[str, str]]:
  """Entity -> relation -> entity, every relation defined everywhere."""
  names: list[str] = []
  while len(names) < num_entities:
    name = ''.join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
                   for _ in range(2))
    if name not in names:
      names.append(name)
  return {name: {r: rng.choice([n for n in names if n != name])
                 for r in RELATIONS} for name in names}


def walk(graph: Mapping[str, Mapping[str, str]], start: str,
         relations: tuple[str, ...]) -> str | None:
  """Where the chain ends; None if an entity or relation is unknown."""
  entity = start
  for relation in relations:
    entity = graph.get(entity, {}).get(relation)
    if entity is None:
      return None
  return entity


def task_text(start: str, relations: tuple[str, ...]) -> str:
  return ' '.join(('follow', start) + tuple(relations))


def parse_task(task: str) -> tuple[str, tuple[str, ...]] | None:
  match = _TASK_RE.fullmatch(task.strip())
  if match is None:
    return None
  return match.group(1), tuple(match.group(2).split())


def page(graph: Mapping[str, Mapping[str, str]], entity: str) -> str:
  facts = ', '.join(f'{r} {o}' for r, o in graph[entity].items())
  return f'{entity}: {facts}'


def parse_page(text: str) -> tuple[str, dict[str, str]] | None:
  match = _PAGE_RE.fullmatch(text)
  if match is None:
    return None
  facts = dict(f.split(' ', 1) for f in match.group(2).split(', ')
               if ' ' in f)
  return match.group(1), facts


# ------------------------------------------------------------ Environment


def _search(graph: Mapping[str, Mapping[str, str]], args: str
            ) -> env_lib.ToolResult:
  entity = args.strip().lower()
  if not entity or ' ' in entity:
    return env_lib.ToolResult('usage: search ENTITY', error=True)
  if entity not in graph:
    return env_lib.ToolResult(f'no page for {entity[:40]!r}', error=True)
  return env_lib.ToolResult(page(graph, entity))


TOOLS = (env_lib.Tool('search', 'search ENTITY', _search),)


@dataclasses.dataclass
class MultihopEnv:
  """A question over a graph; every node searches the same graph."""

  graph: dict[str, dict[str, str]]
  start: str
  relations: tuple[str, ...]

  def root_spec(self) -> env_lib.NodeSpec:
    return env_lib.NodeSpec(task_text(self.start, self.relations), '',
                            'an entity')

  def tools(self) -> tuple[env_lib.Tool, ...]:
    return TOOLS

  def root_state(self) -> dict[str, dict[str, str]]:
    return self.graph

  def child_state(self, parent_state, spec: env_lib.NodeSpec):
    del spec
    return parent_state  # read-only: shared by reference

  def score_root(self, answer: str, state) -> float:
    del state
    gold = walk(self.graph, self.start, self.relations)
    return float(answer.strip().lower() == gold)

  def score_subtask(self, spec: env_lib.NodeSpec, answer: str,
                    state) -> float | None:
    del state
    parsed = parse_task(spec.task)
    gold = walk(self.graph, *parsed) if parsed else None
    return None if gold is None else float(answer.strip().lower() == gold)


def make_env(example: Mapping[str, str]) -> MultihopEnv:
  world = json.loads(example['world'])
  return MultihopEnv(world['graph'], world['start'],
                     tuple(world['relations']))


# ---------------------------------------------------------------- Solvers


class DirectSolver:
  """Searches hop after hop in one node; when the next page would not fit
  the window it answers the entity it has reached (truncation)."""

  PAGE_RESERVE = 72  # tokens a page takes, until one has been seen

  def __init__(self, window: context.Window):
    self.window = window

  def plan(self, view: env_lib.StepView) -> tuple[str, str]:
    """(the next step if room allows, the answer if it must stop now)."""
    parsed = parse_task(view.spec.task)
    if parsed is None:
      return '', protocol.answer('cannot parse the task')
    entity, relations = parsed
    for hop, text in enumerate(view.observations):
      found = parse_page(text)
      if found is None or found[0] != entity:
        return '', protocol.answer(entity)  # search failed: best guess
      entity = found[1].get(relations[hop])
      if entity is None:
        return '', protocol.answer(found[0])
    if len(view.observations) == len(relations):
      return '', protocol.answer(entity)
    return protocol.tool_call('search', entity), protocol.answer(entity)

  def __call__(self, view: env_lib.StepView) -> str:
    step, fallback = self.plan(view)
    if not step:
      return fallback
    seen = [context.observation_tokens(o, self.window)
            for o in view.observations]
    needed = (context.step_tokens(step, self.window) +
              max(seen, default=self.PAGE_RESERVE) +
              context.step_tokens(fallback, self.window))
    used = context.context_tokens(view, TOOLS, self.window,
                                  lambda v: self.plan(v)[0])
    return step if used + needed <= self.window.max_tokens else fallback


class RecursiveSolver:
  """One hop: search and answer. Longer chains: spawn the first half,
  wait, spawn the rest from its answer, answer that (sequential)."""

  def __init__(self, window: context.Window):
    self.direct = DirectSolver(window)

  def __call__(self, view: env_lib.StepView) -> str:
    parsed = parse_task(view.spec.task)
    if parsed is None:
      return protocol.answer('cannot parse the task')
    start, relations = parsed
    if len(relations) <= 1 or view.budgets.get('depth', 0) <= 0:
      return self.direct(view)
    half = len(relations) // 2
    if view.step == 0:
      return protocol.spawn([(task_text(start, relations[:half]), '',
                              'an entity')])
    if len(view.children_answers) < view.step:  # a spawn was refused
      return protocol.answer(start)
    middle = view.children_answers[0][0]
    if middle is None or parse_task(task_text(middle, ())) is None:
      return protocol.answer(middle or start)  # the first half failed
    if view.step == 1:
      return protocol.spawn([(task_text(middle, relations[half:]), '',
                              'an entity')])
    return protocol.answer(view.children_answers[1][0] or middle)


# ---------------------------------------------------------------- Builder


class RaoMultihop(builder_lib.TaskBuilder):
  """Multi-hop questions over generated graphs (after DeepDive); configs
  are hop counts."""

  BUILDER_CONFIGS = builder_lib.level_configs(
      {'easy': (1, 2), 'medium': (3, 5), 'hard': (6, 8), 'extreme': (9, 12)},
      'hops')

  def make_example(self, rng: random.Random,
                   config: builder_lib.LevelConfig) -> dict[str, str]:
    hops = rng.randint(config.low, config.high)
    graph = make_graph(rng, 2 * hops + 8)
    start = rng.choice(sorted(graph))
    relations = tuple(rng.choice(RELATIONS) for _ in range(hops))
    world = {'graph': graph, 'start': start, 'relations': relations}
    return {'task': task_text(start, relations), 'data': '',
            'format': 'an entity', 'answer': walk(graph, start, relations),
            'world': json.dumps(world, sort_keys=True)}


TASK = registry.register(registry.Task(
    name='multihop', tfds_name='rao_multihop', builder=RaoMultihop,
    make_env=make_env, recursive_solver=RecursiveSolver,
    direct_solver=DirectSolver))
