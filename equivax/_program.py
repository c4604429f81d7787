"""A traced kernel compiled once, run in f's precision and, on demand, in another precision.

The kernel is traced into a jaxpr whose closed-over arrays are hoisted into arguments, so the
compiled program is shared by every call that traces to the same program, whatever the values
it closes over (``equivax._cache`` keys it). The re-run in another precision evaluates the same
jaxpr with every floating value cast (``equivax.precision``), optionally on a subset of the
elements and with the stored constants perturbed at their own precision.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

from equivax._kernel import TRACER_ERRORS, Kernel, unpacked
from equivax._sharding import Placement
from equivax._xla import FULL_COMPILE, Tiered, work_bytes
from equivax.precision import RetypeError, retype_value, retyped

__all__ = ["Program", "block_until_compiled", "other_precision", "trace", "trace_alone"]


def _flax_trace_error() -> type[Exception]:
    from flax import errors

    return errors.TraceContextError


def trace(kernel: Kernel, args: tuple[Any, ...]) -> tuple[Any, Any]:
    """``(closed jaxpr, output shapes)`` of the kernel; one-line errors for untraceable ``f``."""
    try:
        # A fresh function each time: JAX's own trace cache would hand back the first trace of an
        # equal kernel, with the values a closure held then.
        return jax.make_jaxpr(lambda *a: kernel(*a), return_shape=True)(*args)
    except _flax_trace_error() as err:
        raise TypeError(
            "f updates a Flax module it closes over (batch statistics in training mode, say), which "
            "cannot happen inside the check's trace: pass the module itself to check (its updates "
            "are then made on a copy and dropped), or call module.eval() first"
        ) from err
    except TRACER_ERRORS as err:
        raise TypeError(
            f"f is not traceable by JAX ({type(err).__name__}): it turns a traced array into a "
            "Python or NumPy value. Write f with jax.numpy and lax (jnp.where or lax.cond for "
            "branches on values, no np.asarray on inputs)."
        ) from err
    except (NotImplementedError, ValueError) as err:
        text = str(err)
        if "callback" in text and ("vmap" in text or "batch" in text.lower()):
            raise TypeError(
                "f calls a host callback that cannot be vmapped over group elements: give "
                "jax.pure_callback vmap_method='sequential' (or 'expand_dims'), and use io_callback with "
                "ordered=False"
            ) from err
        raise


def trace_alone(kernel: Kernel, params: Any, x: Any) -> Any:
    """The jaxpr of f alone on ``x`` (no elements, actions or statistics), or ``None`` when f does
    not trace alone (the kernel's own trace then raises the error that says why)."""
    try:
        return jax.make_jaxpr(lambda p, v: kernel.fn(p, v))(params, x).jaxpr
    except Exception:  # noqa: BLE001 - reported by the kernel's own trace
        return None


def hoisted(closed: Any) -> Any:
    """The same program with its closed-over arrays as leading arguments."""
    jaxpr = closed.jaxpr
    info = jaxpr.debug_info
    if info is not None and info.arg_names is not None:
        info = info._replace(arg_names=(*(f"const{i}" for i in range(len(jaxpr.constvars))), *info.arg_names))
    invars = [*jaxpr.constvars, *jaxpr.invars]
    return jex.ClosedJaxpr(jaxpr.replace(constvars=[], invars=invars, debug_info=info), ())


def _float_dtypes(jaxpr: Any) -> set[np.dtype]:
    found = set()
    for var in [*jaxpr.invars, *jaxpr.constvars, *(v for eqn in jaxpr.eqns for v in eqn.outvars)]:
        dtype = getattr(var.aval, "dtype", None)
        if dtype is not None and _is_float(dtype):
            found.add(np.dtype(jnp.finfo(dtype).dtype))
    for eqn in jaxpr.eqns:
        for inner in jex.jaxprs_in_params(eqn.params):
            found |= _float_dtypes(inner)
    return found


def _is_float(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact) and not jnp.issubdtype(dtype, jax.dtypes.extended)


def _spec(value: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(np.shape(value), _dtype_of(value))


def _dtype_of(value: Any) -> Any:
    dtype = getattr(value, "dtype", None)
    return np.asarray(value).dtype if dtype is None else dtype


_STEPS = frozenset({"floor", "ceil", "round", "sign", "argmax", "argmin"})


def _equations(jaxpr: Any) -> Iterator[Any]:
    """Every equation of a program, those of its nested programs included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for inner in jex.jaxprs_in_params(eqn.params):
            yield from _equations(inner)


#: Comparisons that put a threshold on a value (equality tests are NaN checks, mostly); the
#: total orders are what ``searchsorted`` compares with.
_COMPARISONS = frozenset({"lt", "le", "gt", "ge", "lt_to", "le_to", "gt_to", "ge_to"})
#: Operations whose result jumps where floating values cross: a remainder wraps (periodic
#: boundaries), a sort that carries other operands (``argsort``) or ``top_k`` picks indices.
_ORDERS = frozenset({"rem", "top_k"})
#: Code equivax cannot read, which may jump anywhere.
_OPAQUE = frozenset({"pure_callback", "io_callback", "ffi_call"})


def _is_step(eqn: Any) -> bool:
    name = eqn.primitive.name
    if name in _STEPS or name in _OPAQUE:
        return True
    floats = any(_is_float(getattr(v.aval, "dtype", np.int32)) for v in eqn.invars)
    if name in _COMPARISONS or name in _ORDERS:  # a mask, a branch, a tolerance, a wrap: f may jump
        return floats
    if name == "sort":
        return floats and len(eqn.invars) > 1
    if name != "convert_element_type" or not eqn.invars:
        return False
    source, target = eqn.invars[0].aval.dtype, eqn.params["new_dtype"]
    return (_is_float(source) and not _is_float(target)) or (source == np.bool_ and target != np.bool_)


def _narrow_cast(eqn: Any) -> str | None:
    target = eqn.params.get("new_dtype") if eqn.primitive.name == "convert_element_type" else None
    return np.dtype(target).name if target is not None and _is_float(target) and jnp.finfo(target).bits <= 8 else None


def eps(dtype: Any) -> float:
    return float(jnp.finfo(dtype).eps)


def _host_retype(value: Any, float_dtype: Any, traced_dtype: Any) -> Any:
    """Cast a concrete floating array on the host (no per-shape compilation of a convert op); give
    integers the dtype they were traced with; leave PRNG keys and other extended dtypes alone."""
    if jnp.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.extended):
        return value
    value = np.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.inexact):
        return retype_value(value, float_dtype)
    return value.astype(traced_dtype)


def perturbed(value: np.ndarray, seed: int, flip: bool = False) -> np.ndarray:
    """``value`` moved by half an ulp of its own precision, with a random sign per entry (the
    opposite signs with ``flip``: two runs that cancel each other's first-order effect)."""
    if not _is_float(_dtype_of(value)):
        return value
    value = np.asarray(value)
    sign = np.random.default_rng(seed).choice([-0.5, 0.5], size=value.shape) * (-1 if flip else 1)
    wide = np.complex128 if np.iscomplexobj(value) else np.float64
    return (value.astype(wide) * (1 + sign * eps(value.dtype))).astype(wide)


def other_precision_device() -> Any:
    """Where the re-run in another precision goes: the host CPU on a backend without fast
    float64 (TPU), or where ``EQUIVAX_SECOND_PRECISION_DEVICE`` (e.g. ``cpu``) says; ``None``:
    the devices of the first run."""
    forced = os.environ.get("EQUIVAX_SECOND_PRECISION_DEVICE")
    if forced:
        return jax.devices(forced)[0]
    if jax.default_backend() == "tpu":
        return jax.devices("cpu")[0]
    return None


def _patches_on() -> bool:
    """Whether a float64 re-run computes its widened convolutions as patches and a matrix product
    (``equivax._patches``): where it runs on CPU, unless ``EQUIVAX_CONV_PATCHES=0``."""
    if os.environ.get("EQUIVAX_CONV_PATCHES", "1").lower() in ("0", "false", "no", "off", ""):
        return False
    device = other_precision_device()
    return (device.platform if device is not None else jax.default_backend()) == "cpu"


#: How many quick compiles a float64 re-run with patch convolutions takes to compile at XLA's
#: default level (``Tiered``): measured 4.2 (0.96 s against 0.23 s for benchmarks/first_verdict.py's
#: residual network), against about 2 for other programs; its level-0 run is as fast as XLA's own
#: float64 convolution at the default level.
PATCHED_COMPILE = 4.0


#: Compilations started ahead on a background thread and not yet finished.
_PENDING: set[concurrent.futures.Future] = set()


def block_until_compiled() -> None:
    """Wait for the compilations that checks started ahead, on a background thread.

    On a machine with 4 or more cores (or with ``EQUIVAX_PARALLEL_COMPILE=1``), a check compiles
    its program in the other precision while its first run compiles and runs. When no element
    needed that program (all were bit-exact), the check returns without waiting and the
    compilation finishes behind it, ready for a later check. Call this before timing anything
    else, or to count compilations; it returns at once when nothing is compiling.
    """
    concurrent.futures.wait(list(_PENDING))


def _ahead_of_time() -> bool:
    """Whether the other precision is compiled ahead, in parallel: ``EQUIVAX_PARALLEL_COMPILE`` (1 or
    0) when set, else on machines with at least 4 cores. On 2 cores XLA's own compilation already
    keeps both busy: ahead-of-time compilation gained 10% on one first verdict and lost 38% on a
    bit-exact one, whose program in the other precision is never needed (benchmarks/README.md)."""
    flag = os.environ.get("EQUIVAX_PARALLEL_COMPILE")
    if flag is not None:
        return flag.lower() not in ("0", "false", "no", "off", "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores >= 4


@contextlib.contextmanager
def other_precision() -> Any:
    """float64 enabled (a float32 re-run of a float64 program keeps its int64 indices too), and
    JAX's standard promotion: the re-run mirrors a traced program, whose dtypes were settled when
    it was traced, whatever the caller's promotion mode. Both settings are thread-local."""
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        yield


class Program:
    """A traced kernel, its compiled run in f's precision and (lazily) in other precisions."""

    def __init__(
        self, kernel: Kernel, args: tuple[Any, ...], devices: Sequence[Any], traced: Any = None, f_alone: Any = None
    ):
        self.kernel = kernel
        self.count = len(args[2])
        self.multiple = kernel.shards * (kernel.chunk_size or 1)
        self.placement = Placement(kernel.shards, devices)
        self.devices = 1
        padded = self._padded(args)
        if traced is None or len(args[2]) != len(padded[2]):
            traced = trace(kernel, padded)
        self.closed, self.out_shape = traced
        # f alone, for ``steps``: its jaxpr when the caller traced it, else the shapes to trace it
        self._f_alone, self._f_specs = f_alone, jax.tree.map(_spec, (args[0], args[1]))
        self.text = str(self.closed.jaxpr)  # what a fresh trace is compared with
        self.fingerprint: Any = None  # of the plain callable it was last traced from (see _traced)
        self.consts = list(self.closed.consts)
        self.out_tree = jax.tree.structure(self.out_shape)
        # Its work is counted only where the quick tier is on (``Tiered``).
        self.run = Tiered(jex.jaxpr_as_fun(hoisted(self.closed)), functools.partial(work_bytes, self.closed.jaxpr))
        self._other: dict[Any, concurrent.futures.Future] = {}  # per precision: its Tiered program
        self.literal_eps = 0.0  # of the rounded literals in the program (known once it is retyped)

    @property
    def chunk_size(self) -> int | None:
        return self.kernel.chunk_size

    def _padded(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        params, x, elements = args
        return params, x, Placement.pad(np.asarray(elements), self.multiple)

    def flat_args(self, consts: Sequence[Any], args: tuple[Any, ...]) -> list[Any]:
        """Constants and arguments, flat, placed on the devices."""
        return self.placement.place([*consts, *jax.tree.leaves(self._padded(args))])

    def _finish(self, out: Any, keep: int) -> tuple[Any, dict[str, Any]]:
        y, stats = jax.tree.unflatten(self.out_tree, out)
        self.devices = Placement.devices_used(jax.tree.leaves(stats["parts"])[0])
        stats = unpacked(Placement.gather(stats))
        stats["parts"] = tuple({k: v if v is None else v[:keep] for k, v in p.items()} for p in stats["parts"])
        return y, stats

    def __call__(self, consts: Sequence[Any], *args: Any) -> tuple[Any, dict[str, Any]]:
        """Run in f's precision with these closed-over values (those of the latest trace)."""
        return self._finish(self.run(*self.flat_args(consts, args)), len(args[2]))

    def _retyped(self, float_dtype: Any, move_literals: tuple[int, bool] | None = None) -> Tiered:
        """The program in ``float_dtype`` (its rounded literals moved by ``move_literals``), compiled
        already when ``prepare`` compiled it ahead; raises ``RetypeError`` for a program that cannot
        run in another precision."""
        key = (np.dtype(float_dtype).name, move_literals)
        if key not in self._other:
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_result(self._jitted(float_dtype, move_literals))
            self._other[key] = future
        return self._other[key].result()

    def _jitted(self, float_dtype: Any, move_literals: tuple[int, bool] | None = None) -> Tiered:
        patches = _patches_on()
        fn = retyped(hoisted(self.closed), float_dtype, move_literals, patches=patches)
        if fn.fixed_precision:
            raise RetypeError(
                f"f calls foreign code ({', '.join(sorted(fn.fixed_precision))}) that computes in its declared "
                "precision, so another precision cannot resolve its rounding"
            )
        self.literal_eps = max(self.literal_eps, fn.literal_eps)
        work = functools.partial(work_bytes, self.closed.jaxpr, float_dtype, patches)
        return Tiered(fn, work, PATCHED_COMPILE if fn.patched else FULL_COMPILE)

    def prepare(self, float_dtype: Any) -> None:
        """Start compiling the program in ``float_dtype`` on a background thread, so XLA compiles
        it while the first run compiles and runs (two programs, two cores). Its inputs' shapes are
        known before any value is: the re-run always evaluates all the elements (see ``run_in``).
        Only for a program on one device (sharded programs compile on first use)."""
        key = (np.dtype(float_dtype).name, None)
        if key in self._other or self.kernel.shards > 1 or not _ahead_of_time():
            return
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._other[key] = future
        _PENDING.add(future)
        future.add_done_callback(_PENDING.discard)
        device = other_precision_device()

        def spec(var: Any) -> Any:
            dtype = var.aval.dtype
            if _is_float(dtype):
                dtype = retype_value(np.zeros((), dtype), float_dtype).dtype
            sharding = None if device is None else jax.sharding.SingleDeviceSharding(device)
            return jax.ShapeDtypeStruct(var.aval.shape, dtype, sharding=sharding)

        def compile_() -> None:
            try:
                with other_precision():
                    jitted = self._jitted(float_dtype)
                    jitted.ahead(*[spec(v) for v in (*self.closed.jaxpr.constvars, *self.closed.jaxpr.invars)])
                    future.set_result(jitted)
            except BaseException as err:  # noqa: BLE001 - handed to the run that needs it
                future.set_exception(err)

        # Not a daemon: a process exiting while XLA compiles would abort (checks settle it anyway).
        threading.Thread(target=compile_, name="equivax-other-precision").start()

    def run_in(
        self,
        float_dtype: Any,
        consts: Sequence[Any],
        params: Any,
        x: Any,
        elements: np.ndarray,
        seed: int | None = None,
        flip: bool = False,
    ) -> tuple[Any, dict[str, Any]]:
        """Run the program with every floating value cast to ``float_dtype``, for ``elements``.

        With ``seed``, the stored low-precision values (closed-over arrays, parameters, floating
        elements) are first moved by half an ulp of their own precision (``perturbed``; ``flip``
        moves them the other way), and so are the program's rounded literals (``math.sqrt(3)``
        traced in float32), which takes a program compiled for those values.
        """
        run = self._retyped(float_dtype)
        if seed is not None and self.literal_eps > 0:
            run = self._retyped(float_dtype, (seed, flip))
        # Always the whole element axis, the chosen elements first and the first repeated after
        # them: one program in the other precision however many elements a call re-runs.
        count = len(elements)
        elements = np.asarray(elements)
        if count < self.count:
            elements = np.concatenate([elements, np.repeat(elements[:1], self.count - count, axis=0)])
        args = (params, x, elements)
        values = [*consts, *jax.tree.leaves(self._padded(args))]
        n_consts = len(consts)
        n_params = len(jax.tree.leaves(params))
        if seed is not None:
            stored = set(range(n_consts + n_params)) | {len(values) - 1}
            values = [perturbed(v, seed + i, flip) if i in stored else v for i, v in enumerate(values)]
        closed = self.closed
        leaves = [
            _host_retype(v, float_dtype, var.aval.dtype)
            for v, var in zip(values, [*closed.jaxpr.constvars, *closed.jaxpr.invars], strict=True)
        ]
        device = other_precision_device()
        placed = self.placement.place(leaves) if device is None else jax.device_put(leaves, device)
        return self._finish(run(*placed), count)

    @functools.cached_property
    def steps(self) -> bool:
        """Whether f jumps at thresholds of its floating values (``floor``, ``round``, ``argmax``, a
        float cast to an integer, a comparison cast to a number: bins, one-hots, class ids), where
        data on a threshold flips under any rounding. Read from a trace of f alone: the check's own
        statistics take an ``argmax`` of the errors, which says nothing about f. Should f not trace
        alone, the whole program answers (never blind, at worst one float64 run too many)."""
        jaxpr = self._f_alone if self._f_alone is not None else trace_alone(self.kernel, *self._f_specs)
        return any(_is_step(eqn) for eqn in _equations(self.closed.jaxpr if jaxpr is None else jaxpr))

    @functools.cached_property
    def quantised(self) -> tuple[str, ...]:
        """The 8-bit floating formats the program casts to (fake quantisation): a float64 re-run
        computes them exactly, so their grid is precision, not function, to the verdict."""
        return tuple(sorted({_narrow_cast(eqn) for eqn in _equations(self.closed.jaxpr)} - {None}))

    @functools.cached_property
    def coarsest_eps(self) -> float:
        """Machine epsilon of the lowest floating precision anywhere in the program."""
        return max((eps(d) for d in _float_dtypes(self.closed.jaxpr)), default=eps(np.float64))

    def stored_eps(self, consts: Sequence[Any], params: Any, elements: np.ndarray) -> float:
        """The coarsest precision of the stored values a re-run keeps (0 when all are float64),
        rounded literals included (known once the program has been re-run)."""
        values = [*consts, *jax.tree.leaves(params), elements]
        found = [eps(_dtype_of(v)) for v in values if _is_float(_dtype_of(v))]
        found = [e for e in found if e > eps(np.float64)]
        return max([*found, self.literal_eps])
