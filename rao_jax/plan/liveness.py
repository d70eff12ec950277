"""The peak memory of a program, estimated from its jaxpr without compiling.

`peak_bytes` walks a jaxpr in program order and keeps a running sum of the
buffers alive: an equation allocates its outputs, a buffer is freed after
its last use, and the peak is the largest sum seen (nested jaxprs -- jit,
remat, scan and while bodies -- add their own peak at their equation).
These rules follow what XLA does to the same program:

  fusion    an elementwise result used once, by an elementwise op, a
            reduction or a matmul, is fused into its consumer and never
            stored; its inputs stay alive until the consumer runs instead.
            A broadcast or a convert is recomputed in every such consumer,
            however many read it.
  views     a reshape or squeeze is its operand's buffer (a bitcast): the
            operand lives as long as the view is read.
  in place  a dynamic-update-slice, scatter or loop writes its result into
            an operand of the same shape that dies there (the donated KV
            cache, a loop's carry).

The arguments themselves are not counted (the caller knows their sharded
size); `held_inputs` adds what an argument costs beyond itself while it is
in use (an FSDP-gathered copy of a weight), and `output_bytes` says what an
output costs (0 for one written into a donated argument).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math

from jax.extend import core as jcore

# Elementwise primitives XLA fuses into loop fusions.
_ELEMENTWISE = frozenset((
    'abs', 'acos', 'acosh', 'add', 'add_any', 'and', 'asin', 'asinh', 'atan',
    'atan2', 'atanh', 'broadcast_in_dim', 'cbrt', 'ceil', 'clamp',
    'convert_element_type',
    'cos', 'cosh', 'div', 'eq', 'erf', 'erf_inv', 'exp', 'exp2', 'expm1',
    'floor', 'ge', 'gt', 'integer_pow', 'iota', 'is_finite', 'le', 'log',
    'log1p', 'logistic', 'lt', 'max', 'min', 'mul', 'ne', 'neg', 'not', 'or',
    'pow', 'rem', 'round', 'rsqrt', 'select_n', 'shift_left',
    'shift_right_arithmetic', 'shift_right_logical', 'sign', 'sin', 'sinh',
    'sqrt', 'square', 'stop_gradient', 'sub', 'tan', 'tanh', 'xor'))
# Consumers an elementwise producer fuses into (besides elementwise ops).
_FUSING_CONSUMERS = _ELEMENTWISE | {'reduce_sum', 'reduce_max', 'reduce_min',
                                    'argmax', 'argmin', 'dot_general'}
# Results XLA recomputes in every fusion that reads them.
_RECOMPUTED = frozenset(('broadcast_in_dim', 'convert_element_type', 'iota'))
_VIEWS = frozenset(('reshape', 'squeeze', 'expand_dims'))
_CALLS = frozenset(('jit', 'pjit', 'closed_call', 'checkpoint', 'remat'))
_IN_PLACE = frozenset(('dynamic_update_slice', 'scatter', 'scatter-add',
                       'scatter_add', 'while', 'scan'))


def nbytes(aval) -> int:
  """Bytes of an abstract array (0 for tokens and other non-arrays)."""
  shape = getattr(aval, 'shape', None)
  dtype = getattr(aval, 'dtype', None)
  if shape is None or dtype is None:
    return 0
  return math.prod(shape) * dtype.itemsize


def _sub_jaxprs(eqn) -> list[jcore.Jaxpr]:
  found = []
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jcore.ClosedJaxpr):
        found.append(item.jaxpr)
      elif isinstance(item, jcore.Jaxpr):
        found.append(item)
  return found


def _is_var(v) -> bool:
  return isinstance(v, jcore.Var) and not isinstance(v, jcore.DropVar)


def _inline(jaxpr: jcore.Jaxpr) -> jcore.Jaxpr:
  """`jaxpr` with its calls (jit, remat) spliced in, as XLA inlines them
  before it fuses across their boundaries."""
  eqns, alias = [], {}
  sub = lambda v: alias.get(v, v) if _is_var(v) else v
  for eqn in jaxpr.eqns:
    invars = [sub(v) for v in eqn.invars]
    if eqn.primitive.name not in _CALLS:
      eqns.append(eqn.replace(invars=invars))
      continue
    called = eqn.params['jaxpr']
    inner = _inline(getattr(called, 'jaxpr', called))
    rename = dict(zip(inner.invars, invars))
    for v_in, v_out in zip(inner.outvars, eqn.outvars):
      if not _is_var(v_out):
        continue
      if _is_var(v_in) and v_in not in rename:
        rename[v_in] = v_out  # computed inside the call
      else:  # an input passed through, or a literal
        alias[v_out] = rename.get(v_in, v_in) if _is_var(v_in) else v_in
    name = lambda v: rename.get(v, v) if _is_var(v) else v
    for e in inner.eqns:
      eqns.append(e.replace(invars=[name(v) for v in e.invars],
                            outvars=[name(v) for v in e.outvars]))
  return jaxpr.replace(eqns=eqns, outvars=[sub(v) for v in jaxpr.outvars])


def _fused_vars(jaxpr: jcore.Jaxpr) -> set:
  """Results stored as their inputs: views, elementwise results used once
  by a consumer XLA fuses them into, and broadcasts and converts however
  many read them."""
  uses: dict = {}
  for i, eqn in enumerate(jaxpr.eqns):
    for v in eqn.invars:
      if _is_var(v):
        uses.setdefault(v, []).append(i)
  outputs = {v for v in jaxpr.outvars if _is_var(v)}
  fused = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in _VIEWS:  # the operand's buffer, reinterpreted
      fused.update(v for v in eqn.outvars if v not in outputs)
    if eqn.primitive.name not in _ELEMENTWISE:
      continue
    # A broadcast or a convert is recomputed inside each of its consumers;
    # other elementwise results fuse into a single one.
    many = eqn.primitive.name in _RECOMPUTED
    for v in eqn.outvars:
      consumers = uses.get(v, [])
      if (v not in outputs and (len(consumers) == 1 or many and consumers)
          and all(jaxpr.eqns[i].primitive.name in _FUSING_CONSUMERS
                  for i in consumers)):
        fused.add(v)
  return fused


def _walk(jaxpr: jcore.Jaxpr, held_inputs: Sequence[int],
          output_bytes: Sequence[int | None] | None,
          split: Mapping[tuple[int, ...], int]) -> tuple[int, int]:
  """(peak, bytes alive at the end) of the buffers `jaxpr` allocates."""

  jaxpr = _inline(jaxpr)

  def cost(aval) -> int:
    return nbytes(aval) // split.get(tuple(getattr(aval, 'shape', ())), 1)

  fused = _fused_vars(jaxpr)
  # A fused value is stored as its inputs: they live until its consumer.
  stored_as: dict = {}

  def stored_inputs(eqn) -> set:
    found = set()
    for v in eqn.invars:
      if _is_var(v):
        found |= stored_as[v] if v in fused else {v}
    return found

  last_use: dict = {}
  for i, eqn in enumerate(jaxpr.eqns):
    inputs = stored_inputs(eqn)
    for v in eqn.outvars:
      if v in fused:
        stored_as[v] = inputs
    if not all(v in fused for v in eqn.outvars):
      for v in inputs:
        last_use[v] = i
  end = len(jaxpr.eqns)
  for v in jaxpr.outvars:
    if _is_var(v):
      for u in stored_as.get(v, {v}):
        last_use[u] = end

  size = {v: held for v, held in zip(jaxpr.invars, held_inputs)}
  arguments = set(jaxpr.invars) | set(jaxpr.constvars)
  out_size = dict(zip(jaxpr.outvars, output_bytes or ()))
  alive = sum(size.values())
  peak = alive
  for i, eqn in enumerate(jaxpr.eqns):
    outvars = [v for v in eqn.outvars if _is_var(v) and v in last_use]
    if eqn.outvars and all(v in fused for v in eqn.outvars):
      continue
    nested = 0
    for sub in _sub_jaxprs(eqn):
      sub_peak, sub_end = _walk(sub, (), None, split)
      nested = max(nested, sub_peak - sub_end)
    inputs = stored_inputs(eqn)
    dying = [v for v in inputs if last_use.get(v) == i and v not in arguments]
    for v in outvars:
      donor = next((d for d in dying if eqn.primitive.name in _IN_PLACE and
                    d.aval.shape == v.aval.shape and
                    d.aval.dtype == v.aval.dtype and size.get(d)), None)
      if donor is not None:  # written in place: the buffer changes hands
        size[v], size[donor] = size[donor], 0
        dying.remove(donor)
        continue
      size[v] = out_size.get(v) if out_size.get(v) is not None else cost(
          v.aval)
      alive += size[v]
    peak = max(peak, alive + nested)
    for v in inputs:
      if last_use.get(v) == i and v not in jaxpr.outvars:
        alive -= size.get(v, 0)
        size[v] = 0
  return peak, alive


def peak_bytes(jaxpr: jcore.ClosedJaxpr, *,
               held_inputs: Sequence[int] = (),
               output_bytes: Sequence[int | None] | None = None,
               split: Mapping[tuple[int, ...], int] | None = None) -> int:
  """The estimated peak of the buffers a program allocates beyond its
  arguments, outputs included.

  Args:
    jaxpr: the program (`jax.make_jaxpr(f)(*args)`); a jaxpr that is one
      jitted call is looked into.
    held_inputs: per flat argument, bytes it costs beyond itself from the
      start until its last use (e.g. the all-gathered copy of a weight
      sharded over 'fsdp'); missing entries cost 0.
    output_bytes: per flat output, what it costs (0: written into a
      donated argument); None entries or a missing list: its own size.
    split: shape -> in how many pieces a device holds a result of that
      shape: a weight's gradient, accumulated or not, is kept split as the
      weight is (the weight itself is gathered only to be used).

  Returns:
    Bytes: the estimated peak of temporaries plus outputs.
  """
  inner = jaxpr.jaxpr
  return _walk(inner, held_inputs, output_bytes, split or {})[0]
