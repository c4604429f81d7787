"""Operation-level localisation: the first traced operation that breaks equivariance, by source line.

``localize(f, x, group)`` traces ``f`` with ``jax.make_jaxpr`` and walks its equations in the order
they run (inside ``jax.jit``-ed functions, ``jnp`` helpers and custom derivatives too). Every
intermediate that depends on ``x``, is floating and whose shape says it carries the input's
symmetry (the input's own shape, an NHWC image or ``(N, H, W, K, C)`` group feature map at a
whole-number subsampling, or one pixel) is returned, together with ``f``'s output, from ONE
program checked by ``equivax.check_outputs``; its action is inferred from its shape as a report
infers layers' actions. The first operation that breaks for an element is named with the source
line that made it, from the equation's ``source_info``:

    `pad` at my_model.py:42 (forward) breaks shift(0,1); everything before it is exact

The result is a ``Report`` with ``by="operation"``: one row per checked operation, rendered like
any report.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jex
from jax.extend import source_info_util

from equivax import actions as actions_lib
from equivax._carried import Carried, carried_by, spatial
from equivax._check import check_outputs
from equivax._report import LayerReport, Report
from equivax.groups import Group

__all__ = ["localize"]

#: Primitives whose inner program is walked equation by equation (and the parameter holding it).
_INNER = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
}
_JAX_DIR = os.path.dirname(jax.__file__)
#: Elementwise primitives: applied to one equivariant array and scalars, they keep it equivariant,
#: so they are not checked after a checked operation.
_POINTWISE = frozenset(
    "abs add ceil convert_element_type copy cos cosh div erf exp exp2 expm1 floor integer_pow log log1p "
    "logistic max min mul neg pow round rsqrt sign sin sinh sqrt square sub tan tanh".split()
)
_ORIENTATIONS = (4, 8)
_SUMMARY = re.compile(r"^(?P<file>.*?):(?P<line>\d+)(?::\d+)? \((?P<function>.*)\)$")


@dataclasses.dataclass(frozen=True)
class _Op:
    """One output of one equation, as seen while tracing."""

    position: int  # the equation's position in run order
    output: int  # which of its outputs
    primitive: str
    within: str | None  # the jitted function it sits in (``relu`` for jax.nn.relu), if any
    where: str | None
    shape: tuple[int, ...]
    dtype: Any
    depends: bool  # computed from x
    inputs: tuple[int, ...] = ()  # the ops whose outputs it reads
    pointwise: bool = False  # elementwise in one array computed from x, with scalars only besides


def _where(info: Any, depth: int = 2) -> str | None:
    """``"file.py:42 (function)"`` of the user's frame that made an equation (and its caller's),
    or ``None``. Frames are jax's user frames (outside jax and the standard library); where
    none was captured (a deep stack inside a library), the innermost frames outside jax."""
    if info is None:
        return None
    try:
        from jax._src import source_info_util as frames

        found = [(f.file_name, f.start_line, f.function_name) for f in frames.user_frames(info.traceback)]
        if not found and info.traceback is not None:
            found = [
                (f.file_name, f.line_num, f.function_name)
                for f in info.traceback.frames
                if not f.file_name.startswith(_JAX_DIR)
            ]
    except (ImportError, AttributeError):
        match = _SUMMARY.match(source_info_util.summarize(info) or "")
        found = [(match["file"], match["line"], match["function"])] if match else []
    named = [
        f"{os.path.basename(file)}:{line} ({function.split('<locals>.')[-1]})" for file, line, function in found[:depth]
    ]
    return ", called from ".join(named) or None


def _inner(eqn: Any) -> Any:
    key = _INNER.get(eqn.primitive.name)
    inner = eqn.params.get(key) if key else None
    if inner is None:
        return None
    return inner if isinstance(inner, jex.ClosedJaxpr) else jex.ClosedJaxpr(inner, ())


def _evaluate(
    jaxpr: Any,
    consts: Sequence[Any],
    args: Sequence[Any],
    depends: Sequence[bool],
    outer: tuple[Any, str | None],
    visit: Callable[[Any, Any, str | None, list[Any], list[Any], list[bool]], None],
) -> tuple[list[Any], list[bool]]:
    """Run ``jaxpr`` equation by equation, calling ``visit`` on every primitive (calls inlined)."""
    env: dict[Any, Any] = {}
    dep: dict[Any, bool] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex.Literal) else env[v]

    def read_dep(v: Any) -> bool:
        return False if isinstance(v, jex.Literal) else dep.get(v, False)

    for v, value in zip(jaxpr.constvars, consts, strict=True):
        env[v], dep[v] = value, False
    for v, value, d in zip(jaxpr.invars, args, depends, strict=True):
        env[v], dep[v] = value, d
    for eqn in jaxpr.eqns:
        values, deps = [read(v) for v in eqn.invars], [read_dep(v) for v in eqn.invars]
        info = eqn.source_info if outer[0] is None or _where(eqn.source_info) else outer[0]
        inner = _inner(eqn)
        if inner is not None:
            name = eqn.params.get("name") if outer[1] is None else outer[1]
            outs, out_deps = _evaluate(inner.jaxpr, inner.consts, values, deps, (info, name), visit)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            with source_info_util.user_context(eqn.source_info.traceback), eqn.ctx.manager:
                outs = eqn.primitive.bind(*values, **params)
            outs = list(outs) if eqn.primitive.multiple_results else [outs]
            out_deps = [any(deps)] * len(outs)
            visit(eqn, info, outer[1], values, outs, deps)
        for v, value, d in zip(eqn.outvars, outs, out_deps, strict=True):
            env[v], dep[v] = value, d
    return [read(v) for v in jaxpr.outvars], [read_dep(v) for v in jaxpr.outvars]


def _run(closed: Any, x: Any, visit: Callable[..., None]) -> list[Any]:
    outs, _ = _evaluate(closed.jaxpr, closed.consts, [x], [True], (None, None), visit)
    return outs


def _plan(closed: Any, x: jax.Array) -> tuple[list[_Op], list[int | None]]:
    """Every equation output in run order, and for each output of f the op that made it."""
    ops: list[_Op] = []
    made: dict[int, int] = {}
    kept: list[Any] = []  # every traced value stays alive, so no id is reused

    def visit(eqn: Any, info: Any, within: str | None, values: list[Any], outs: list[Any], deps: list[bool]) -> None:
        position = ops[-1].position + 1 if ops else 0
        inputs = tuple(made[id(v)] for v in values if id(v) in made)
        depends = any(deps)
        pointwise = (
            eqn.primitive.name in _POINTWISE
            and sum(deps) == 1
            and all(jnp.ndim(v) == 0 for v, d in zip(values, deps, strict=True) if not d)
        )
        for k, value in enumerate(outs):
            made[id(value)] = len(ops)
            kept.append(value)
            name, where = eqn.primitive.name, _where(info)
            op = _Op(position, k, name, _short(within), where, value.shape, value.dtype, depends, inputs, pointwise)
            ops.append(op)

    sources: list[int | None] = []

    def traced(x: jax.Array) -> list[Any]:
        outs = _run(closed, x, visit)
        sources.extend(made.get(id(out)) for out in outs)
        return outs

    jax.eval_shape(traced, x)
    return ops, sources


def _short(name: str | None) -> str | None:
    return None if name is None else name.strip("_") or name


def _name(index: int, op: _Op) -> str:
    name = op.primitive if op.within is None or op.within == op.primitive else f"{op.primitive} ({op.within})"
    return f"{index} {name}"


def localize(
    f: Any,
    x: Any,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    elements: Sequence[Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    name: str | None = None,
    devices: Sequence[Any] | None = None,
) -> Report:
    """Name the first operation of ``f`` that breaks equivariance, with its source line.

    Args:
      f: any JAX-traceable callable of ``x`` (a function, a Flax NNX module, a bound Linen
        ``apply``, an Equinox module): no layer structure is needed.
      x: a batch of inputs (NHWC images for planar groups).
      group: the group acting on the input.
      in_action: the action on the input; default the group's image action. With your own
        action, only intermediates shaped like ``x`` are checked (under it).
      out_action: the action on f's output; default inferred from its shape (invariant when it
        is not spatial).
      elements, rtol, atol, devices: as in ``equivax.check``.
      name: the function's name in the report.

    Returns:
      A ``Report`` with ``by="operation"``; ``report.explain(label)`` says, for instance,
      ``"`pad` at my_model.py:42 (forward) breaks shift(0,1); everything before it is exact"``.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> def f(x):
      ...     y = jnp.tanh(x)
      ...     return y + jnp.arange(8.0)[:, None, None]  # a position-dependent bias
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
      >>> found = equivax.report(f, x, equivax.groups.translations(8, 8, shifts=[(1, 0)]), by="operation")
      >>> found.first_breaks
      {'shift(1,0)': '1 add'}
    """
    if not isinstance(group, Group):
        raise TypeError(f"group must be an equivax Group (see equivax.groups), got {type(group).__name__}")
    if not callable(f):
        raise TypeError(f"f must be a JAX-traceable callable, got {type(f).__name__}")
    x = jnp.asarray(x)
    start = time.perf_counter()
    in_action = group.image_action if in_action is None else in_action
    if in_action is None:
        raise ValueError(f"{group.name} has no natural image action; pass in_action=your_action(g, x)")
    try:
        closed, out_shape = jax.make_jaxpr(f, return_shape=True)(x)
    except Exception as err:  # any failure of the user's function: say which input
        raise ValueError(f"f fails on an input of shape {x.shape}: {type(err).__name__}: {err}") from err
    ops, sources = _plan(closed, x)
    out_leaves = jax.tree.leaves(out_shape)
    chosen, actions, outputs = _choose(ops, sources, out_leaves, x, in_action, out_action)
    picked = {(ops[i].position, ops[i].output): n for n, i in enumerate(chosen)}

    def taps(x: jax.Array) -> tuple[Any, ...]:
        found: list[Any] = [None] * len(chosen)
        count = {"next": 0}

        def visit(eqn: Any, info: Any, within: Any, values: Any, outs: list[Any], deps: Any) -> None:
            position = count["next"]
            count["next"] += 1
            for k, value in enumerate(outs):
                n = picked.get((position, k))
                if n is not None:
                    found[n] = value

        outs = _run(closed, x, visit)
        extra = [outs[k] for k, src in enumerate(sources) if src is None or src not in chosen]
        return (*found, *extra)

    results = check_outputs(
        taps, x, group, in_action, actions_lib.tree(tuple(actions)), elements=elements, rtol=rtol, atol=atol,
        devices=devices,
    )  # fmt: skip
    rows = []
    for n, (label, result) in enumerate(zip(outputs, results.values(), strict=True)):
        op = ops[chosen[n]] if n < len(chosen) else None
        shape = tuple(op.shape) if op is not None else tuple(out_leaves[n - len(chosen)].shape)
        row_name = _name(n, op) if op is not None else f"{n} output"
        via = None if op is None else _via(_feeders(ops, chosen[n], set(chosen)))
        rows.append(LayerReport(row_name, label[0], label[1], shape, label[2], result, op and op.where, via))
    candidates = sum(op.depends for op in ops)
    notes = (
        f"checked {len(chosen)} of the {candidates} operations computed from x: those whose output shape carries "
        "the input's symmetry, and f's output",
    )
    model_name = name or getattr(f, "__name__", type(f).__name__)
    labels = rows[0].result.labels
    return Report(
        model_name, group.name, tuple(x.shape), labels, tuple(rows), time.perf_counter() - start, "operation", notes
    )


def _feeders(ops: list[_Op], index: int, checked: set[int], limit: int = 3) -> list[_Op]:
    """The unchecked operations computed from x that feed op ``index`` since the last checked ones
    (a ``pad`` whose output no action describes, say), nearest first."""
    found, stack, seen = [], list(ops[index].inputs), set()
    while stack:
        j = stack.pop()
        if j in seen or j in checked or not ops[j].depends:
            continue
        seen.add(j)
        found.append(j)
        stack.extend(ops[j].inputs)
    named: dict[tuple[str, str | None], _Op] = {}
    for j in sorted(found, reverse=True):
        named.setdefault((ops[j].primitive, ops[j].where), ops[j])
    return list(named.values())[:limit]


def _via(feeders: list[_Op]) -> str | None:
    if not feeders:
        return None
    return "; ".join(f"`{op.primitive}`" + (f" at {op.where}" if op.where else "") for op in feeders)


def _choose(
    ops: list[_Op], sources: list[int | None], out_leaves: list[Any], x: jax.Array, in_action: Any, out_action: Any
) -> tuple[list[int], list[Any], list[tuple[str, int, str]]]:
    """The ops to check, the action of each checked output and its (label, stride, source)."""
    start = carried_by(in_action)
    given = _output_actions(out_action, out_leaves)
    finals = {src: k for k, src in enumerate(sources) if src is not None}
    merged = _merged_orientations(ops)
    chosen, actions, labels = [], [], []
    for i, op in enumerate(ops):
        if i in finals:
            act, label = _final(given[finals[i]], start, x, op.shape)
        elif not op.depends or not jnp.issubdtype(op.dtype, jnp.floating) or i in merged:
            continue
        elif op.pointwise and any(j in chosen and ops[j].shape == op.shape for j in op.inputs):
            continue
        else:
            act, label = _inner_action(start, in_action, x, op.shape, lambda i=i: _pooled(ops, i, tuple(x.shape)))
            if act is None:
                continue
        chosen.append(i)
        actions.append(act)
        labels.append(label)
    for k, src in enumerate(sources):  # outputs no checked op made (f returns x itself, say)
        if src is None or src not in chosen:
            act, label = _final(given[k], start, x, tuple(out_leaves[k].shape))
            actions.append(act)
            labels.append(label)
    return chosen, actions, labels


#: Primitives that pool over the spatial axes (a global pool keeps one pixel), and those that carry
#: a pooled value unchanged in meaning (kept axes, casts).
_POOLS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_window_sum reduce_window_max".split())
_CARRY = frozenset("reshape broadcast_in_dim squeeze expand_dims convert_element_type copy".split())


def _pooled(ops: list[_Op], index: int, x_shape: tuple[int, ...]) -> bool:
    """Whether a one-pixel array ``(N, 1, 1, C)`` was pooled over the spatial axes (a mean over axes
    1 and 2 with kept axes), as opposed to sliced out of an image (one row of a padded image),
    which the shifts move like any other pixels."""
    stack, seen = [index], set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        op = ops[j]
        if op.primitive in _POOLS:
            sources = [ops[k].shape for k in op.inputs if ops[k].depends] or [x_shape]  # none: it reads x
            return math.prod(sources[0]) > math.prod(op.shape)  # it reduced something
        if op.primitive in _CARRY or op.pointwise:
            stack.extend(k for k in op.inputs if ops[k].depends)
    return False


def _merged_orientations(ops: list[_Op]) -> set[int]:
    """The 4-D ops whose channels are orientations × channels of group feature maps (what a group
    convolution reshapes to and from ``(N, H, W, K, C)``): the image action does not describe
    them, and the 5-D forms next to them are checked instead."""

    def regular(i: int) -> bool:
        return len(ops[i].shape) == 5 and ops[i].shape[3] in _ORIENTATIONS

    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for j in op.inputs:
            consumers.setdefault(j, []).append(i)
    merged: set[int] = set()
    for i, op in enumerate(ops):  # reshaped from feature maps, or elementwise in such an array
        sources = [j for j in op.inputs if ops[j].depends]
        if len(op.shape) != 4 or not sources:
            continue
        if (op.primitive == "reshape" and regular(sources[0])) or (
            all(j in merged for j in sources) and all(ops[j].shape == op.shape for j in sources)
        ):
            merged.add(i)
    for i in reversed(range(len(ops))):  # reshaped into feature maps, or feeding only such arrays
        after = consumers.get(i, [])
        if len(ops[i].shape) == 4 and ops[i].depends and after:
            if all((ops[c].primitive == "reshape" and regular(c)) or c in merged for c in after):
                merged.add(i)
    return merged


def _inner_action(
    start: Carried | None, in_action: Any, x: jax.Array, shape: tuple[int, ...], pooled: Callable[[], bool]
) -> tuple[Any, Any]:
    if start is None:
        return (in_action, ("given", 1, "given")) if tuple(shape) == tuple(x.shape) else (None, None)
    found = spatial(start, tuple(x.shape), tuple(shape))
    if found is None or (found.pixel and not pooled()):  # a one-pixel shape that is a slice, not a pool
        return None, None
    return found.action(), (found.label, found.stride, "inferred")


def _final(given: Any, start: Carried | None, x: jax.Array, shape: tuple[int, ...]) -> tuple[Any, Any]:
    if given is not None:
        return given, ("given", int(getattr(given, "stride", 1)), "given")
    if start is None:
        raise ValueError("with your own in_action the action on f's output cannot be inferred: pass out_action")
    found = spatial(start, tuple(x.shape), tuple(shape)) or Carried("invariant", start.stride)
    return found.action(), (found.label, found.stride, "inferred")


def _output_actions(out_action: Any, out_leaves: list[Any]) -> list[Any]:
    if out_action is None:
        return [None] * len(out_leaves)
    if isinstance(out_action, (tuple, list, dict)):
        out_action = actions_lib.tree(out_action)
    if isinstance(out_action, actions_lib.TreeAction):
        leaves = jax.tree.leaves(out_action.treedef.unflatten(out_action.leaves))
        if len(leaves) == len(out_leaves):
            return leaves
        raise ValueError(
            f"out_action holds {len(leaves)} actions but f returns {len(out_leaves)} arrays: give one each"
        )
    return [out_action] * len(out_leaves)
