"""The frontier scheduler: many call trees advance together over one engine.

Each round it admits ready nodes into free slots, decodes all slots a few
tokens, and handles every step that stopped:

- answer: the node is done; its answer goes to its parent, and when all
  the parent's children are done their results are injected into the
  parent's context and the parent becomes ready again;
- tool call: the observation is injected and the node keeps its slot (an
  engine may reuse the slot's KV cache: the new context extends the old);
- spawn: the children become ready, the parent releases its slot and waits
  (so deep trees cannot deadlock the batch);
- malformed step or refused spawn: an error is injected, the node goes on.

Admission order: the ready node of the tree that holds the fewest slots
first, then the longest waiting, so a spawn storm in one tree cannot
starve another and every free slot is filled while work is ready. With
`sequential_children` a spawn's children run one after another (each
child's whole subtree before the next child starts), as a program that
calls its sub-agents in turn would: the same trees, for comparing the
time they take with children that run in parallel.

Every token a node did not sample comes from its `chat.ChatFormat`: the
prompt (and preamble) as the first turn, each injection as the user turn
after a step, rendered in the run's chat template or the raw protocol.

With a `code_runtime.CodeRuntime` the nodes act in the python mode
(`code_protocol`): each step is a block of code run in the node's own
namespace in a sandbox worker, its output the observation; the children a
block asks for with `spawn` start once it has run, exactly as a spawn
step's children do, and the node's next block finds their answers in
`results`. The budgets, the tree records and the tokens are the same in
both modes.

Budgets: depth, children per step and nodes per tree refuse a spawn with
an error; steps per node fail the node; tokens per tree (all tokens of all
its node sequences) abort the tree. Every node ends done, failed or
aborted. Node contents depend only on the tree seed, the node's path and
its context, never on packing, so the same trees come out whatever the
slot count — unless a tree budget or state shared between siblings (e.g.
an inventory) makes the outcome depend on the order nodes ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import time
from typing import Any

from rao_jax.agent import chat as chat_lib
from rao_jax.agent import code_protocol
from rao_jax.agent import code_runtime as code_lib
from rao_jax.agent import engine as engine_lib
from rao_jax.agent import env as env_lib
from rao_jax.agent import protocol
from rao_jax.agent import tree as tree_lib
from rao_jax.model import tokenizer as tokenizer_lib

# Text a root's first step is forced to begin with: the same for every
# root, or chosen from the root's spec (e.g. a direct answer's first tag,
# which depends on whether the prompt shows the data whole).
RootPrefix = str | Callable[[env_lib.NodeSpec], str]

OUT_OF_STEPS = 'error: sub-agent ran out of steps'
OUT_OF_CONTEXT = 'error: sub-agent ran out of context'
TREE_ABORTED = 'error: call tree aborted (token budget)'


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budgets:
  """Limits of a rollout; `max_depth=0` is the single-agent baseline.

  Attributes:
    max_depth: deepest depth a node may have (the root is 0).
    max_children: children per spawn step.
    max_steps: steps per node.
    max_nodes: nodes per tree.
    max_tokens: tokens per tree, summed over its node sequences.
    max_new_tokens: new tokens per step.
  """

  max_depth: int = 3
  max_children: int = 4
  max_steps: int = 10
  max_nodes: int = 64
  max_tokens: int = 1 << 16
  max_new_tokens: int = 128

  def __post_init__(self):
    for field in dataclasses.fields(self):
      minimum = 0 if field.name == 'max_depth' else 1
      if getattr(self, field.name) < minimum:
        raise ValueError(f'Budgets.{field.name} must be >= {minimum}')


@dataclasses.dataclass
class RolloutStats:
  """How the slots were used.

  Attributes:
    decode_calls: engine.decode calls.
    slot_steps: num_slots * decode steps, summed over calls.
    useful_slot_steps: tokens generated (one per useful slot-step).
    saturated_slot_steps, saturated_useful_slot_steps: the same, counted
      only over calls after which ready nodes were still waiting for a
      slot (the batch had work for every slot).
    admissions: steps admitted (prefills).
    prefill_tokens: context tokens handed to admissions.
    wall_s: seconds the rollout took.
    spawns: spawn steps whose children all finished.
    parallel_spawns: those of them in which two children were running at
      once (a child runs from its first admission until it finishes, its
      own children included).
    tree_decode_steps: per tree, decode steps run from the rollout's start
      until the tree finished (one token of every slot a step).
    tree_wall_s: per tree, seconds from the rollout's start until it
      finished.
    code_blocks: blocks run in the sandbox (the python mode).
    code_s: their round trips to the sandbox, in seconds.
  """

  decode_calls: int = 0
  slot_steps: int = 0
  useful_slot_steps: int = 0
  saturated_slot_steps: int = 0
  saturated_useful_slot_steps: int = 0
  admissions: int = 0
  prefill_tokens: int = 0
  wall_s: float = 0.0
  spawns: int = 0
  parallel_spawns: int = 0
  tree_decode_steps: list[int] = dataclasses.field(default_factory=list)
  tree_wall_s: list[float] = dataclasses.field(default_factory=list)
  code_blocks: int = 0
  code_s: float = 0.0

  def plus(self, other: RolloutStats) -> RolloutStats:
    """The statistics of two rollouts together: counts and seconds add,
    per-tree lists are this one's trees, then the other's."""
    return RolloutStats(**{
        f.name: getattr(self, f.name) + getattr(other, f.name)
        for f in dataclasses.fields(self)})

  @property
  def slot_utilization(self) -> float:
    return self.useful_slot_steps / max(self.slot_steps, 1)

  @property
  def saturated_utilization(self) -> float:
    """Utilisation while work remained for the whole batch (1.0 if never)."""
    if not self.saturated_slot_steps:
      return 1.0
    return self.saturated_useful_slot_steps / self.saturated_slot_steps


@dataclasses.dataclass(eq=False)
class _TreeRun:
  tree: tree_lib.Tree
  environment: env_lib.Environment
  tools: dict[str, env_lib.Tool]
  tool_list: tuple[env_lib.Tool, ...]
  num_tokens: int = 0
  slots_held: int = 0
  open_runs: set = dataclasses.field(default_factory=set)
  finished_step: int = 0  # decode steps run when it finished
  finished_s: float = 0.0


@dataclasses.dataclass(eq=False)
class _NodeRun:
  """A node's runtime state besides its record."""

  node: tree_lib.Node
  tree_run: _TreeRun
  state: Any
  parent: _NodeRun | None
  observations: list[str] = dataclasses.field(default_factory=list)
  children_answers: list[tuple[str | None, ...]] = dataclasses.field(
      default_factory=list)
  waiting_on: list[_NodeRun] = dataclasses.field(default_factory=list)
  # Its chat turns so far (`chat.ChatFormat`): the injections render after
  # them.
  conversation: list[chat_lib.Message] = dataclasses.field(
      default_factory=list)
  num_children: int = 0  # over all its spawns: the next child's path index
  # Children created but not yet ready (sequential children only).
  queued: list[_NodeRun] = dataclasses.field(default_factory=list)
  # The python mode: its namespace's key, the output of the block whose
  # children it waits for, and the answers its next block receives.
  key: str = ''
  pending_output: str = ''
  new_results: list[str] = dataclasses.field(default_factory=list)
  slot: int | None = None
  ready_seq: int = 0
  started_step: int | None = None  # decode steps run when first admitted
  finished_step: int = 0


class FrontierScheduler:
  """Runs call trees to completion over a slot engine."""

  def __init__(self, engine: engine_lib.Engine,
               tokenizer: tokenizer_lib.Tokenizer, budgets: Budgets,
               policy_version: int = 0, inline_chars: int = 64,
               head_chars: int = 24, show_depth_budget: bool = True,
               chat: chat_lib.ChatFormat | None = None,
               sequential_children: bool = False,
               code: code_lib.CodeRuntime | None = None,
               root_prefix: RootPrefix = ''):
    """Args: the engine, the run's tokenizer, budgets, the version recorded
    in the nodes, the prompt's data window and whether its budget line
    shows the depth budget (`context.Window`), the chat format over the
    tokenizer (default: the raw protocol), whether a spawn's children
    run one after another, the sandbox of the python mode (None: the
    tag protocol), and text every root's first step is forced to begin
    with (e.g. `protocol.SPAWN`: an evaluation of the policy made to
    delegate first; its tokens are recorded unsampled, loss mask 0), or
    a function of the root's spec that gives it."""
    if chat is not None and chat.tokenizer is not tokenizer:
      raise ValueError('the chat format must use the scheduler\'s tokenizer')
    if chat is None and code is not None:
      chat = chat_lib.ChatFormat(tokenizer, actions=chat_lib.PYTHON)
    if (code is not None) != (chat is not None and
                              chat.actions == chat_lib.PYTHON):
      raise ValueError('the python mode needs both a CodeRuntime and a '
                       'chat format of its actions (ChatFormat(actions='
                       '"python")), and the tag mode neither')
    self.engine = engine
    self.tokenizer = tokenizer
    self.chat = chat_lib.ChatFormat(tokenizer) if chat is None else chat
    self.budgets = budgets
    self.policy_version = policy_version
    self.inline_chars = inline_chars
    self.head_chars = head_chars
    self.show_depth_budget = show_depth_budget
    self.sequential_children = sequential_children
    self.code = code
    self.root_prefix = root_prefix
    self._prefix_ids: dict[str, tuple[int, ...]] = {}
    if isinstance(root_prefix, str):
      self._opening_ids(root_prefix)  # refused here, before any rollout

  # ------------------------------------------------------------ the loop

  def run(self, environments: Sequence[env_lib.Environment],
          seeds: Sequence[int], groups: Sequence[int] | None = None,
          tree_ids: Sequence[int] | None = None
          ) -> tuple[list[tree_lib.Tree], RolloutStats]:
    """Rolls out one tree per environment.

    Args:
      environments: one per tree (the G trees of a group may share none of
        their state, so give each its own environment).
      seeds: per tree, the seed its node keys derive from.
      groups: per tree, its group id (default: its index).
      tree_ids: per tree, its id (default: its index).

    Returns:
      The finished trees, nodes in path pre-order, and the slot statistics.
    """
    if len(seeds) != len(environments):
      raise ValueError('need one seed per environment')
    start = self._start = time.perf_counter()
    self._stats = RolloutStats()
    self._steps = 0  # decode steps run so far
    self._ready: list[_NodeRun] = []
    self._ready_seq = 0
    self._in_slot: dict[int, _NodeRun] = {}
    self._continue_in_slot: dict[int, _NodeRun] = {}
    tree_runs = []
    for i, environment in enumerate(environments):
      tree = tree_lib.Tree(
          tree_id=tree_ids[i] if tree_ids is not None else i,
          seed=int(seeds[i]), group=groups[i] if groups is not None else i,
          status=tree_lib.RUNNING)
      tools = tuple(environment.tools())
      tree_run = _TreeRun(tree, environment, env_lib.tool_table(tools), tools)
      tree_runs.append(tree_run)
      self._new_node(tree_run, None, environment.root_spec(),
                     environment.root_state())
    while self._ready or self._in_slot:
      self._admit()
      if not self._in_slot:
        continue  # every admission failed (context full); try the rest
      result = self.engine.decode()
      self._count(result)
      for slot in sorted(result.finished):
        if slot in self._in_slot:
          self._handle_step(self._in_slot[slot], result.finished[slot])
    for tree_run in tree_runs:
      tree_lib.renumber(tree_run.tree)
      tree_run.tree.status = (tree_lib.ABORTED if tree_run.tree.status ==
                              tree_lib.ABORTED else tree_run.tree.root.status)
    self._stats.wall_s = time.perf_counter() - start
    self._stats.tree_decode_steps = [t.finished_step for t in tree_runs]
    self._stats.tree_wall_s = [t.finished_s for t in tree_runs]
    return [t.tree for t in tree_runs], self._stats

  def _count(self, result: engine_lib.DecodeResult) -> None:
    stats = self._stats
    slot_steps = self.engine.num_slots * result.num_steps
    useful = sum(result.new_tokens)
    self._steps += result.num_steps
    stats.decode_calls += 1
    stats.slot_steps += slot_steps
    stats.useful_slot_steps += useful
    if any(r.node.status not in tree_lib.TERMINAL for r in self._ready):
      stats.saturated_slot_steps += slot_steps
      stats.saturated_useful_slot_steps += useful

  # ----------------------------------------------------------- admission

  def _admit(self) -> None:
    requests = {}
    # Snapshot: a node that fails here releases its slot, editing the dict.
    continuing, self._continue_in_slot = self._continue_in_slot, {}
    for slot, run in continuing.items():
      if run.node.status not in tree_lib.TERMINAL:
        request = self._request(run)
        if request is not None:
          requests[slot] = request
    self._ready = [r for r in self._ready
                   if r.node.status not in tree_lib.TERMINAL]
    free = [s for s in range(self.engine.num_slots) if s not in self._in_slot]
    while free and self._ready:
      # Fewest slots held first, then the longest waiting: no tree starves.
      best = min(self._ready,
                 key=lambda r: (r.tree_run.slots_held, r.ready_seq))
      self._ready.remove(best)
      slot = free.pop(0)
      self._take_slot(best, slot)
      request = self._request(best)
      if request is not None:
        requests[slot] = request
      elif best.slot is None:
        free.insert(0, slot)  # its admission failed; the slot is free again
    if requests:
      self._stats.admissions += len(requests)
      self._stats.prefill_tokens += sum(len(r.tokens)
                                        for r in requests.values())
      self.engine.admit(requests)

  def _take_slot(self, run: _NodeRun, slot: int) -> None:
    if run.started_step is None:
      run.started_step = self._steps
    run.slot = slot
    run.tree_run.slots_held += 1
    self._in_slot[slot] = run
    run.node.status = tree_lib.RUNNING

  def _release(self, run: _NodeRun, suspend: bool = False) -> None:
    if run.slot is None:
      return
    if suspend:
      self.engine.suspend(run.slot)  # it returns; the engine may keep its KV
    else:
      self.engine.release(run.slot)
    self._in_slot.pop(run.slot, None)
    self._continue_in_slot.pop(run.slot, None)
    run.tree_run.slots_held -= 1
    run.slot = None

  def _make_ready(self, run: _NodeRun) -> None:
    self._ready_seq += 1
    run.ready_seq = self._ready_seq
    self._ready.append(run)

  def _request(self, run: _NodeRun) -> engine_lib.StepRequest | None:
    """The next step's request, or None if the node's context is full."""
    node = run.node
    forced = self._forced(run)
    room = self.engine.max_len - len(node.tokens) - len(forced)
    if room <= 0:
      self._finish(run, tree_lib.FAILED, OUT_OF_CONTEXT)
      return None
    return engine_lib.StepRequest(
        tokens=tuple(node.tokens) + forced, seed=run.tree_run.tree.seed,
        path=node.path, step=node.num_steps,
        max_new_tokens=min(self.budgets.max_new_tokens - len(forced), room),
        view=self._view(run))

  def _forced(self, run: _NodeRun) -> tuple[int, ...]:
    """The tokens the node's next step begins with, not sampled: the root
    prefix on a root's first step, else none."""
    if run.node.depth or run.node.num_steps or not self.root_prefix:
      return ()
    prefix = self.root_prefix
    return self._opening_ids(
        prefix if isinstance(prefix, str) else prefix(run.node.spec))

  def _opening_ids(self, text: str) -> tuple[int, ...]:
    """The token ids of a forced opening, checked to leave room to sample."""
    ids = self._prefix_ids.get(text)
    if ids is None:
      ids = tuple(self.tokenizer.encode(text))
      if len(ids) >= self.budgets.max_new_tokens:
        raise ValueError(f'root_prefix {text!r} leaves no token of '
                         f'max_new_tokens={self.budgets.max_new_tokens}')
      self._prefix_ids[text] = ids
    return ids

  def _remaining(self, run: _NodeRun) -> dict[str, int]:
    budgets = self.budgets
    return {'depth': budgets.max_depth - run.node.depth,
            'steps': budgets.max_steps - run.node.num_steps,
            'children': budgets.max_children}

  def _prompt_budgets(self, run: _NodeRun) -> dict[str, int]:
    """The budget line of a new node's prompt (`context.prompt_budgets`)."""
    return protocol.shown_budgets(self._remaining(run),
                                  self.show_depth_budget)

  def _view(self, run: _NodeRun) -> env_lib.StepView:
    tree_run = run.tree_run
    budgets = dict(self._remaining(run),
                   nodes=self.budgets.max_nodes - len(tree_run.tree.nodes),
                   tokens=self.budgets.max_tokens - tree_run.num_tokens)
    return env_lib.StepView(
        spec=run.node.spec, depth=run.node.depth, step=run.node.num_steps,
        observations=tuple(run.observations),
        children_answers=tuple(run.children_answers), budgets=budgets,
        state=run.state)

  # ------------------------------------------------------------- nodes

  def _new_node(self, tree_run: _TreeRun, parent: _NodeRun | None,
                spec: env_lib.NodeSpec, state: Any,
                ready: bool = True) -> _NodeRun:
    """A node with its prompt injected: ready, or (not `ready`) queued on
    its parent until its older siblings are done."""
    tree = tree_run.tree
    if parent is None:
      depth, path, parent_id = 0, (), None
    else:
      depth = parent.node.depth + 1
      path = parent.node.path + (parent.num_children,)
      parent.num_children += 1
      parent_id = parent.node.node_id
    node = tree_lib.Node(tree_id=tree.tree_id, node_id=len(tree.nodes),
                         parent=parent_id, depth=depth, path=path, spec=spec,
                         policy_version=self.policy_version)
    tree.nodes.append(node)
    run = _NodeRun(node, tree_run, state, parent)
    tree_run.open_runs.add(run)
    if self.code is None:
      prompt = protocol.render_prompt(spec, self._prompt_budgets(run),
                                      tree_run.tool_list, self.inline_chars,
                                      self.head_chars)
      run.conversation = self.chat.start(prompt, tree_run.tool_list)
    else:  # code reads its data as `context`; no environment tools
      run.key = self.code.new_key()
      prompt = code_protocol.render_prompt(spec, self._prompt_budgets(run))
      run.conversation = self.chat.start(prompt, ())
    if self._inject(run, self.chat.prompt_ids(run.conversation)):
      if ready:
        self._make_ready(run)
      else:
        parent.queued.append(run)
    return run

  def _inject(self, run: _NodeRun, ids: Sequence[int]) -> bool:
    """Appends tokens the policy did not sample; False if the node ended.

    An injection that would leave no room for a new token in the engine's
    window fails the node instead (its sequence never outgrows the
    window; only a prompt longer than the window can).
    """
    node = run.node
    if node.tokens and len(node.tokens) + len(ids) >= self.engine.max_len:
      self._finish(run, tree_lib.FAILED, OUT_OF_CONTEXT)
      return False
    node.tokens.extend(ids)
    node.loss_mask.extend([0] * len(ids))
    node.logprobs.extend([0.0] * len(ids))
    return self._charge(run, len(ids))

  def _charge(self, run: _NodeRun, num_tokens: int) -> bool:
    tree_run = run.tree_run
    tree_run.num_tokens += num_tokens
    if tree_run.num_tokens > self.budgets.max_tokens:
      self._abort(tree_run)
      return False
    return True

  def _inject_turn(self, run: _NodeRun, injected: str) -> bool:
    """Injects the user turn `injected` after the node's last step, in the
    run's chat format; False if the node ended (`_inject`)."""
    ids = self.chat.injection_ids(run.conversation, injected)
    run.conversation.append({'role': chat_lib.USER, 'content': injected})
    return self._inject(run, ids)

  def _abort(self, tree_run: _TreeRun) -> None:
    tree_run.tree.status = tree_lib.ABORTED
    self._tree_finished(tree_run)
    for run in list(tree_run.open_runs):
      self._release(run)
      self._drop_namespace(run)
      run.node.status = tree_lib.ABORTED
      run.node.answer = TREE_ABORTED
      run.node.success = 0.0
    tree_run.open_runs.clear()

  def _finish(self, run: _NodeRun, status: str, text: str) -> None:
    """Ends a node; delivers its result to its parent."""
    self._release(run)
    self._drop_namespace(run)
    node, tree_run = run.node, run.tree_run
    node.status, node.answer = status, text
    run.finished_step = self._steps
    tree_run.open_runs.discard(run)
    environment = tree_run.environment
    if status != tree_lib.DONE:
      node.success = 0.0
    elif run.parent is None:
      node.success = environment.score_root(text, run.state)
    else:
      node.success = environment.score_subtask(node.spec, text, run.state)
    parent = run.parent
    if parent is None:
      self._tree_finished(tree_run)
      return
    if parent.node.status in tree_lib.TERMINAL:
      return
    if not all(c.node.status in tree_lib.TERMINAL for c in parent.waiting_on):
      if parent.queued:  # sequential children: the next one starts
        self._make_ready(parent.queued.pop(0))
      return
    self._count_spawn(parent.waiting_on)
    answers = [c.node.answer or '' for c in parent.waiting_on]
    parent.children_answers.append(tuple(
        c.node.answer if c.node.status == tree_lib.DONE else None
        for c in parent.waiting_on))
    parent.waiting_on = []
    answers = [protocol.strip_tags(a) for a in answers]
    if self.code is None:
      injected = protocol.results(answers)
    else:  # the block's output, then the answers its next block receives
      parent.new_results.extend(answers)
      injected = code_protocol.results(parent.pending_output, answers)
      parent.pending_output = ''
    parent.observations.append(injected[len(protocol.OBS):
                                        -len(protocol.OBS_END)])
    if self._inject_turn(parent, injected):
      parent.node.status = tree_lib.RUNNING
      self._make_ready(parent)

  def _drop_namespace(self, run: _NodeRun) -> None:
    if self.code is not None and run.key:
      self.code.drop(run.key)
      run.key = ''

  def _tree_finished(self, tree_run: _TreeRun) -> None:
    tree_run.finished_step = self._steps
    tree_run.finished_s = time.perf_counter() - self._start

  def _count_spawn(self, children: Sequence[_NodeRun]) -> None:
    """Counts a finished spawn, and whether two children ran at once."""
    self._stats.spawns += 1
    spans = sorted((c.started_step, c.finished_step) for c in children
                   if c.started_step is not None)
    # Sorted by start, two children overlap iff one starts before an
    # earlier-starting one has finished.
    latest_end = None
    for start, end in spans:
      if latest_end is not None and start < latest_end:
        self._stats.parallel_spawns += 1
        return
      latest_end = end if latest_end is None else max(latest_end, end)

  # -------------------------------------------------------------- steps

  def _handle_step(self, run: _NodeRun, output: engine_lib.StepOutput
                   ) -> None:
    node = run.node
    forced = self._forced(run)
    tokens = forced + tuple(output.tokens)
    node.tokens.extend(tokens)
    node.loss_mask.extend([0] * len(forced) + [1] * len(output.tokens))
    node.logprobs.extend([0.0] * len(forced) +
                         [float(p) for p in output.logprobs])
    node.num_steps += 1
    node.children.append([])
    if not self._charge(run, len(tokens)):
      return
    text = self.tokenizer.decode(tokens)
    run.conversation.append({'role': chat_lib.ASSISTANT, 'content': text})
    if self.code is not None:
      self._handle_code(run, text, output)
      return
    action = protocol.parse_step(text)
    if isinstance(action, protocol.Answer):
      self._finish(run, tree_lib.DONE, action.text)
      return
    if node.num_steps >= self.budgets.max_steps:
      self._finish(run, tree_lib.FAILED, OUT_OF_STEPS)
      return
    if isinstance(action, protocol.ToolCall):
      self._observe(run, self._call_tool(run, action))
    elif isinstance(action, protocol.Spawn):
      refusal = self._spawn(run, action)
      if refusal is not None:
        self._observe(run, 'error: ' + refusal)
    else:
      self._observe(run, 'error: ' + _parse_error(action, output))

  def _handle_code(self, run: _NodeRun, text: str,
                   output: engine_lib.StepOutput) -> None:
    """A python-mode step: run its block, then answer, wait or observe."""
    action = code_protocol.parse_step(text)
    if isinstance(action, protocol.ParseError):
      if run.node.num_steps >= self.budgets.max_steps:
        self._finish(run, tree_lib.FAILED, OUT_OF_STEPS)
      else:
        self._observe(run, 'error: ' + _parse_error(action, output))
      return
    result = self.code.run(run.key, action.code, run.node.spec.data,
                           run.new_results)
    self._stats.code_blocks += 1
    self._stats.code_s += result.seconds
    run.new_results = []
    if result.answer is not None:
      self._finish(run, tree_lib.DONE, result.answer)
      return
    if run.node.num_steps >= self.budgets.max_steps:
      self._finish(run, tree_lib.FAILED, OUT_OF_STEPS)
      return
    text = code_lib.observation(result)
    if not result.spawns:
      self._observe(run, text)
      return
    specs = [env_lib.NodeSpec(*child) for child in result.spawns]
    refusal = self._refuse_spawn(run, len(specs))
    if refusal is not None:
      # The handles still get an answer each: the refusal.
      run.new_results.extend(['error: ' + refusal] * len(specs))
      self._observe(run, '\n'.join(filter(None, [text,
                                                 'error: ' + refusal])))
      return
    run.pending_output = protocol.strip_tags(text)
    self._start_children(run, specs)

  def _call_tool(self, run: _NodeRun, call: protocol.ToolCall) -> str:
    tool = run.tree_run.tools.get(call.name)
    if tool is None:
      names = ', '.join(run.tree_run.tools) or 'none'
      return f'error: unknown tool {call.name!r} (tools: {names})'
    result = tool.run(run.state, call.args)
    return ('error: ' + result.text) if result.error else result.text

  def _observe(self, run: _NodeRun, text: str) -> None:
    """Injects an observation; the node goes on in its slot."""
    text = protocol.strip_tags(text)
    run.observations.append(text)
    if self._inject_turn(run, protocol.observation(text)):
      self._continue_in_slot[run.slot] = run

  def _refuse_spawn(self, run: _NodeRun, num_children: int) -> str | None:
    """Why a spawn of `num_children` is refused by the budgets, or None."""
    budgets, node = self.budgets, run.node
    tree_run = run.tree_run
    if node.depth >= budgets.max_depth:
      return (f'spawn refused: depth budget {budgets.max_depth} reached, '
              'answer directly')
    if num_children > budgets.max_children:
      return (f'spawn refused: {num_children} children, at most '
              f'{budgets.max_children} per step')
    if len(tree_run.tree.nodes) + num_children > budgets.max_nodes:
      left = budgets.max_nodes - len(tree_run.tree.nodes)
      return f'spawn refused: only {left} more nodes allowed in this tree'
    return None

  def _spawn(self, run: _NodeRun, spawn: protocol.Spawn) -> str | None:
    """Starts the children, or returns why the spawn is refused."""
    refusal = self._refuse_spawn(run, len(spawn.children))
    if refusal is not None:
      return refusal
    specs = []
    for i, child in enumerate(spawn.children):
      spec = protocol.resolve_child(child, run.node.spec.data)
      if isinstance(spec, str):
        return f'child {i + 1}: {spec}'
      specs.append(spec)
    self._start_children(run, specs)
    return None

  def _start_children(self, run: _NodeRun,
                      specs: Sequence[env_lib.NodeSpec]) -> None:
    """Suspends the node and makes its children (already allowed)."""
    node, tree_run = run.node, run.tree_run
    self._release(run, suspend=True)
    node.status = tree_lib.WAITING
    environment = tree_run.environment
    for i, spec in enumerate(specs):
      child = self._new_node(
          tree_run, run, spec, environment.child_state(run.state, spec),
          ready=i == 0 or not self.sequential_children)
      node.children[-1].append(child.node.node_id)
      run.waiting_on.append(child)
      if tree_run.tree.status == tree_lib.ABORTED:
        return  # its prompt broke the token budget


def _parse_error(action: protocol.ParseError,
                 output: engine_lib.StepOutput) -> str:
  """A malformed step's error text, saying when the step was cut."""
  if output.stop_reason == engine_lib.STOP:
    return action.error
  return (f'step ended without a stop tag ({output.stop_reason}, '
          f'{len(output.tokens)} tokens): {action.error}')

