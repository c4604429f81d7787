"""Argument validation shared by check, check_outputs, compiled_memory, report and the Lie tools:
one sentence naming the problem and the fix, before anything is traced."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equivax import actions as actions_lib
from equivax.groups import Group

__all__ = [
    "as_action",
    "as_chunk_size",
    "as_elements",
    "as_group",
    "as_images",
    "as_input",
    "as_tolerance",
    "probe_user_action",
]


def as_group(group: Any) -> Group:
    if not isinstance(group, Group):
        raise TypeError(f"group must be an equivax Group (see equivax.groups), got {type(group).__name__}")
    return group


def as_input(x: Any) -> Any:
    """A batch of inputs: one array, or a pytree of arrays sharing the leading batch axis."""
    if isinstance(x, jax.Array | np.ndarray) or np.isscalar(x):
        x = jnp.asarray(x)
        _numeric("x", x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"x must have a leading batch axis with at least one example, got shape {x.shape}")
        return x
    paths = jax.tree_util.tree_flatten_with_path(x)[0]
    if not paths:
        raise ValueError(f"x is an empty {type(x).__name__}; pass an array or a pytree of arrays")
    leaves = []
    for path, leaf in paths:
        name = f"x{jax.tree_util.keystr(path)}"
        if not isinstance(leaf, jax.Array | np.ndarray | numbers.Number):
            raise TypeError(f"{name} is a {type(leaf).__name__}; every leaf of x must be an array")
        leaf = jnp.asarray(leaf)
        _numeric(name, leaf)
        if leaf.ndim < 1 or leaf.shape[0] == 0:
            raise ValueError(f"{name} has shape {leaf.shape}; every leaf of x needs a leading batch axis")
        leaves.append((name, leaf))
    n = leaves[0][1].shape[0]
    for name, leaf in leaves:
        if leaf.shape[0] != n:
            raise ValueError(
                f"{name} has {leaf.shape[0]} examples but {leaves[0][0]} has {n}: every leaf of x needs the same "
                "batch axis first"
            )
    return jax.tree.unflatten(jax.tree.structure(x), [leaf for _, leaf in leaves])


def _numeric(name: str, x: jax.Array) -> None:
    """Floating, integer (token ids, indices) or boolean (masks) inputs; anything else in one line.
    Integer inputs are moved by the action exactly; f's floating outputs are what is measured."""
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_) or jnp.issubdtype(
        x.dtype, jax.dtypes.extended
    ):
        raise TypeError(f"{name} has dtype {x.dtype}; pass numeric inputs (floats, or integer ids and indices)")


def as_images(x: Any) -> jax.Array:
    """A floating, finite batch of NHWC images; a one-line error otherwise (no silent NaN)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x has dtype {x.dtype}; pass floating images, e.g. x.astype(jnp.float32)")
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a batch of NHWC images (N, H, W, C) with N >= 1, got shape {x.shape}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or inf; take Lie derivatives at finite inputs")
    return x


def as_action(action: Any, group: Group, which: str) -> Any:
    if action is None:
        if group.image_action is None:
            raise ValueError(f"{group.name} has no natural image action; pass {which}=your_action(g, x)")
        return group.image_action
    if isinstance(action, tuple | list | dict):
        return actions_lib.tree(action)
    if not callable(action):
        raise TypeError(f"{which} must be a callable act(g, x) or a pytree of them, got {action!r}")
    _takes_g_and_x(action, which)
    return action


def _takes_g_and_x(action: Any, which: str) -> None:
    """A one-line error for an action that cannot be called as ``act(g, x)``: most often a factory
    passed uncalled (``actions.trivial`` for ``actions.trivial()``)."""
    try:
        signature = inspect.signature(action)
    except (TypeError, ValueError):  # builtins and C callables: let the call decide
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(action, "__qualname__", type(action).__name__)
        module = getattr(action, "__module__", "") or ""
        if module.startswith("equivax.") and not any(
            p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in signature.parameters.values()
        ):
            public = module.replace("equivax._representations", "equivax.fields").removeprefix("equivax.")
            raise TypeError(
                f"{which} is the factory {public}.{name} itself, not an action: call it, {public}.{name}(...)"
            ) from None
        raise TypeError(f"{which} {name}{signature} cannot be called as act(g, x); an action takes (g, x)") from None


def as_tolerance(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite non-negative number or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return float(value)


def as_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


_PROBED: set[Any] = set()


def probe_user_action(action: Any, group: Group, x: Any, role: str) -> None:
    """The homomorphism probe (``actions.probe``) for an action equivax did not build, once per
    (action, group, shape): an action that ignores g, or applies g twice, is named in one line."""
    leaves = action.leaves if isinstance(action, actions_lib.TreeAction) else (action,)
    if all(getattr(leaf, "validate", None) is not None for leaf in leaves):
        return  # built-in actions are tested against the group laws in the test suite
    example = jax.tree.map(lambda leaf: leaf[:1], x)
    shape = jax.tree.map(lambda leaf: (leaf.shape, str(leaf.dtype)), example)
    try:
        key = (action, group.name, len(group), str(shape))
        hash(key)
    except TypeError:
        key = (id(action), group.name, len(group), str(shape))
    if key in _PROBED:
        return
    actions_lib.probe(action, group, example, role=role)
    _PROBED.add(key)


def as_elements(group: Group, elements: Sequence[Any] | None) -> np.ndarray:
    if elements is None:
        chosen = group.non_identity()
        if chosen.shape[0] == 0:
            raise ValueError(f"{group.name} has only the identity: nothing to check")
        return chosen
    if isinstance(elements, str) or not hasattr(elements, "__iter__"):
        raise TypeError(f"elements must be a list of group elements or None, got {elements!r}")
    rows = [np.asarray(e) for e in elements]
    if not rows:
        raise ValueError("elements is empty; pass at least one group element, or None for all")
    for row in rows:
        group.index(row)  # raises a clear error for non-members
    return np.stack(rows).astype(np.asarray(group.elements).dtype)
