"""``jax.jit`` for the programs equivax compiles itself, with XLA options chosen for them.

On CPU, XLA compiles one kernel per fusion, and a check's program has many small ones (moving
inputs and outputs, statistics). XLA's loop emitters compile them faster than its newer fusion
emitters, and the programs run as fast or faster. Measured on the check programs of
benchmarks/first_verdict.py, each compiled alone: half the time at backend optimisation level 0
(the test suite's), 10–30% less at XLA's default level, which is within the noise of a whole
first verdict (benchmarks/README.md). The options apply to equivax's programs only, never to
the user's own ``jax.jit``; an option the user sets in ``XLA_FLAGS`` is left to them, and one
this XLA does not know is dropped.

A check's program is compiled in two tiers on CPU (``Tiered``): first at XLA's backend
optimisation level 0, which compiles in about half the time and runs the program's own loops
(moving inputs and outputs, statistics; not the convolutions and matrix products, which are
library calls) a few times slower; then, once its runs have cost as much time as that compile
did, at XLA's default level. A check run once (a test, a CLI call, a notebook cell) pays the quick
compile only; one run many times (a training monitor) pays both compiles and runs at full speed
after the first few calls, as a ski rental does. Programs whose loops move much data start at the
default level (``QUICK_BYTES``), and ``EQUIVAX_QUICK_COMPILE=0`` switches the first tier off.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

from equivax import _patches

__all__ = [
    "COMPILER_OPTIONS",
    "FULL_COMPILE",
    "QUICK_BYTES",
    "QUICK_OPTIONS",
    "Tiered",
    "compiler_options",
    "jit",
    "work_bytes",
]

#: XLA options for equivax's own programs (see the module's docstring).
COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


#: Options of the first, quick compile (``Tiered``), on top of ``COMPILER_OPTIONS``.
QUICK_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 0}

#: Programs whose loops make more than this (``work_bytes``) per quick compile saved skip the quick
#: tier: at level 0 they would run longer than the compile saves. Measured on CPU
#: (benchmarks/first_verdict.py and check_vs_forward.py): level 0 added 0.14 s to the run of a 480
#: MiB check and saved about 0.2 s of compile; the P4CNN report (2 GiB) ran slower by more than its
#: compile saved; checks of 2-75 MiB gained 0.1-0.3 s each.
QUICK_BYTES = 128 * 2**20
#: How many quick compiles a compile at the default level takes, for most programs (``Tiered``).
FULL_COMPILE = 2.0


@functools.cache
def compiler_options() -> tuple[tuple[str, Any], ...]:
    """The options of ``COMPILER_OPTIONS`` this XLA accepts and ``XLA_FLAGS`` does not set."""
    chosen = {k: v for k, v in COMPILER_OPTIONS.items() if k not in os.environ.get("XLA_FLAGS", "")}
    if not chosen:
        return ()
    try:  # an XLA that does not know an option refuses the whole compilation
        jax.jit(lambda: jnp.zeros(()), compiler_options=chosen).lower().compile()
    except Exception:  # noqa: BLE001 - any refusal means: XLA's defaults
        return ()
    return tuple(chosen.items())


class _Jit:
    """``jax.jit(fn, **kwargs)`` with ``compiler_options()``, made on first use (not on import)."""

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any]):
        self._fn, self._kwargs, self._jitted = fn, kwargs, None
        functools.update_wrapper(self, fn)

    @property
    def jitted(self) -> Any:
        if self._jitted is None:
            options = dict(compiler_options()) or None
            self._jitted = jax.jit(self._fn, compiler_options=options, **self._kwargs)
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted.lower(*args, **kwargs)


def jit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``jax.jit(fn, **kwargs)`` with equivax's compiler options (``COMPILER_OPTIONS``)."""
    return _Jit(fn, kwargs)


def _quick_tier() -> bool:
    """Whether programs start at ``QUICK_OPTIONS``: on by default, off with
    ``EQUIVAX_QUICK_COMPILE=0`` or where ``XLA_FLAGS`` sets the level itself (the test suite)."""
    flag = os.environ.get("EQUIVAX_QUICK_COMPILE", "1").lower()
    if flag in ("0", "false", "no", "off", ""):
        return False
    return not any(k in os.environ.get("XLA_FLAGS", "") for k in QUICK_OPTIONS)


#: Operations XLA on CPU hands to a library in these dtypes, as fast at any optimisation level.
_LIBRARY = frozenset({"conv_general_dilated", "dot_general"})
_LIBRARY_DTYPES = frozenset({np.dtype(np.float32), np.dtype(jnp.bfloat16), np.dtype(np.complex64)})
#: A convolution XLA emits as its own loop (float64 on CPU) counts this many bytes per multiply-add:
#: at level 0 one takes about 6 ns (a float64 residual network: 2.5 s against 0.2 s at the default
#: level), 22 times what a byte of the programs' other loops costs there (benchmarks/README.md).
_CONV_LOOP = 24
#: Windowed reductions (pooling, cumulative sums) and half-precision arithmetic run as loops that
#: level 0 leaves 5-50 times slower (benchmarks/README.md): their bytes count this many times.
_HEAVY = 16


def _library_conv(eqn: Any, dtype: np.dtype) -> bool:
    """Whether XLA on CPU hands this convolution, in ``dtype``, to a library (YNNPACK takes float64
    ones with more than 16 input or output channels in NHWC order): it then runs as fast at any
    optimisation level. Asked of XLA itself, by compiling the convolution alone at level 0 (10-20
    ms, once per shape; the batch size is left out) and looking for a library's fusion or call in
    what it made. Other backends are not asked (the quick tier is for CPU only): a loop."""
    if jax.default_backend() != "cpu":
        return False
    params = dict(eqn.params)
    if params.get("preferred_element_type") is not None:
        params["preferred_element_type"] = dtype
    lhs, rhs = (v.aval for v in eqn.invars)
    batch = params["dimension_numbers"].lhs_spec[0]
    lhs_shape = tuple(1 if d == batch else n for d, n in enumerate(lhs.shape))
    try:
        key = (tuple(sorted(params.items())), lhs_shape, rhs.shape, dtype)
        hash(key)
    except TypeError:  # a parameter that does not hash: count it as a loop
        return False
    return _compiled_as_library(key)


@functools.lru_cache(maxsize=256)
def _compiled_as_library(key: tuple[Any, ...]) -> bool:
    items, lhs_shape, rhs_shape, dtype = key
    params = dict(items)
    specs = [jax.ShapeDtypeStruct(shape, dtype) for shape in (lhs_shape, rhs_shape)]
    try:
        with jax.enable_x64(True):  # the specs carry their dtypes: 64-bit ones must not be narrowed
            lowered = jax.jit(lambda a, b: jax.lax.conv_general_dilated_p.bind(a, b, **params)).lower(*specs)
            text = lowered.compile({**dict(compiler_options()), **QUICK_OPTIONS}).as_text() or ""
        return "kind=kCustom" in text or "custom-call" in text  # a library fusion (YNNPACK) or call (oneDNN)
    except Exception:  # noqa: BLE001 - cannot ask: count it as a loop, the cautious side
        return False


def _window(eqn: Any) -> int:
    if eqn.primitive.name.startswith("reduce_window"):
        return int(np.prod(eqn.params.get("window_dimensions", (_HEAVY,))))
    return _HEAVY if eqn.primitive.name.startswith("cum") else 1


def work_bytes(jaxpr: Any, float_dtype: Any = None, patches: bool = False) -> float:
    """Bytes of the arrays a program's own loops make, a proxy for the time they take at a low
    optimisation level: ``_LIBRARY`` calls count nothing in the dtypes a library runs, a convolution
    in another dtype that XLA emits as its own loop (its float64 convolution at level 0 is 15-18
    times slower; ``_library_conv`` asks which) ``_CONV_LOOP`` bytes per multiply-add, a windowed
    reduction counts once per window entry, a loop's body once per trip where the trip count is
    known (``scan``). ``float_dtype``: count the program with its floating values in that dtype
    (its re-run in another precision); ``patches``: its convolutions widened to float64 run as
    patches and a matrix product (``equivax._patches``), whose patch arrays count."""
    total = 0.0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            dtype = getattr(var.aval, "dtype", None)
            if dtype is None or not hasattr(dtype, "itemsize") or jnp.issubdtype(dtype, jax.dtypes.extended):
                continue  # PRNG keys: a few words each
            dtype = np.dtype(dtype)
            if float_dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
                dtype = np.dtype(np.complex128 if jnp.issubdtype(dtype, jnp.complexfloating) else float_dtype)
            if eqn.primitive.name in _LIBRARY:
                if dtype not in _LIBRARY_DTYPES and eqn.primitive.name == "conv_general_dilated":
                    lhs, rhs = (v.aval for v in eqn.invars)
                    if patches and _patches.rewrites(eqn, float_dtype):
                        total += _patches.patch_bytes(eqn.params, lhs.shape, rhs.shape, dtype.itemsize)
                    elif not _library_conv(eqn, dtype):  # XLA's own loop: per output, tap and input channel
                        out_features = rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
                        total += var.aval.size * (rhs.size // out_features) * _CONV_LOOP
                continue
            weight = _window(eqn) * (_HEAVY if dtype == np.float16 else 1)
            total += int(np.prod(getattr(var.aval, "shape", ()))) * dtype.itemsize * weight
        trips = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
        for inner in jex.jaxprs_in_params(eqn.params):
            total += trips * work_bytes(inner, float_dtype, patches)
    return total


class Tiered:
    """A program compiled quickly for its first run and fully once its runs have cost what that saved.

    ``work``: the bytes its loops make (``work_bytes``), or a function that counts them (called
    only where the quick tier is on: counting may compile probes). ``full_compile``: how many quick compiles
    its compile at the default level takes, so the quick tier saves ``full_compile - 1`` of them.
    The quick tier is for programs on CPU whose loops make at most ``QUICK_BYTES`` per quick compile
    saved, and it is left once their runs have cost as many quick compiles. Calls take the same
    flat arguments, placed the same way, every time; an executable that refuses them (another
    placement) hands over to ``jax.jit`` for good. Safe to call from several threads: one of them
    compiles, the others wait for it.
    """

    def __init__(self, fn: Callable[..., Any], work: float | Callable[[], float], full_compile: float = FULL_COMPILE):
        self._jit = _Jit(fn, {})
        self._saved = full_compile - 1  # quick compiles the quick tier saves
        self._work = work  # or the function that counts it, asked only where the quick tier is on
        self._lock = threading.Lock()
        self._lowered: Any = None
        self._executable: Any = None
        self._budget = 0.0  # seconds the quick compile took
        self._spent = 0.0  # seconds the quick executable has run since
        self.tier: str | None = None  # "quick", then "full"; "jit" when the quick tier is off

    def lower(self, *args: Any) -> Any:
        return self._jit.lower(*args)

    def _quick(self) -> bool:
        if jax.default_backend() != "cpu" or not _quick_tier():
            return False
        work = self._work() if callable(self._work) else self._work
        return work <= self._saved * QUICK_BYTES

    def _start(self, args: tuple[Any, ...]) -> None:
        if not self._quick():
            self.tier = "jit"
            return
        lowered = self._jit.lower(*args)
        start = time.perf_counter()
        try:
            executable = lowered.compile(QUICK_OPTIONS)
        except Exception:  # noqa: BLE001 - an XLA without these options: its defaults (jit re-raises real errors)
            self.tier = "jit"
            return
        self._lowered, self._executable = lowered, executable
        self._budget, self.tier = time.perf_counter() - start, "quick"

    def ahead(self, *specs: Any) -> None:
        """Compile now (on a background thread, say) what the first call would compile, from the
        arguments' shapes and placements: the same tier, so the numbers are the same either way."""
        with self._lock:
            if self.tier is None:
                self._start(specs)
            if self.tier == "jit":
                self._executable, self.tier = self._jit.lower(*specs).compile(), "full"

    def _upgrade(self, seconds: float) -> None:
        with self._lock:
            self._spent += seconds
            if self.tier == "quick" and self._spent >= self._saved * self._budget:
                self._executable, self._lowered, self.tier = self._lowered.compile(), None, "full"

    def __call__(self, *args: Any) -> Any:
        if self.tier is None:
            with self._lock:
                if self.tier is None:
                    self._start(args)
        tier, executable = self.tier, self._executable
        if tier == "jit":
            return self._jit(*args)
        start = time.perf_counter()
        try:
            out = executable(*args)
        except (TypeError, ValueError):  # placed unlike the first call: jit decides from now on
            with self._lock:
                self.tier, self._executable, self._lowered = "jit", None, None
            return self._jit(*args)
        if tier == "quick":
            jax.block_until_ready(out)  # the caller reads the results at once anyway
            self._upgrade(time.perf_counter() - start)
        return out
