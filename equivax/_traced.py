"""What gets traced: ``f`` made a pure function ``fn(params, x)`` of its parameters and input.

Three kinds of ``f`` are told apart:

- a Flax NNX module: split into ``(graphdef, state)``; the state is a runtime argument of the
  compiled check, so a module updated in place (a training step) re-uses the compiled program;
- a callable JAX pytree (an Equinox module, ``jax.tree_util.Partial(apply_fn, params)``): its
  array leaves are the parameters, everything else is static structure;
- any other callable: traced afresh on every check, so values it closes over are read each time
  (the compiled program is still re-used when the traced program is the same).

``key`` is what identifies the traced program without tracing (``None`` for plain callables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import lax

__all__ = ["Traced", "split"]


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
    """``fn(params, x)``, its parameters, a static key (or ``None``) and notes for the result."""

    fn: Callable[[Any, Any], Any]
    params: Any
    key: Any
    notes: tuple[str, ...] = ()


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
    from flax import nnx

    if isinstance(f, nnx.Module):
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
    return Traced(_Plain(f), None, None)
