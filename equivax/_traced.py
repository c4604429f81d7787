"""What gets traced: ``f`` made a pure function ``fn(params, x)`` of its parameters and input.

Three kinds of ``f`` are told apart:

- a Flax NNX module: split into ``(graphdef, state)``; the state is a runtime argument of the
  compiled check, so a module updated in place (a training step) re-uses the compiled program;
- a callable JAX pytree (an Equinox module, ``jax.tree_util.Partial(apply_fn, params)``): its
  array leaves are the parameters, everything else is static structure;
- any other callable: its program is re-used without tracing only while a *fingerprint* of
  what it can read is unchanged (the cells it closes over, its defaults and the globals its code
  names, walked into containers and object attributes); when the fingerprint changes, or
  cannot be taken, f is traced again and the fresh program compared with the compiled one, so
  values it closes over are always current.

``key`` is what identifies the traced program without tracing (``None`` for plain callables).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import lax

__all__ = ["Static", "Traced", "fingerprint", "split"]


def stable_hash(obj: Any) -> int:
    """Hash for cache keys; objects that cannot be hashed go by identity (the cache keeps them alive)."""
    try:
        return hash(obj)
    except TypeError:
        return id(obj)


def same(a: Any, b: Any) -> bool:
    """Equality for cache keys: identity, or ``==`` for hashable values."""
    if a is b:
        return True
    try:
        hash(a), hash(b)
    except TypeError:
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an __eq__ that returns arrays or raises: not the same
        return False


@dataclasses.dataclass(frozen=True)
class Traced:
    """``fn(params, x)``, its parameters, a static key (or ``None``), the fingerprint of a plain
    callable (``None`` when it cannot be taken) and notes for the result."""

    fn: Callable[[Any, Any], Any]
    params: Any
    key: Any
    notes: tuple[str, ...] = ()
    fingerprint: Any = None


_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.dtype, type)
_MAX_NODES = 2000


class _Unknown(Exception):
    """The walk met something it cannot vouch for: trace again."""


def fingerprint(f: Any) -> Any:
    """What a plain callable can read, as a hashable value; ``None`` when it cannot be taken.

    Arrays count by identity (JAX arrays are immutable; NumPy arrays also by their bytes), objects
    by their attributes, functions by their code, closure, defaults and the globals they name.
    """
    seen: dict[int, int] = {}
    budget = [_MAX_NODES]
    keep: list[Any] = []  # arrays counted by identity stay alive, so no new array takes their id

    def walk(obj: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0 or depth > 6:
            raise _Unknown
        if isinstance(obj, _SCALARS) or obj is Ellipsis:
            return obj
        if id(obj) in seen:
            return ("seen", seen[id(obj)])
        seen[id(obj)] = len(seen)
        if isinstance(obj, jax.Array):
            keep.append(obj)
            return ("array", id(obj))
        if isinstance(obj, np.ndarray | np.generic):
            if obj.nbytes > 1 << 20:
                raise _Unknown
            return ("numpy", obj.dtype.str, obj.shape, obj.tobytes())
        if isinstance(obj, tuple | list | set | frozenset):
            return (type(obj).__name__, tuple(walk(item, depth + 1) for item in obj))
        if isinstance(obj, dict):
            return ("dict", tuple((walk(k, depth + 1), walk(v, depth + 1)) for k, v in obj.items()))
        if isinstance(obj, types.ModuleType):
            return ("module", obj.__name__)
        if isinstance(obj, types.BuiltinFunctionType | types.BuiltinMethodType):
            return ("builtin", id(obj))
        if isinstance(obj, types.MethodType):
            return ("method", walk(obj.__func__, depth + 1), walk(obj.__self__, depth + 1))
        if isinstance(obj, functools.partial):
            return ("partial", walk(obj.func, depth + 1), walk(obj.args, depth + 1), walk(obj.keywords, depth + 1))
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            cells = tuple(walk(c.cell_contents, depth + 1) for c in obj.__closure__ or () if _filled(c))
            names = tuple((n, walk(obj.__globals__[n], depth + 1)) for n in code.co_names if n in obj.__globals__)
            return ("function", id(code), cells, walk(obj.__defaults__, depth + 1), names)
        if getattr(type(obj), "__module__", "").startswith(("jax", "jaxlib", "flax", "numpy")):
            raise _Unknown  # library objects (NNX modules, tracers, shardings): trace to be sure
        attributes = getattr(obj, "__dict__", None)
        if attributes is None:
            raise _Unknown
        return ("object", type(obj), walk(attributes, depth + 1))

    try:
        return _Fingerprint(walk(f, 0), keep)
    except (_Unknown, RecursionError, ValueError):
        return None


class _Fingerprint:
    """A fingerprint's value (compared) and the arrays it names by identity (kept alive)."""

    def __init__(self, value: Any, keep: list[Any]):
        self.value, self.keep = value, keep

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Fingerprint) and _equal(self.value, other.value)

    __hash__ = None  # type: ignore[assignment]


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values whose == is ambiguous: not equal
        return False


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True, eq=False)
class _Plain:
    fn: Callable[[Any], Any]

    def __hash__(self) -> int:
        return stable_hash(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Plain) and same(self.fn, other.fn)

    def __call__(self, params: Any, x: Any) -> Any:
        return self.fn(x)


@dataclasses.dataclass(frozen=True)
class _Module:
    graphdef: Any

    def __call__(self, params: Any, x: Any) -> Any:
        from flax import nnx

        # Re-bind the state at the current trace level (inside vmap or lax.map), so a module that
        # updates its state as it runs (batch statistics, RNG counts) may do so; updates are dropped.
        params = lax.optimization_barrier(params)
        return nnx.merge(self.graphdef, params)(x)


class _Static:
    """A non-array leaf of a callable pytree, compared like a cache key."""

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return stable_hash(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and same(self.value, other.value)


@dataclasses.dataclass(frozen=True)
class _Pytree:
    treedef: Any
    static: tuple[_Static | None, ...]  # None where the leaf is a parameter

    def __call__(self, params: Any, x: Any) -> Any:
        values = iter(params)
        leaves = [next(values) if s is None else s.value for s in self.static]
        return jax.tree.unflatten(self.treedef, leaves)(x)


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray)


def _training_modules(module: Any) -> list[str]:
    """Paths of NNX submodules left in training mode (dropout on, batch statistics in use)."""
    from flax import nnx

    found = []
    for path, sub in nnx.iter_modules(module):
        if getattr(sub, "deterministic", None) is False or getattr(sub, "use_running_average", None) is False:
            found.append(f"{type(sub).__name__} at {'.'.join(map(str, path)) or 'the top'}")
    return found


def _linen_module(f: Any) -> bool:
    module = type(f).__module__ or ""
    return module.startswith("flax.linen") or any(c.__module__.startswith("flax.linen") for c in type(f).__mro__[1:])


def split(f: Any) -> Traced:
    """Make ``f`` a pure function of ``(params, x)``; raise a one-line error for what cannot be."""
    # An NNX module exists only once flax.nnx is imported: a plain function does not pay its import.
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(f, nnx.Module):
        notes: tuple[str, ...] = ()
        training = _training_modules(f)
        if training:
            graphdef, state = nnx.split(f)
            f = nnx.merge(graphdef, state)  # a copy: the user's module keeps its mode
            f.eval()
            notes = (
                f"checked in eval mode ({', '.join(training[:3])} in training mode): dropout off, running "
                "statistics; call model.eval() before checking to silence this note",
            )
        graphdef, state = nnx.split(f)
        fn = _Module(graphdef)
        return Traced(fn, state, fn, notes)
    if _linen_module(f):
        raise TypeError(
            f"f is a Flax Linen module ({type(f).__name__}) without its variables: check "
            "jax.tree_util.Partial(model.apply, variables) (or lambda x: model.apply(variables, x))"
        )
    if not callable(f):
        raise TypeError(f"f must be a JAX-traceable callable or a Flax NNX module, got {type(f).__name__}")
    leaves, treedef = jax.tree.flatten(f)
    if any(_is_array(leaf) for leaf in leaves):  # a callable pytree: arrays are parameters
        params = [leaf for leaf in leaves if _is_array(leaf)]
        fn = _Pytree(treedef, tuple(None if _is_array(leaf) else _Static(leaf) for leaf in leaves))
        return Traced(fn, params, fn)
    return Traced(_Plain(f), None, None, fingerprint=fingerprint(f))


@dataclasses.dataclass(frozen=True, eq=False)
class Static:
    """``fn`` as a static argument that is equal to another only while what a plain callable reads
    is unchanged (its fingerprint, see ``equivax._traced``): a changed closure is traced again."""

    fn: Any
    mark: Any  # the fingerprint; ``None`` when it could not be taken (never equal: always traced)

    def __hash__(self) -> int:
        return hash(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Static) and self.fn == other.fn and self.mark is not None and self.mark == other.mark

    def __call__(self, state: Any, x: Any) -> Any:
        return self.fn(state, x)
