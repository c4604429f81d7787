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
import numpy as np
from jax import lax

from equivax import actions as actions_lib
from equivax._statistics import batched, element_stats, error_map
from equivax._traced import same, stable_hash

__all__ = ["TRACER_ERRORS", "Grouped", "Kernel", "Packed", "batch_size", "same_layout", "unpacked"]


def batch_size(x: Any) -> int:
    """Number of examples: the leading axis of every leaf of ``x``."""
    return int(jax.tree.leaves(x)[0].shape[0])


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _part_actions(out_action: Any, y: Any) -> list[tuple[Any, bool]]:
    """For each leaf of ``y``: the action of the part it belongs to, and whether that action moves
    the leaf by itself (the part is the leaf, or the action acts leafwise) rather than moving a
    whole subtree at once (an action on a (positions, features) pair, say)."""
    if not isinstance(out_action, actions_lib.TreeAction):
        alone = _is_array(y) or actions_lib.acts_leafwise(out_action)
        return [(out_action, alone)] * len(jax.tree.leaves(y))
    found = []
    for act, part in zip(out_action.leaves, out_action.treedef.flatten_up_to(y), strict=True):
        alone = _is_array(part) or actions_lib.acts_leafwise(act)
        found += [(act, alone)] * len(jax.tree.leaves(part))
    return found


def leaf_groups(out_action: Any, y: Any) -> list[tuple[Any, list[int]]] | None:
    """Leaves of ``y`` grouped by shape, dtype and action, as ``(action, leaf indices)``: each group is
    moved and measured as one stacked array, so XLA compiles its code once (a report's sixteen layer
    outputs have four shapes). ``None`` when some action moves several leaves together."""
    acts = _part_actions(out_action, y)
    if not all(alone for _, alone in acts):
        return None
    leaves = jax.tree.leaves(y)
    groups: list[tuple[Any, list[int]]] = []
    for i, ((act, _), leaf) in enumerate(zip(acts, leaves, strict=True)):
        for known, members in groups:
            first = leaves[members[0]]
            if (first.shape, first.dtype) == (leaf.shape, leaf.dtype) and same(known, act):
                members.append(i)
                break
        else:
            groups.append((act, [i]))
    return groups


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
    except ValueError as err:  # the action refuses the array: say which one (f's output, not x)
        text = str(err)
        if text.startswith(role):
            raise
        subject = "f's output" if role == "out_action" else "x"
        shapes = [tuple(np.shape(leaf)) for leaf in jax.tree.leaves(value)]
        several = len(shapes) > 1 and not isinstance(action, actions_lib.TreeAction)
        hint = f"; {subject} holds {len(shapes)} arrays: give each its own action, {role}=(a, b, ...)"
        hint = hint if several else ""
        raise ValueError(f"{role} cannot act on {subject} (shapes {shapes}): {text}{hint}") from err
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
        if not (
            jnp.issubdtype(leaf.dtype, jnp.inexact)
            or jnp.issubdtype(leaf.dtype, jnp.integer)
            or jnp.issubdtype(leaf.dtype, jnp.bool_)
        ):
            raise TypeError(
                f"f returned dtype {leaf.dtype}; f must return numbers (floats, or integer ids and counts, or "
                "boolean masks)"
            )
    return y


@jax.tree_util.register_pytree_node_class
class Packed:
    """A pytree whose leaves are packed into one array per dtype, along a last axis after the
    leading axes they share: ``layout`` (static) says where each leaf lies and its shape.

    A loop body's outputs are packed because XLA compiles one dynamic-update-slice kernel per
    output of a loop (each tens of milliseconds on CPU): a report's chunked body has about a
    hundred statistics, which cost half its compile time. The host unpacks (``unpacked``).
    """

    def __init__(self, arrays: tuple[Any, ...], layout: Any):
        self.arrays = tuple(arrays)
        self.layout = layout

    def tree_flatten(self) -> tuple[tuple[Any, ...], Any]:
        return self.arrays, self.layout

    @classmethod
    def tree_unflatten(cls, layout: Any, arrays: Any) -> Packed:
        return cls(arrays, layout)

    @staticmethod
    def pack(tree: Any) -> tuple[tuple[jax.Array, ...], Any]:
        """``(one 1-D array per dtype, layout)`` of a pytree of arrays."""
        leaves, treedef = jax.tree.flatten(tree)
        dtypes = list(dict.fromkeys(jnp.dtype(leaf.dtype) for leaf in leaves))
        offsets, places = [0] * len(dtypes), []
        for leaf in leaves:
            group = dtypes.index(jnp.dtype(leaf.dtype))
            places.append((group, offsets[group], tuple(leaf.shape)))
            offsets[group] += leaf.size
        arrays = tuple(
            jnp.concatenate([leaf.reshape(-1) for leaf in leaves if jnp.dtype(leaf.dtype) == dtype]) for dtype in dtypes
        )
        return arrays, (treedef, tuple(places))

    def unpack(self) -> Any:
        """The pytree, each leaf with the arrays' leading axes in front (NumPy on the host)."""
        treedef, places = self.layout
        leaves = []
        for group, start, shape in places:
            array = self.arrays[group]
            size = int(np.prod(shape, dtype=np.int64))
            leaves.append(array[..., start : start + size].reshape(*array.shape[:-1], *shape))
        return jax.tree.unflatten(treedef, leaves)


def unpacked(tree: Any) -> Any:
    """``tree`` on the host with every ``Packed`` node replaced by the pytree it holds, and every
    ``Grouped`` node by its parts."""

    def restore(node: Any) -> Any:
        if isinstance(node, Packed):
            return unpacked(node.unpack())
        return node.parts() if isinstance(node, Grouped) else node

    return jax.tree.map(restore, tree, is_leaf=lambda n: isinstance(n, Packed | Grouped))


def _mapped(fn: Callable[[Any], Any], xs: jax.Array, batch_size: int) -> Packed:
    """``lax.map(fn, xs, batch_size=...)`` with the body's outputs packed (see ``Packed``)."""
    layouts = []

    def body(value: Any) -> tuple[jax.Array, ...]:
        arrays, layout = Packed.pack(fn(value))
        layouts.append(layout)
        return arrays

    arrays = lax.map(body, xs, batch_size=batch_size)
    return Packed(arrays, layouts[-1])


def _part_stats(got: jax.Array, want: jax.Array, n: int, act: Any) -> dict[str, Any]:
    stats = element_stats(got, want, n)
    stats["map"] = error_map(got, want, batched([want], n), bool(getattr(act, "channels_first", False)))
    return stats


@jax.tree_util.register_pytree_node_class
class Grouped:
    """Per-leaf statistics measured stacked, one entry per group of equal leaves (see
    ``leaf_groups``): ``stacked`` holds arrays with a member axis after the element axis.

    Kept stacked to the host, which splits them (``parts``): splitting inside the program would
    cost XLA a slice kernel per statistic and leaf.
    """

    def __init__(self, groups: tuple[dict[str, Any], ...], members: tuple[tuple[int, ...], ...]):
        self.groups = tuple(groups)
        self.members = members

    def tree_flatten(self) -> tuple[tuple[dict[str, Any], ...], Any]:
        return self.groups, self.members

    @classmethod
    def tree_unflatten(cls, members: Any, groups: Any) -> Grouped:
        return cls(groups, members)

    def parts(self) -> tuple[dict[str, Any], ...]:
        """One statistics dict per leaf, in leaf order (arrays with the element axis first)."""
        parts: list[Any] = [None] * sum(len(m) for m in self.members)
        for group, members in zip(self.groups, self.members, strict=True):
            for k, i in enumerate(members):
                stats = {key: None if v is None else v[:, k] for key, v in group["stacked"].items()}
                parts[i] = {**stats, "defined": group["defined"]}
        return tuple(parts)


def _grouped_parts(
    groups: list[tuple[Any, list[int]]], g: jax.Array, got: list[Any], base: list[Any], in_defined: Any, n: int
) -> Grouped:
    """Per-leaf statistics and error maps, each group of equal leaves moved and measured stacked."""
    measured = []
    for act, members in groups:
        stacked = jnp.stack([base[i] for i in members])
        want = jax.vmap(lambda leaf, act=act: _acting(act, g, leaf, "out_action"))(stacked)
        same_layout(stacked, want, "out_action(g, f(x))", "f(x) has")
        stats = jax.vmap(lambda a, b, act=act: _part_stats(a, b, n, act))(jnp.stack([got[i] for i in members]), want)
        measured.append({"stacked": stats, "defined": in_defined & actions_lib.is_defined(act, g)})
    return Grouped(tuple(measured), tuple(tuple(members) for _, members in groups))


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

        groups = leaf_groups(self.out_action, y) if self.each_output else None

        def one(g: jax.Array, y_g: Any = None) -> Any:
            if y_g is None:
                y_g = self.fn(params, self._input(g, x))
            in_defined = actions_lib.is_defined(self.in_action, g)
            if groups is not None:
                return _grouped_parts(groups, g, jax.tree.leaves(y_g), jax.tree.leaves(y), in_defined, n)
            target = _acting(self.out_action, g, y, "out_action")
            same_layout(y, target, "out_action(g, f(x))", "f(x) has")
            if not self.each_output:
                stats = element_stats(y_g, target, n)
                stats["defined"] = in_defined & actions_lib.is_defined(self.out_action, g)
                return (stats,)
            parts = []
            for a, b, (act, _) in zip(
                jax.tree.leaves(y_g), jax.tree.leaves(target), _part_actions(self.out_action, y), strict=True
            ):
                stats = _part_stats(a, b, n, act)
                stats["defined"] = in_defined & actions_lib.is_defined(act, g)
                parts.append(stats)
            return tuple(parts)

        def run(part: jax.Array) -> Any:
            if self.chunk_size is None or self.chunk_size >= part.shape[0]:
                return jax.vmap(one)(part)
            return _mapped(one, part, self.chunk_size)

        if together:
            stats = {"parts": jax.vmap(one)(elements, y_all)}
        elif self.shards == 1:
            stats = {"parts": run(elements)}
        else:  # one part per device: the partitioner splits the outer axis, each device maps its part
            parts = elements.reshape(self.shards, -1, *elements.shape[1:])
            stats = {"parts": jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), jax.vmap(run)(parts))}
        stats["x_finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(x)]))
        leaves = jax.tree.leaves(y)
        finite = [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]
        stats["y_finite"] = jnp.stack(finite) if self.each_output else jnp.all(jnp.stack(finite))[None]
        return y, stats
