"""The public checks: ``check``, ``check_outputs`` and ``compiled_memory``.

Each validates its arguments (``equivax._arguments``), makes f a pure function of its parameters
(``equivax._traced``), finds or builds the compiled program (``equivax._cache``), runs what the
verdict needs (``equivax._measure``), decides with the pure rule in ``equivax.verdicts`` and
assembles a ``CheckResult`` per output part. ``docs/architecture.md`` draws the whole flow.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from equivax import _arguments as arguments
from equivax import actions, verdicts
from equivax._cache import enable_persistent_cache, program_for
from equivax._kernel import Kernel, batch_size
from equivax._measure import measure
from equivax._observers import notify
from equivax._program import Program
from equivax._sharding import as_devices
from equivax._statistics import batched
from equivax._traced import fingerprint, split
from equivax.groups import Group
from equivax.result import CheckResult

__all__ = ["check", "check_outputs", "compiled_memory"]


@dataclasses.dataclass
class _Prepared:
    group: Group
    program: Program
    consts: list[Any]
    args: tuple[Any, ...]
    rtol: float | None
    atol: float | None
    notes: tuple[str, ...]
    resampling_tolerance: float | None
    refresh: Any = None  # re-takes a plain callable's fingerprint once every trace of the check is done


def _prepare(f, x, group, in_action, out_action, elements, chunk_size, devices, rtol, atol, each_output) -> _Prepared:
    """Validate the arguments and find (or build) the compiled program."""
    group = arguments.as_group(group)
    chunk = arguments.as_chunk_size(chunk_size)
    rtol, atol = arguments.as_tolerance(rtol, "rtol"), arguments.as_tolerance(atol, "atol")
    x = arguments.as_input(x)
    in_action = arguments.as_action(in_action, group, "in_action")
    out_action = arguments.as_action(out_action, group, "out_action")
    actions.validate(in_action, group, x, "in_action")
    chosen = arguments.as_elements(group, elements)
    traced = split(f)
    devices = as_devices(devices)
    shards = min(len(devices), len(chosen))
    kernel = Kernel(traced.fn, in_action, out_action, chunk, each_output, shards)
    args = (traced.params, x, chosen)
    enable_persistent_cache()
    program, consts = program_for(kernel, args, devices, static=traced.key is not None, fingerprint=traced.fingerprint)
    actions.validate(out_action, group, program.out_shape[0], "out_action")
    arguments.probe_user_action(in_action, group, x, "in_action")
    tolerances = [actions.resampling_tolerance(a) for a in (in_action, out_action)]
    tolerances = [t for t in (*tolerances, group.resampling_tolerance) if t is not None]
    refresh = None if traced.key is not None else functools.partial(fingerprint, f)
    notes = (*traced.notes, *([group.note] if group.note else []))
    if program.quantised and rtol is None and atol is None:
        notes += (
            f"f casts to {', '.join(program.quantised)}: the float64 re-run computes exactly, so errors of that "
            "quantisation grid alone count as rounding; write the quantiser as a function (jnp.round(x / s) * s) "
            "to check it, or give rtol",
        )
    return _Prepared(group, program, consts, args, rtol, atol, notes, max(tolerances, default=None), refresh)


def _results(p: _Prepared) -> list[CheckResult]:
    """Run what the verdicts need, decide each output part, and assemble the results."""
    measured = measure(
        p.program,
        p.consts,
        p.args,
        tolerance=p.rtol is not None or p.atol is not None,
        resampling_tolerance=p.resampling_tolerance,
    )
    if p.refresh is not None:  # what f reads after its traces (a trace may append to a list it closes over)
        p.program.fingerprint = p.refresh()
    x, chosen = p.args[1], np.asarray(p.args[2])
    labels = tuple(p.group.labels[p.group.index(e)] for e in chosen)
    each = p.program.kernel.each_output
    shapes = jax.tree.leaves(p.program.out_shape[0]) if each else [p.program.out_shape[0]]
    results = []
    for index, (m, shape) in enumerate(zip(measured.parts, shapes, strict=True)):
        decision = verdicts.decide(m, p.rtol, p.atol)
        part = measured.stats["parts"][index]
        leaves = len(jax.tree.leaves(shape))
        unsure = {"undecided", "approximate"} & set(decision.verdicts)
        together = () if each or leaves < 2 or not unsure else (
            f"f returns {leaves} arrays, measured as one: a large or chaotic one can hide a small error in "
            "another; equivax.check_outputs decides each array on its own",
        )  # fmt: skip
        is_batched = batched(jax.tree.leaves(shape), batch_size(x))
        maps = part.get("map")
        results.append(
            CheckResult(
                group=p.group.name,
                labels=labels,
                elements=chosen,
                rel_error=decision.rel_error,
                abs_error=decision.abs_error,
                verdicts=decision.verdicts,
                reasons=decision.reasons,
                methods=decision.methods,
                rel_error64=decision.rel_error64,
                noise_floor=decision.noise_floor,
                rounding=decision.rounding,
                locations=_locations(shape, part["where"], is_batched),
                dtype=m.dtype,
                rtol=p.rtol,
                atol=p.atol,
                error_maps=None if maps is None else np.asarray(maps, dtype=np.float64),
                devices=p.program.devices,
                chunk_size=p.program.chunk_size,
                notes=(*p.notes, *decision.notes, *together),
                uninformative=decision.uninformative,
            )
        )
    return results


def _locations(y_shape: Any, flat_indices: np.ndarray, is_batched: bool) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Turn indices into the (examples, values) matrix of the output into (leaf, index) pairs."""
    paths = jax.tree_util.tree_flatten_with_path(y_shape)[0]
    n = paths[0][1].shape[0] if is_batched else 1
    widths = np.asarray([int(np.prod(leaf.shape)) // n for _, leaf in paths])
    rows, cols = np.divmod(np.asarray(flat_indices, dtype=np.int64), max(int(widths.sum()), 1))
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    leaf_of = np.searchsorted(starts, cols, side="right") - 1
    found: list[tuple[str, tuple[int, ...]]] = []
    for row, col, k in zip(rows.tolist(), cols.tolist(), leaf_of.tolist(), strict=True):
        path, leaf = paths[k]
        shape = leaf.shape[1:] if is_batched else leaf.shape
        inner = tuple(int(i) for i in np.unravel_index(col - starts[k], shape)) if shape else ()
        found.append((jax.tree_util.keystr(path) or "output", (row, *inner) if is_batched else inner))
    return tuple(found)


def check(
    f: Any,
    x: Any,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    elements: Sequence[Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
) -> CheckResult:
    """Check ``f(ρ_in(g) x) = ρ_out(g) f(x)`` for every requested element ``g`` of ``group``.

    Args:
      f: any JAX-traceable callable of ``x``; a Flax NNX module (its state is an argument of the
        compiled check, so an updated module re-uses it; a module in training mode is checked
        as a copy in eval mode, with a note); or a callable pytree such as an Equinox module or
        ``jax.tree_util.Partial(apply_fn, params)`` (its arrays are the parameters). A plain
        callable is traced on every call, so the values it closes over are always current; the
        compiled program is re-used whenever the trace is the same.
      x: a batch of inputs, NHWC images for the built-in planar groups; or a pytree of arrays
        (point positions and features, adjacency and node features), each with the batch axis
        first, with a matching pytree of ``in_action``s.
      group: the group (see ``equivax.groups``).
      in_action, out_action: ``act(g, x) -> x``; default the group's image action. Use
        ``actions.trivial()`` as ``out_action`` for invariance, ``actions.regular(group)`` for
        group feature maps, ``actions.strided(s)`` after a stride-``s`` layer, or a pytree of
        actions for a pytree output.
      elements: check only these elements (a list of element arrays); default every
        non-identity element.
      rtol, atol: explicit tolerances (finite, non-negative). Given either, elements within it
        pass (``"approximate"`` above the rounding bound) and no float64 re-run is made.
      chunk_size: evaluate this many elements at a time (bounds memory). The default evaluates all
        at once, except on CPU when the largest intermediate array would exceed
        ``CPU_CHUNK_BYTES``: then it picks chunks that stay under it, which is faster there.
        With several devices the chunks are taken on each device from its own part.
      devices: the devices to split the elements over (default ``jax.devices()``, all devices of
        the default backend). The element axis is sharded with ``jax.sharding`` (a one-axis
        ``Mesh``, ``NamedSharding``) and XLA partitions the one program; x and the parameters are
        replicated. Pass ``jax.devices()[:1]`` to stay on one device. Results do not depend on it.

    Returns:
      A ``CheckResult`` with per-element errors and verdicts.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
      >>> blur = lambda x: (x + jnp.roll(x, 1, axis=1) + jnp.roll(x, 1, axis=2)) / 3
      >>> equivax.check(blur, x, equivax.groups.translations(8, 8)).ok
      True
    """
    prepared = _prepare(f, x, group, in_action, out_action, elements, chunk_size, devices, rtol, atol, False)
    result = _results(prepared)[0]
    notify(f, result)
    return result


def check_outputs(
    f: Any,
    x: Any,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    elements: Sequence[Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
) -> dict[str, CheckResult]:
    """Like ``check``, with one result for each leaf of ``f``'s pytree output.

    Every leaf gets its own errors, rounding measurement, floor and verdicts, and an error map
    (``CheckResult.error_maps``) for outputs with spatial axes; still one compiled program and
    at most one re-run in another precision. A report uses this to check every intermediate
    output of a network at once: ``f`` returns all of them, ``out_action`` holds one action each.

    Returns:
      ``{leaf path: CheckResult}`` in the order of ``jax.tree.leaves(f(x))``; the path is
      ``jax.tree_util.keystr`` of the leaf (``"[0]"``, ``"['logits']"``), or ``"output"`` for a
      single array.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
      >>> f = lambda x: (jnp.roll(x, 1, axis=1), x * jnp.arange(8.0)[:, None])
      >>> results = equivax.check_outputs(f, x, equivax.groups.translations(8, 8))
      >>> {path: r.ok for path, r in results.items()}
      {'[0]': True, '[1]': False}
    """
    prepared = _prepare(f, x, group, in_action, out_action, elements, chunk_size, devices, rtol, atol, True)
    paths = jax.tree_util.tree_flatten_with_path(prepared.program.out_shape[0])[0]
    results = {
        jax.tree_util.keystr(path) or "output": result
        for (path, _), result in zip(paths, _results(prepared), strict=True)
    }
    for result in results.values():
        notify(f, result)
    return results


def compiled_memory(
    f: Any,
    x: Any,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    elements: Sequence[Any] | None = None,
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
) -> int:
    """Bytes of temporary buffers XLA reserves, per device, for the program ``check`` would run.

    Read from the compiled program's memory analysis without running it: use it to choose
    ``chunk_size`` before a large check. With chunks it grows with the chunk, not with the number
    of elements (``benchmarks/scale.py`` measures it). The float64 re-run needs about twice this.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> x = jnp.zeros((1, 16, 16, 4))
      >>> group = equivax.groups.translations(16, 16)
      >>> chunked = equivax.compiled_memory(jnp.tanh, x, group, chunk_size=8)
      >>> chunked < equivax.compiled_memory(jnp.tanh, x, group, chunk_size=255)
      True
    """
    prepared = _prepare(f, x, group, in_action, out_action, elements, chunk_size, devices, None, None, False)
    placed = prepared.program.flat_args(prepared.consts, prepared.args)
    analysis = prepared.program.run.lower(*placed).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes)
