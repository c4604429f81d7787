"""The traced kernel of a check: ``f(x)`` once, then statistics of ``f(g·x) − g·f(x)`` per element.

The kernel always measures per output *part*: the whole output as one part for ``check``, one
part per leaf for ``check_outputs``. Each part's statistics are stacked over elements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from equivax import actions as actions_lib
from equivax._statistics import batched, element_stats, error_map
from equivax._traced import same, stable_hash

__all__ = ["TRACER_ERRORS", "Kernel", "batch_size", "same_layout"]


def batch_size(x: Any) -> int:
    """Number of examples: the leading axis of every leaf of ``x``."""
    return int(jax.tree.leaves(x)[0].shape[0])


def _leaf_actions(out_action: Any, y: Any) -> list[Any]:
    """The action that applies to each leaf of ``y``."""
    n = len(jax.tree.leaves(y))
    if not isinstance(out_action, actions_lib.TreeAction):
        return [out_action] * n
    parts = out_action.treedef.flatten_up_to(y)
    return [act for act, part in zip(out_action.leaves, parts, strict=True) for _ in jax.tree.leaves(part)]


def same_layout(expected: Any, got: Any, what: str, fix: str) -> None:
    """Raise a one-line error unless ``got`` has ``expected``'s pytree structure, shapes and dtypes."""
    want_def, got_def = jax.tree.structure(expected), jax.tree.structure(got)
    if want_def != got_def:
        raise ValueError(f"{what} returned a pytree {got_def}, but {fix} {want_def}")
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        if not hasattr(b, "shape") or not hasattr(b, "dtype"):
            raise TypeError(f"{what} returned a {type(b).__name__}, but {fix} arrays: return jax arrays")
        if a.shape != b.shape:
            raise ValueError(f"{what} returned shape {b.shape}, but {fix} shape {a.shape}")
        if a.dtype != b.dtype:
            raise TypeError(f"{what} returned dtype {b.dtype}, but {fix} dtype {a.dtype}")


#: JAX errors raised when traced values are turned into Python values (shared with _program).
TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _acting(action: Any, g: jax.Array, value: Any, role: str) -> Any:
    """``action(g, value)``, with an action that is not traceable named as the culprit (not f)."""
    try:
        return actions_lib.apply(action, g, value)
    except TRACER_ERRORS as err:
        raise TypeError(
            f"{role} is not traceable by JAX ({type(err).__name__}): the element g is a traced array inside "
            "the check; write the action with jax.numpy and lax (jnp.roll(x, g[0], ...), lax.switch on g), "
            "without int(g) or np.asarray(g)"
        ) from err


def _check_outputs(y: Any) -> Any:
    for leaf in jax.tree.leaves(y):
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise TypeError(f"f returned a {type(leaf).__name__} leaf; f must return jax arrays (or a pytree of them)")
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise TypeError(
                f"f returned dtype {leaf.dtype}; an equivariance error needs floating outputs: "
                "return the scores, not e.g. an argmax"
            )
    return y


@dataclasses.dataclass(frozen=True, eq=False)
class Kernel:
    """f(x) once, then statistics of f(g·x) − g·f(x) for each element (the traced program).

    ``chunk_size`` elements are evaluated at a time with ``lax.map`` (``None``: all at once with
    ``vmap``); with ``shards > 1`` the element axis is split into that many equal parts, one per
    device. The element count must be a multiple of ``shards · chunk_size`` (the program pads).
    """

    fn: Callable[[Any, Any], Any]
    in_action: Any
    out_action: Any
    chunk_size: int | None
    each_output: bool = False  # one part per leaf of f's output
    shards: int = 1

    def _parts(self) -> tuple[Any, ...]:
        return (self.fn, self.in_action, self.out_action, self.chunk_size, self.each_output, self.shards)

    def __hash__(self) -> int:
        return hash(tuple(stable_hash(part) for part in self._parts()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Kernel) and all(same(a, b) for a, b in zip(self._parts(), other._parts(), strict=True))

    def _input(self, g: jax.Array, x: Any) -> Any:
        gx = _acting(self.in_action, g, x, "in_action")
        same_layout(x, gx, "in_action(g, x)", "x has")
        return gx

    def __call__(self, params: Any, x: Any, elements: jax.Array) -> tuple[Any, dict[str, Any]]:
        n = batch_size(x)
        # All elements at once on one device: f(x) is evaluated in the same vmapped call as every
        # f(g·x), so XLA compiles f once (half the compile time of a small model).
        together = self.shards == 1 and (self.chunk_size is None or self.chunk_size >= elements.shape[0])
        y_all = None
        if together:
            gx_all = jax.vmap(lambda g: self._input(g, x))(elements)
            both = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x, gx_all)
            y_all = jax.vmap(lambda value: _check_outputs(self.fn(params, value)))(both)
            y = jax.tree.map(lambda a: a[0], y_all)
            y_all = jax.tree.map(lambda a: a[1:], y_all)
        else:
            y = _check_outputs(self.fn(params, x))

        def one(g: jax.Array, y_g: Any = None) -> dict[str, Any]:
            if y_g is None:
                y_g = self.fn(params, self._input(g, x))
            target = _acting(self.out_action, g, y, "out_action")
            same_layout(y, target, "out_action(g, f(x))", "f(x) has")
            in_defined = actions_lib.is_defined(self.in_action, g)
            if not self.each_output:
                stats = element_stats(y_g, target, n)
                stats["defined"] = in_defined & actions_lib.is_defined(self.out_action, g)
                return {"parts": (stats,)}
            parts = []
            for a, b, act in zip(
                jax.tree.leaves(y_g), jax.tree.leaves(target), _leaf_actions(self.out_action, y), strict=True
            ):
                stats = element_stats(a, b, n)
                stats["defined"] = in_defined & actions_lib.is_defined(act, g)
                stats["map"] = error_map(a, b, batched([b], n))
                parts.append(stats)
            return {"parts": tuple(parts)}

        def run(part: jax.Array) -> dict[str, Any]:
            if self.chunk_size is None or self.chunk_size >= part.shape[0]:
                return jax.vmap(one)(part)
            return lax.map(one, part, batch_size=self.chunk_size)

        if together:
            stats = jax.vmap(one)(elements, y_all)
        elif self.shards == 1:
            stats = run(elements)
        else:  # one part per device: the partitioner splits the outer axis, each device maps its part
            parts = elements.reshape(self.shards, -1, *elements.shape[1:])
            stats = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), jax.vmap(run)(parts))
        stats["x_finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(x)]))
        leaves = jax.tree.leaves(y)
        finite = [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]
        stats["y_finite"] = jnp.stack(finite) if self.each_output else jnp.all(jnp.stack(finite))[None]
        return y, stats
