"""One compiled equivariance check over every element of a group.

``check(f, x, group, in_action, out_action)`` evaluates ``f(x)`` once and ``f(ρ_in(g) x)`` for all
requested elements in one ``jax.vmap`` (or a ``lax.map`` over chunks), compares with
``ρ_out(g) f(x)`` and returns a ``CheckResult``.

How a verdict is reached without a hand-set tolerance (see ``docs/verdicts.md``):

1. The program (f, the actions and the error computation) is traced once into a jaxpr and run in
   f's own precision.
2. The same jaxpr is re-run with every floating value in float64 (``equivax.precision``), on the
   same input and parameters. Rounding error shrinks by ``eps64 / eps32 ≈ 2⁻²⁹``; structural
   error does not.
3. The distance between the float32 and float64 outputs of ``f(x)`` measures how much rounding
   this computation amplifies (``rounding``). The float64 rounding floor is
   ``SAFETY · (rounding · eps64 / eps32 + eps64)``; an element whose float64 error exceeds it is
   ``"broken"``, otherwise ``"equivariant"``.

Elements whose outputs agree bit for bit (``"exact"``) need no second run; when every element is
exact, none is made. When f runs in float64 already, the roles swap: a float32 re-run measures the rounding and f's own
float64 error is compared with the floor. Where no second precision can run, the documented
``rounding_bound`` decides and the result says ``method="bound"``. Explicit ``rtol``/``atol``
replace all of this and no second run is made.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import multihost_utils
from jax.extend import core as jex
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from equivax import actions as actions_lib
from equivax import continuous
from equivax._observers import notify
from equivax.groups import Group
from equivax.precision import RetypeError, retype_value, retyped
from equivax.result import CheckResult

__all__ = ["CPU_CHUNK_BYTES", "SAFETY", "check", "check_outputs", "clear_cache", "compiled_memory", "rounding_bound"]

#: Margin between the predicted float64 rounding and the floor (2¹⁰). Rounding and structure sit
#: about 2²⁹ apart after the re-run, so the margin costs nothing in sensitivity.
SAFETY = 2.0**10

#: Structural errors below this many float32 ulps are what rounding the parameters or the group
#: elements to float32 produces (a filter symmetrised in float32 is symmetric to 1 ulp): they are
#: called "approximate", not "broken".
RESOLUTION_ULPS = 1

#: Above this measured float32 rounding, float32 has lost most digits and no longer tells how much
#: the program amplifies rounding; float64's own sensitivity is then measured directly.
SATURATED_ROUNDING = 1e-3


_EPS64 = float(np.finfo(np.float64).eps)
_EPS32 = float(np.finfo(np.float32).eps)


def rounding_bound(dtype: Any, size: int) -> float:
    """The documented fallback bound on relative rounding error: ``64 · eps(dtype) · √size``.

    ``size`` is the number of input values per example, a proxy for the length of the longest
    reduction. Used only when no second precision can run; it is a heuristic, not a guarantee:
    deep or ill-conditioned networks can exceed it.
    """
    return 64.0 * float(jnp.finfo(dtype).eps) * math.sqrt(max(int(size), 1))


# ------------------------------------------------------------------------------------------------
# What gets traced: f (plain callable or NNX module) and the per-element error statistics.
# ------------------------------------------------------------------------------------------------


def _stable_hash(obj: Any) -> int:
    """Hash for cache keys; objects that cannot be hashed (a dataclass holding arrays) go by
    identity. The cache entry keeps them alive, so an identity is never reused while cached."""
    try:
        return hash(obj)
    except TypeError:
        return id(obj)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        hash(a), hash(b)
    except TypeError:
        return False
    return bool(a == b)


@dataclasses.dataclass(frozen=True, eq=False)
class _Plain:
    fn: Callable[[Any], Any]

    def __hash__(self) -> int:
        return _stable_hash(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Plain) and _same(self.fn, other.fn)

    def __call__(self, params: Any, x: jax.Array) -> Any:
        return self.fn(x)


@dataclasses.dataclass(frozen=True)
class _Module:
    graphdef: Any

    def __call__(self, params: Any, x: jax.Array) -> Any:
        from flax import nnx

        # Re-bind the state at the current trace level (inside vmap or lax.map), so a module that
        # updates its state as it runs (batch statistics, RNG counts) may do so; updates are dropped.
        params = lax.optimization_barrier(params)
        return nnx.merge(self.graphdef, params)(x)


def _split(f: Any) -> tuple[Callable[[Any, jax.Array], Any], Any]:
    from flax import nnx

    if isinstance(f, nnx.Module):
        graphdef, state = nnx.split(f)
        return _Module(graphdef), state
    if not callable(f):
        raise TypeError(f"f must be a JAX-traceable callable or a Flax NNX module, got {type(f).__name__}")
    return _Plain(f), None


def _batched(leaves: Sequence[jax.Array], n: int) -> bool:
    return all(leaf.ndim >= 1 and leaf.shape[0] == n for leaf in leaves)


def _rows(leaves: Sequence[jax.Array], batched: bool) -> jax.Array:
    """All values as a ``(examples, values)`` matrix (one row when the output has no batch axis)."""
    if batched:
        return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)
    return jnp.concatenate([leaf.reshape(1, -1) for leaf in leaves], axis=1)


def _scaled_norm(rows: jax.Array, scale: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(rows / scale[:, None]), axis=1)) * scale


def _stats(y_g: Any, target: Any, n: int) -> dict[str, jax.Array]:
    got, want = jax.tree.leaves(y_g), jax.tree.leaves(target)
    batched = _batched(want, n)
    got, want = _rows(got, batched), _rows(want, batched)
    finite = jnp.all(jnp.isfinite(got)) & jnp.all(jnp.isfinite(want))
    got, want = jnp.where(jnp.isfinite(got), got, 0), jnp.where(jnp.isfinite(want), want, 0)
    diff = got - want
    scale = jnp.maximum(jnp.max(jnp.abs(got), axis=1), jnp.max(jnp.abs(want), axis=1))
    scale = jnp.where(scale > 0, scale, 1)
    num, den = _scaled_norm(diff, scale), _scaled_norm(want, scale)
    rel = jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.where(num > 0, jnp.inf, 0))
    flat = jnp.abs(diff).reshape(-1)
    return {
        "rel": jnp.max(rel),
        "abs": jnp.max(flat),
        "where": jnp.argmax(flat).astype(jnp.int32),
        "finite": finite,
    }


def _error_map(got: jax.Array, want: jax.Array, batched: bool) -> jax.Array | None:
    """Largest ``|f(g·x) − g·f(x)|`` at each position of a spatial output, over examples and
    channels: a ``(H, W)`` map (``None`` for outputs without two spatial axes)."""
    spatial = got.ndim - (1 if batched else 0)
    if spatial < 2:
        return None
    diff = jnp.abs(jnp.where(jnp.isfinite(got - want), got - want, 0))
    if not batched:
        diff = diff[None]
    return jnp.max(diff, axis=(0, *range(3, diff.ndim)))


def _leaf_actions(out_action: Any, y: Any) -> list[Any]:
    """The action that applies to each leaf of ``y``."""
    n = len(jax.tree.leaves(y))
    if not isinstance(out_action, actions_lib.TreeAction):
        return [out_action] * n
    parts = out_action.treedef.flatten_up_to(y)
    return [act for act, part in zip(out_action.leaves, parts, strict=True) for _ in jax.tree.leaves(part)]


def _apply(action: Any, g: jax.Array, y: Any) -> Any:
    """``action(g, y)``; a built-in array action given a pytree output acts on each leaf."""
    if isinstance(action, _ARRAY_ACTIONS) and not isinstance(y, jax.Array):
        return jax.tree.map(lambda leaf: action(g, leaf), y)
    return action(g, y)


def _same_layout(expected: Any, got: Any, what: str, fix: str) -> None:
    want_def, got_def = jax.tree.structure(expected), jax.tree.structure(got)
    if want_def != got_def:
        raise ValueError(f"{what} returned a pytree {got_def}, but {fix} {want_def}")
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        if a.shape != b.shape:
            raise ValueError(f"{what} returned shape {b.shape}, but {fix} shape {a.shape}")
        if a.dtype != b.dtype:
            raise TypeError(f"{what} returned dtype {b.dtype}, but {fix} dtype {a.dtype}")


@dataclasses.dataclass(frozen=True, eq=False)
class _Kernel:
    """f(x) once, then statistics of f(g·x) − g·f(x) for each element (the traced program)."""

    fn: Callable[[Any, jax.Array], Any]
    in_action: Any
    out_action: Any
    chunk_size: int | None
    each_output: bool = False  # statistics (and error maps) per leaf of f's output
    shards: int = 1  # the element axis is split into this many equal parts, one per device

    def _parts(self) -> tuple[Any, ...]:
        return (self.fn, self.in_action, self.out_action, self.chunk_size, self.each_output, self.shards)

    def __hash__(self) -> int:
        return hash(tuple(_stable_hash(part) for part in self._parts()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Kernel) and all(
            _same(a, b) for a, b in zip(self._parts(), other._parts(), strict=True)
        )

    def __call__(self, params: Any, x: jax.Array, elements: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        y = self.fn(params, x)
        for leaf in jax.tree.leaves(y):
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                raise TypeError(
                    f"f returned dtype {leaf.dtype}; an equivariance error needs floating outputs: "
                    "return the scores, not e.g. an argmax"
                )

        def one(g: jax.Array) -> dict[str, jax.Array]:
            gx = self.in_action(g, x)
            _same_layout(x, gx, "in_action(g, x)", "x has")
            target = _apply(self.out_action, g, y)
            _same_layout(y, target, "out_action(g, f(x))", "f(x) has")
            y_g = self.fn(params, gx)
            in_defined = actions_lib.is_defined(self.in_action, g)
            if not self.each_output:
                stats = _stats(y_g, target, x.shape[0])
                stats["defined"] = in_defined & actions_lib.is_defined(self.out_action, g)
                return stats
            got, want = jax.tree.leaves(y_g), jax.tree.leaves(target)
            each = [_stats(a, b, x.shape[0]) for a, b in zip(got, want, strict=True)]
            stats = {key: jnp.stack([part[key] for part in each]) for key in each[0]}
            defined = [actions_lib.is_defined(act, g) for act in _leaf_actions(self.out_action, y)]
            stats["defined"] = in_defined & jnp.stack(defined)
            stats["maps"] = tuple(_error_map(a, b, _batched([b], x.shape[0])) for a, b in zip(got, want, strict=True))
            return stats

        def run(part: jax.Array) -> dict[str, jax.Array]:
            if self.chunk_size is None:
                return jax.vmap(one)(part)
            return lax.map(one, part, batch_size=self.chunk_size)

        if self.shards == 1:
            stats = run(elements)
        else:  # one part per device: the partitioner splits the outer axis, each device maps its part
            parts = elements.reshape(self.shards, -1, *elements.shape[1:])
            stats = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), jax.vmap(run)(parts))
        stats["x_finite"] = jnp.all(jnp.isfinite(x))
        y_finite = jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(y)])
        stats["y_finite"] = y_finite if self.each_output else jnp.all(y_finite)
        return y, stats


# ------------------------------------------------------------------------------------------------
# Compiled programs, cached like jax.jit: once per (f, actions, chunk size, shapes and dtypes).
# ------------------------------------------------------------------------------------------------

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _flax_trace_error() -> type[Exception]:
    from flax import errors

    return errors.TraceContextError


#: Statistics with one entry per element (the others describe x and f(x)).
_PER_ELEMENT = ("rel", "abs", "where", "finite", "defined", "maps")


class _Program:
    """A traced kernel, its compiled run in f's precision and (lazily) in the other precision.

    With ``kernel.shards > 1`` the elements are padded to a multiple of the number of devices and
    placed one part per device (``NamedSharding`` over a one-axis ``Mesh``), everything else
    replicated; XLA's SPMD partitioner splits the program accordingly. Both runs return
    ``(y, statistics)`` with the statistics on the host, padding removed.
    """

    def __init__(self, kernel: _Kernel, args: tuple[Any, ...], devices: Sequence[Any] = ()):
        self.keep = len(args[2])
        self.shards = kernel.shards
        self.devices = 1
        if self.shards > 1:
            mesh = Mesh(np.asarray(devices[: self.shards]), ("elements",))
            self._split = NamedSharding(mesh, PartitionSpec("elements"))
            self._whole = NamedSharding(mesh, PartitionSpec())
        try:
            self.closed, self.out_shape = jax.make_jaxpr(kernel, return_shape=True)(*self._padded(args))
        except _flax_trace_error() as err:
            raise TypeError(
                "f updates a Flax module it closes over (batch statistics in training mode, say), which "
                "cannot happen inside the check's trace: pass the module itself to check (its updates "
                "are then made on a copy and dropped), or call module.eval() first"
            ) from err
        except _TRACER_ERRORS as err:
            raise TypeError(
                f"f is not traceable by JAX ({type(err).__name__}): it turns a traced array into a "
                "Python or NumPy value. Write f with jax.numpy and lax (jnp.where or lax.cond for "
                "branches on values, no np.asarray on inputs)."
            ) from err
        self.chunk_size = kernel.chunk_size
        self.out_tree = jax.tree.structure(self.out_shape)
        self.run = jax.jit(jex.jaxpr_as_fun(self.closed))
        self._other: dict[str, Callable[..., Any]] = {}

    def _padded(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        params, x, elements = args
        extra = -len(elements) % self.shards
        if extra:
            elements = np.concatenate([elements, np.repeat(np.asarray(elements)[:1], extra, axis=0)])
        return params, x, elements

    def _placed(self, leaves: list[Any]) -> list[Any]:
        """Elements (the last argument) split over the devices, the rest on every device."""
        if self.shards == 1:
            return leaves
        *rest, elements = leaves
        return [*jax.device_put(rest, self._whole), jax.device_put(elements, self._split)]

    def _finish(self, out: Any) -> tuple[Any, dict[str, Any]]:
        y, stats = jax.tree.unflatten(self.out_tree, out)
        sharding = stats["rel"].sharding  # partitioned, not copied: how many devices computed a part
        self.devices = 1 if sharding.is_fully_replicated else len(sharding.device_set)
        if jax.process_count() > 1:  # several hosts: every process gathers every host's part
            stats = multihost_utils.process_allgather(stats, tiled=True)
        stats = jax.device_get(stats)  # one transfer for all the statistics
        if self.shards > 1:
            stats = {k: jax.tree.map(lambda a: a[: self.keep], v) if k in _PER_ELEMENT else v for k, v in stats.items()}
        return y, stats

    def __call__(self, *args: Any) -> tuple[Any, dict[str, Any]]:
        return self._finish(self.run(*self._placed(jax.tree.leaves(self._padded(args)))))

    def run_in(self, float_dtype: Any, *args: Any) -> tuple[Any, dict[str, Any]]:
        """Run the same program with every floating value cast to ``float_dtype``."""
        key = np.dtype(float_dtype).name
        if key not in self._other:
            self._other[key] = jax.jit(retyped(self.closed, float_dtype))
        leaves = [
            _host_retype(a, float_dtype, aval.dtype)
            for a, aval in zip(jax.tree.leaves(self._padded(args)), self.closed.in_avals, strict=True)
        ]
        return self._finish(self._other[key](*self._placed(leaves)))

    @functools.cached_property
    def coarsest_eps(self) -> float:
        """Machine epsilon of the lowest floating precision anywhere in the program."""
        return max((float(jnp.finfo(d).eps) for d in _float_dtypes(self.closed.jaxpr)), default=_EPS64)


def _host_retype(value: Any, float_dtype: Any, traced_dtype: Any) -> Any:
    """Cast a concrete floating array on the host (no per-shape compilation of a convert op); give
    integers the dtype they were traced with; leave PRNG keys and other extended dtypes alone."""
    if jnp.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.extended):
        return value
    value = np.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.inexact):
        return retype_value(value, float_dtype)
    return value.astype(traced_dtype)


def _float_dtypes(jaxpr: Any) -> set[np.dtype]:
    found = set()
    for var in [*jaxpr.invars, *jaxpr.constvars, *(v for eqn in jaxpr.eqns for v in eqn.outvars)]:
        dtype = getattr(var.aval, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.inexact) and not jnp.issubdtype(dtype, jax.dtypes.extended):
            found.add(np.dtype(jnp.finfo(dtype).dtype))
    for eqn in jaxpr.eqns:
        for inner in jex.jaxprs_in_params(eqn.params):
            found |= _float_dtypes(inner)
    return found


_CACHE: collections.OrderedDict[Any, _Program] = collections.OrderedDict()
_CACHE_SIZE = 64


def _signature(tree: Any) -> tuple[Any, ...]:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((tuple(np.shape(a)), str(jnp.result_type(a))) for a in leaves))


#: On CPU, evaluating every element at once is slower than chunks once the largest intermediate
#: array outgrows the caches (measured in benchmarks/check_vs_forward.py: 2x at 1 MB per element).
CPU_CHUNK_BYTES = 2 * 2**20


def _largest_intermediate(jaxpr: Any) -> int:
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape, dtype = getattr(var.aval, "shape", ()), getattr(var.aval, "dtype", None)
            if dtype is not None and hasattr(dtype, "itemsize"):
                largest = max(largest, int(np.prod(shape)) * dtype.itemsize)
        for inner in jex.jaxprs_in_params(eqn.params):
            largest = max(largest, _largest_intermediate(inner))
    return largest


def _auto_chunk(program: _Program, n_elements: int) -> int | None:
    """Chunk size for the default ``chunk_size=None``: all at once, except on a CPU whose caches
    the per-element intermediates would overflow. ``n_elements`` counts those on one device."""
    if jax.default_backend() != "cpu" or n_elements < 2:
        return None
    per_element = _largest_intermediate(program.closed.jaxpr) / (n_elements * program.shards)
    chunk = int(CPU_CHUNK_BYTES // max(per_element, 1))
    return max(chunk, 1) if chunk < n_elements else None


def _program(kernel: _Kernel, args: tuple[Any, ...], devices: Sequence[Any]) -> _Program:
    key = (kernel, _signature(args), tuple(devices[: kernel.shards]))
    program = _CACHE.get(key)
    if program is None:
        program = _Program(kernel, args, devices)
        per_device = -(-len(args[2]) // kernel.shards)
        if kernel.chunk_size is None and (chunk := _auto_chunk(program, per_device)) is not None:
            program = _Program(dataclasses.replace(kernel, chunk_size=chunk), args, devices)
        _CACHE[key] = program
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return program


def clear_cache() -> None:
    """Forget every compiled check (the next call traces and compiles again)."""
    _CACHE.clear()


# ------------------------------------------------------------------------------------------------
# Input validation: one sentence naming the problem and the fix.
# ------------------------------------------------------------------------------------------------


def _as_input(x: Any) -> jax.Array:
    if isinstance(x, (dict, list, tuple)):
        raise TypeError(
            f"x must be one array (a batch of inputs), got a {type(x).__name__}; for a function of several "
            "inputs, check a wrapper such as lambda x: f({'image': x, ...})"
        )
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x has dtype {x.dtype}; pass floating images, e.g. x.astype(jnp.float32)")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a leading batch axis with at least one example, got shape {x.shape}")
    return x


def _as_action(action: Any, group: Group, which: str) -> Any:
    if action is None:
        if group.image_action is None:
            raise ValueError(f"{group.name} has no natural image action; pass {which}=your_action(g, x)")
        return group.image_action
    if isinstance(action, (tuple, list, dict)):
        return actions_lib.tree(action)
    if not callable(action):
        raise TypeError(f"{which} must be a callable act(g, x) or a pytree of them, got {action!r}")
    return action


_PLANAR_ACTIONS = (actions_lib.ImageAction, actions_lib.RegularAction)
#: Built-in actions on one array; given a pytree output, they act on each leaf.
_ARRAY_ACTIONS = (*_PLANAR_ACTIONS, continuous.ShiftAction, continuous.RotationAction, continuous.ScalingAction)


def _check_fits(group: Group, x: jax.Array, in_action: Any) -> None:
    if not isinstance(in_action, _PLANAR_ACTIONS):
        return
    if x.ndim < 3:
        raise ValueError(
            f"{group.name} acts on NHWC images (N, H, W, C), got shape {x.shape}; add batch and "
            "channel axes, e.g. x[None, ..., None]"
        )
    height, width = x.shape[1], x.shape[2]
    if group.has_rotations and height != width:
        raise ValueError(
            f"{group.name} rotates images by 90°, which needs square images, got {height}x{width}: "
            "crop or pad x to square"
        )
    if group.shape is not None and (height, width) != tuple(group.shape):
        h, w = group.shape
        raise ValueError(
            f"{group.name} acts on {h}x{w} images but x is {height}x{width}; build the group for "
            f"the input size, e.g. translations({height}, {width})"
        )


def _check_orientations(group: Group, action: Any, which: str) -> None:
    """A regular action indexes orientations by its own point group; the group must stay inside it."""
    if not isinstance(action, actions_lib.RegularAction) or group.point_group is None:
        return
    outside = sorted(set(group.point_group) - set(action.points))
    if outside:
        k, m = outside[0]
        raise ValueError(
            f"{which} is the regular action of {action.name} ({len(action.points)} orientations), but "
            f"{group.name} contains r{k}{'·m' if m else ''}, which has no orientation there: use "
            f"actions.regular({group.name.split('(')[0]}-group) or a group within {action.name}"
        )


def _check_out_size(group: Group, out_action: Any, y_shape: Any) -> None:
    if not isinstance(out_action, _PLANAR_ACTIONS) or group.shape is None:
        return
    leaves = jax.tree.leaves(y_shape)
    if len(leaves) != 1 or len(leaves[0].shape) < 3:
        return
    s = out_action.stride
    want = (group.shape[0] // s, group.shape[1] // s)
    got = tuple(leaves[0].shape[1:3])
    if group.shape[0] % s or group.shape[1] % s or got != want:
        raise ValueError(
            f"a stride-{s} output action on {group.shape[0]}x{group.shape[1]} inputs expects "
            f"{want[0]}x{want[1]} outputs, but f returned {got[0]}x{got[1]}: use an input size "
            f"divisible by the total stride {s}, or the action that matches f's output"
        )


def _as_elements(group: Group, elements: Any) -> np.ndarray:
    if elements is None:
        chosen = group.non_identity()
        if chosen.shape[0] == 0:
            raise ValueError(f"{group.name} has only the identity: nothing to check")
        return chosen
    rows = [np.asarray(e) for e in elements]
    if not rows:
        raise ValueError("elements is empty; pass at least one group element, or None for all")
    for row in rows:
        group.index(row)  # raises a clear error for non-members
    return np.stack(rows).astype(np.asarray(group.elements).dtype)


# ------------------------------------------------------------------------------------------------
# Verdicts
# ------------------------------------------------------------------------------------------------


def _relative_distance(a: Any, b: Any, batched: bool) -> float:
    """max over examples of ‖a − b‖ / ‖b‖, in float64 on the host."""
    rows_a = [np.asarray(leaf, dtype=np.float64) for leaf in jax.tree.leaves(a)]
    rows_b = [np.asarray(leaf, dtype=np.float64) for leaf in jax.tree.leaves(b)]
    n = rows_a[0].shape[0] if batched else 1
    da = np.concatenate([r.reshape(n, -1) for r in rows_a], axis=1)
    db = np.concatenate([r.reshape(n, -1) for r in rows_b], axis=1)
    num, den = np.linalg.norm(da - db, axis=1), np.linalg.norm(db, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num > 0, np.inf, 0.0))
    return float(np.max(rel))


@dataclasses.dataclass
class _Decision:
    verdicts: list[str]
    reasons: list[str]
    methods: list[str]
    rel64: np.ndarray
    floor: np.ndarray
    rounding: float | None = None


def _decide_by_tolerance(rel, abs_, bound, rtol, atol) -> _Decision:
    n = len(rel)
    d = _Decision(["broken"] * n, [""] * n, ["tolerance"] * n, np.full(n, np.nan), np.full(n, bound))
    for i in range(n):
        within = (rtol is not None and rel[i] <= rtol) or (atol is not None and abs_[i] <= atol)
        if not within:
            d.reasons[i] = f"error exceeds the tolerance (rtol={rtol}, atol={atol})"
        elif rel[i] <= bound:
            d.verdicts[i], d.reasons[i] = "equivariant", f"within tolerance and the rounding bound {bound:.1e}"
        else:
            d.verdicts[i], d.reasons[i] = "approximate", f"above the rounding bound {bound:.1e}, within tolerance"
    return d


def _decide_by_bound(rel, bound, why: str) -> _Decision:
    n = len(rel)
    d = _Decision(["broken"] * n, [""] * n, ["bound"] * n, np.full(n, np.nan), np.full(n, bound))
    for i in range(n):
        if rel[i] <= bound:
            d.verdicts[i] = "equivariant"
            d.reasons[i] = f"below the rounding bound {bound:.1e} ({why})"
        else:
            d.reasons[i] = f"above the rounding bound {bound:.1e} ({why})"
    return d


def _decide_by_precision(rel_hi, rounding, eps_lo, eps_user, sensitivity=0.0) -> _Decision:
    """Compare float64 errors with the floor predicted from the measured rounding.

    ``sensitivity`` is the measured float64 response to an ``eps64`` perturbation of x, used when
    float32 rounding has saturated and no longer tells how much the program amplifies.
    """
    n = len(rel_hi)
    predicted = max(rounding * _EPS64 / eps_lo, sensitivity)
    floor = SAFETY * (predicted + _EPS64)
    resolution = RESOLUTION_ULPS * eps_user
    d = _Decision(["broken"] * n, [""] * n, ["float64"] * n, np.array(rel_hi, dtype=float), np.full(n, floor), rounding)
    for i in range(n):
        if rel_hi[i] <= floor:
            d.verdicts[i] = "equivariant"
            d.reasons[i] = f"rounding: float64 error {rel_hi[i]:.1e} is below the float64 floor {floor:.1e}"
        elif rel_hi[i] <= resolution:
            d.verdicts[i] = "approximate"
            d.reasons[i] = (
                f"structural but below {RESOLUTION_ULPS} ulps of f's precision ({rel_hi[i]:.1e}): the size of "
                "parameters or group elements rounded to that precision; exact only with more digits"
            )
        else:
            d.reasons[i] = f"structural: float64 error {rel_hi[i]:.1e} stays above the float64 floor {floor:.1e}"
    return d


def _decide_by_second_precision(program: _Program, args, y, stats) -> _Decision | str:
    """Re-run in the other precision; return the decision, or why that was not possible.

    A program with any computation below float64 is re-run entirely in float64 (the high run); a
    program that is float64 throughout is re-run in float32 (the low run) to measure its rounding.
    """
    x = args[1]
    all64 = program.coarsest_eps <= _EPS64
    other = jnp.float32 if all64 else jnp.float64
    try:
        with jax.enable_x64(True):
            y_other, stats_other = program.run_in(other, *args)
            y_other = jax.tree.map(np.asarray, y_other)
            rel_other = np.asarray(stats_other["rel"], dtype=np.float64)
    except RetypeError as err:
        return f"no float64 re-run: {err}"
    except Exception as err:  # noqa: BLE001 - a backend without float64, a compile failure
        return f"the float64 re-run failed ({type(err).__name__}: {err})"
    batched = _batched(jax.tree.leaves(y), x.shape[0])
    if all64:
        rounding = _relative_distance(y_other, y, batched)
        rel_hi, eps_lo, y_hi = np.asarray(stats["rel"], np.float64), _EPS32, y
    else:
        rounding = _relative_distance(y, y_other, batched)
        rel_hi, eps_lo, y_hi = rel_other, program.coarsest_eps, y_other
    if not np.isfinite(rounding):
        return "f(x) is not finite in both precisions"
    sensitivity = 0.0
    if rounding > SATURATED_ROUNDING:
        sensitivity = _float64_sensitivity(program, args, y_hi, batched)
    decision = _decide_by_precision(rel_hi, rounding, eps_lo, program.coarsest_eps, sensitivity)
    bound = rounding_bound(x.dtype, int(np.prod(x.shape[1:])))
    fallback = _decide_by_bound(np.asarray(stats["rel"], np.float64), bound, "the other precision was not finite")
    for i in np.flatnonzero(np.asarray(stats["finite"]) & ~np.asarray(stats_other["finite"])):
        decision.verdicts[i], decision.reasons[i] = fallback.verdicts[i], fallback.reasons[i]
        decision.methods[i], decision.floor[i] = "bound", bound
    return decision


def _float64_sensitivity(program: _Program, args, y_hi, batched: bool) -> float:
    """Relative change of the float64 f(x) when x moves by a few float64 ulps: how much the
    program amplifies float64 rounding, measured directly."""
    params, x, elements = args
    noise = np.random.default_rng(0).choice([-1.0, 1.0], size=x.shape)
    nudged = np.asarray(x, np.float64) * (1 + 4 * _EPS64 * noise)
    with jax.enable_x64(True):
        y_nudged, _ = program.run_in(jnp.float64, params, nudged, elements)
        y_nudged = jax.tree.map(np.asarray, y_nudged)
    return _relative_distance(y_nudged, y_hi, batched)


# ------------------------------------------------------------------------------------------------
# The check
# ------------------------------------------------------------------------------------------------


def _locations(y_shape: Any, flat_indices: np.ndarray, batched: bool) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Turn indices into the (examples, values) matrix of the output into (leaf, index) pairs."""
    paths = jax.tree_util.tree_flatten_with_path(y_shape)[0]
    n = paths[0][1].shape[0] if batched else 1
    widths = np.asarray([int(np.prod(leaf.shape)) // n for _, leaf in paths])
    rows, cols = np.divmod(np.asarray(flat_indices, dtype=np.int64), int(widths.sum()))
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    leaf_of = np.searchsorted(starts, cols, side="right") - 1
    found: list[tuple[str, tuple[int, ...]]] = []
    for row, col, k in zip(rows.tolist(), cols.tolist(), leaf_of.tolist(), strict=True):
        path, leaf = paths[k]
        shape = leaf.shape[1:] if batched else leaf.shape
        inner = tuple(int(i) for i in np.unravel_index(col - starts[k], shape)) if shape else ()
        found.append((jax.tree_util.keystr(path) or "output", (row, *inner) if batched else inner))
    return tuple(found)


def _allow_resampling(decision: _Decision, rel: np.ndarray, group: Group) -> None:
    """Interpolated actions are not exact group actions on a grid: structure within the family's
    resampling tolerance is "approximate", not "broken"."""
    tol = group.resampling_tolerance
    for i in range(len(rel)):
        if decision.verdicts[i] == "broken" and rel[i] <= tol:
            decision.verdicts[i] = "approximate"
            decision.reasons[i] = (
                f"structural error {rel[i]:.1e} within {group.name}'s resampling tolerance {tol:.1e} "
                "(interpolation is not an exact group action on a pixel grid)"
            )


class _LeafView:
    """One output leaf of a program checked output by output, seen by the verdict functions as a
    program of its own. Re-runs in another precision are shared by all leaves through ``memo``."""

    def __init__(self, program: _Program, leaf: int, memo: dict[Any, Any]):
        self.program, self.leaf, self.memo = program, leaf, memo
        self.coarsest_eps = program.coarsest_eps
        self.devices = program.devices

    def run_in(self, float_dtype: Any, *args: Any) -> Any:
        x = np.ascontiguousarray(np.asarray(args[1]))
        key = (np.dtype(float_dtype).name, x.dtype.name, hashlib.blake2b(x.tobytes()).hexdigest())
        if key not in self.memo:
            self.memo[key] = jax.tree.map(np.asarray, self.program.run_in(float_dtype, *args))
        return _leaf_of(*self.memo[key], self.leaf)


_PER_LEAF = ("rel", "abs", "where", "finite", "defined")


def _leaf_of(y: Any, stats: dict[str, Any], leaf: int) -> tuple[Any, dict[str, Any]]:
    """Output leaf ``leaf`` and its statistics, from a program checked output by output."""
    part = {key: np.asarray(stats[key])[:, leaf] for key in _PER_LEAF}
    part["x_finite"] = stats["x_finite"]
    part["y_finite"] = np.asarray(stats["y_finite"])[leaf]
    part["maps"] = stats["maps"][leaf]
    return jax.tree.leaves(y)[leaf], part


def _decide(group: Group, program: _Program, args, y, stats, rel, abs_, rtol, atol) -> _Decision:
    """Verdicts for every element: exact, outside the stride, non-finite, or by the chosen method.

    Sets the errors of elements outside a stride's subgroup to NaN (they have no defined error).
    """
    x = args[1]
    bound = rounding_bound(x.dtype, int(np.prod(x.shape[1:])))
    y_finite = bool(stats["y_finite"])
    measurable = stats["defined"] & stats["finite"] & y_finite
    exact = measurable & (abs_ == 0)
    if rtol is not None or atol is not None:
        decision = _decide_by_tolerance(rel, abs_, bound, rtol, atol)
    elif np.any(measurable & ~exact):
        decision = _decide_by_second_precision(program, args, y, stats)
        if isinstance(decision, str):
            decision = _decide_by_bound(rel, bound, decision)
    else:  # nothing for a second precision to explain: skip the re-run
        decision = _decide_by_bound(rel, bound, "no rounding to explain")
    if group.resampling_tolerance is not None and rtol is None and atol is None:
        _allow_resampling(decision, rel, group)

    for i in range(len(rel)):
        if exact[i]:
            decision.verdicts[i], decision.methods[i] = "equivariant", "exact"
            decision.reasons[i] = "f(g·x) equals g·f(x) bit for bit"
            decision.floor[i] = decision.rel64[i] = np.nan
        elif not stats["defined"][i]:
            decision.verdicts[i], decision.methods[i] = "broken", "stride"
            decision.reasons[i] = actions_lib.OUTSIDE_STRIDE
            rel[i] = abs_[i] = decision.rel64[i] = decision.floor[i] = np.nan
        elif not (y_finite and stats["finite"][i]):
            decision.verdicts[i], decision.methods[i] = "nonfinite", "nonfinite"
            decision.reasons[i] = "f(x) has NaN or inf" if not y_finite else "f(g·x) has NaN or inf"

    return decision


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
      f: any JAX-traceable callable of ``x``, or a Flax NNX module. Pass the same callable object
        each time to reuse the compiled check (like ``jax.jit``, closed-over arrays are read when
        it is first traced).
      x: a batch of inputs, NHWC images for the built-in planar groups.
      group: the group (see ``equivax.groups``).
      in_action, out_action: ``act(g, x) -> x``; default the group's image action. Use
        ``actions.trivial()`` as ``out_action`` for invariance, ``actions.regular(group)`` for
        group feature maps, ``actions.strided(s)`` after a stride-``s`` layer, or a pytree of
        actions for a pytree output.
      elements: check only these elements (a list of element arrays); default every
        non-identity element.
      rtol, atol: explicit tolerances. Given either, elements within it pass (``"approximate"``
        above the rounding bound) and no float64 re-run is made.
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
    program, args, y, stats = _run(f, x, group, in_action, out_action, elements, chunk_size, devices, each_output=False)
    result = _result(group, program, args, y, stats, program.out_shape[0], rtol, atol)
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
    program, args, y, stats = _run(f, x, group, in_action, out_action, elements, chunk_size, devices, each_output=True)
    memo: dict[Any, Any] = {}
    shapes = jax.tree_util.tree_flatten_with_path(program.out_shape[0])[0]
    results = {}
    for leaf, (path, shape) in enumerate(shapes):
        y_leaf, stats_leaf = _leaf_of(y, stats, leaf)
        view = _LeafView(program, leaf, memo)
        results[jax.tree_util.keystr(path) or "output"] = _result(
            group, view, args, y_leaf, stats_leaf, shape, rtol, atol
        )
    return results


def _as_devices(devices: Sequence[Any] | None) -> list[Any]:
    if devices is None:
        return jax.devices()
    found = list(devices)
    if not found or not all(isinstance(d, jax.Device) for d in found):
        raise TypeError(f"devices must be a non-empty list of jax.Device (e.g. jax.devices()[:2]), got {devices!r}")
    return found


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
    program, args = _prepare(f, x, group, in_action, out_action, elements, chunk_size, devices, each_output=False)
    placed = program._placed(jax.tree.leaves(program._padded(args)))
    analysis = program.run.lower(*placed).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes)


def _run(f, x, group, in_action, out_action, elements, chunk_size, devices, *, each_output: bool):
    """Validate the arguments, run the compiled program, and fetch its statistics."""
    program, args = _prepare(f, x, group, in_action, out_action, elements, chunk_size, devices, each_output=each_output)
    y, stats = program(*args)
    if not stats["x_finite"]:
        raise ValueError("x contains NaN or inf; check equivariance on finite inputs")
    return program, args, y, stats


def _prepare(f, x, group, in_action, out_action, elements, chunk_size, devices, *, each_output: bool):
    """Validate the arguments and build (or find) the compiled program."""
    if not isinstance(group, Group):
        raise TypeError(f"group must be an equivax Group (see equivax.groups), got {type(group).__name__}")
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    x = _as_input(x)
    in_action = _as_action(in_action, group, "in_action")
    out_action = _as_action(out_action, group, "out_action")
    _check_fits(group, x, in_action)
    _check_orientations(group, in_action, "in_action")
    _check_orientations(group, out_action, "out_action")
    chosen = _as_elements(group, elements)
    fn, params = _split(f)
    devices = _as_devices(devices)
    shards = min(len(devices), len(chosen))
    chunk = None if chunk_size is None else int(chunk_size)
    kernel = _Kernel(fn, in_action, out_action, chunk, each_output, shards)
    args = (params, x, chosen)
    program = _program(kernel, args, devices)
    _check_out_size(group, out_action, program.out_shape[0])
    return program, args


def _result(group: Group, program, args, y, stats, y_shape, rtol, atol) -> CheckResult:
    """Verdicts for every element, assembled into a result."""
    x, chosen = args[1], args[2]
    rel, abs_ = stats["rel"].astype(np.float64), stats["abs"].astype(np.float64)
    decision = _decide(group, program, args, y, stats, rel, abs_, rtol, atol)
    batched = _batched(jax.tree.leaves(y), x.shape[0])
    labels = tuple(group.labels[group.index(e)] for e in np.asarray(chosen))
    maps = stats.get("maps")
    return CheckResult(
        group=group.name,
        labels=labels,
        elements=np.asarray(chosen),
        rel_error=rel,
        abs_error=abs_,
        verdicts=tuple(decision.verdicts),
        reasons=tuple(decision.reasons),
        methods=tuple(decision.methods),
        rel_error64=np.asarray(decision.rel64, dtype=np.float64),
        noise_floor=np.asarray(decision.floor, dtype=np.float64),
        rounding=decision.rounding,
        locations=_locations(y_shape, stats["where"], batched),
        dtype=str(x.dtype),
        rtol=rtol,
        atol=atol,
        error_maps=None if maps is None else np.asarray(maps, dtype=np.float64),
        devices=program.devices,
    )
