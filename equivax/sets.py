"""Permutations of a set axis: Sₙ acting on sets, point clouds and graphs.

An element is a permutation ``g`` of ``range(n)`` stored as an integer array: node ``i`` moves to
position ``g[i]``. On an axis of length ``n`` it acts by

    (g·x)[..., g[i], ...] = x[..., i, ...],   i.e.   (g·x)[j] = x[g⁻¹[j]],

so ``g·h = g[h]`` (apply ``h`` first) and ``act(g·h, x) = act(g, act(h, x))``. Node features
``(N, n, C)`` are permuted on axis 1; an adjacency matrix ``(N, n, n)`` on axes 1 and 2 at once.

Examples:
  >>> import jax.numpy as jnp
  >>> from equivax import sets
  >>> act = sets.permutation(axes=(1,))
  >>> act(jnp.array([1, 2, 0]), jnp.array([[10.0, 20.0, 30.0]])).tolist()   # node 0 moves to position 1
  [[30.0, 10.0, 20.0]]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from equivax.groups import Group

__all__ = ["PermutationAction", "permutation", "sampled_permutations", "symmetric"]

#: The largest n for which ``symmetric(n)`` lists all n! permutations (720 elements).
MAX_FULL = 6


@dataclasses.dataclass(frozen=True)
class _PermutationLaw:
    def compose(self, g, h):
        return jnp.asarray(g)[jnp.asarray(h)]

    def inverse(self, g):
        return jnp.argsort(jnp.asarray(g)).astype(jnp.asarray(g).dtype)


def _cycles(perm: np.ndarray) -> str:
    """Cycle notation, ``(0 1)(2 4 3)``; ``e`` for the identity."""
    seen, out = set(), []
    for start in range(len(perm)):
        if start in seen or perm[start] == start:
            continue
        cycle, i = [], start
        while i not in seen:
            seen.add(i)
            cycle.append(str(i))
            i = int(perm[i])
        out.append("(" + " ".join(cycle) + ")")
    return "".join(out) or "e"


def _group(name: str, table: np.ndarray, note: str | None) -> Group:
    table = np.asarray(table, dtype=np.int32)
    law = _PermutationLaw()
    group = Group(
        name=name,
        elements=table,
        labels=tuple(_cycles(p) for p in table),
        identity=np.arange(table.shape[1], dtype=np.int32),
        compose_fn=law.compose,
        inverse_fn=law.inverse,
        image_action=permutation(axes=(1,)),
    )
    return dataclasses.replace(group, note=note)


def _size(n: Any) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive number of set members (nodes, points), got {n!r}")
    return int(n)


def symmetric(n: int) -> Group:
    """Sₙ: every permutation of ``n`` members (``n ≤ 6``, at most 720 elements), identity first.

    Examples:
      >>> g = symmetric(3)
      >>> len(g), g.labels
      (6, ('e', '(1 2)', '(0 1)', '(0 1 2)', '(0 2 1)', '(0 2)'))
    """
    n = _size(n)
    if n > MAX_FULL:
        raise ValueError(
            f"S_{n} has {math.factorial(n)} elements, too many to check one by one: use "
            f"sets.sampled_permutations({n}, count=...)"
        )
    return _group(f"S{n}", np.asarray(list(itertools.permutations(range(n)))), None)


def sampled_permutations(n: int, count: int = 16, *, seed: int = 0) -> Group:
    """``count`` permutations of ``n`` members: the swap of the first two, a cyclic shift, then random ones.

    The identity is first. A sample of Sₙ, not closed under composition; the group's ``note`` says so.
    """
    n = _size(n)
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive number of permutations, got {count!r}")
    rng = np.random.default_rng(seed)
    rows = [tuple(range(n))]
    if n > 1:
        rows += [(1, 0, *range(2, n)), tuple(np.roll(np.arange(n), 1).tolist())]
    attempts = 0
    while len(rows) < count + 1 and attempts < 100 * count:
        attempts += 1
        candidate = tuple(rng.permutation(n).tolist())
        if candidate not in rows:
            rows.append(candidate)
    rows = list(dict.fromkeys(rows))[: count + 1]
    note = f"{len(rows) - 1} permutations sampled from S_{n} (seed {seed}): a sample, not the whole group"
    return _group(f"sampled S{n}({len(rows) - 1}, seed={seed})", np.asarray(rows), note)


def _is_permutation_group(group: Group) -> bool:
    table = np.asarray(group.elements)
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.integer):
        return False
    return bool(np.all(np.sort(table, axis=1) == np.arange(table.shape[1])))


@dataclasses.dataclass(frozen=True)
class PermutationAction:
    """Permutes the given axes of an array (each of length ``n``) by the same permutation."""

    axes: tuple[int, ...]
    leafwise: ClassVar[bool] = True

    def __call__(self, g: Any, x: Any) -> Any:
        return jax.tree.map(lambda leaf: self._act(g, jnp.asarray(leaf)), x)

    def _act(self, g: Any, x: jax.Array) -> jax.Array:
        g = jnp.asarray(g)
        for axis in self.axes:
            if x.ndim <= axis or x.shape[axis] != g.shape[0]:
                raise ValueError(
                    f"a permutation of {g.shape[0]} members cannot act on axis {axis} of an array of shape {x.shape}"
                )
        source = jnp.argsort(g)  # (g·x)[j] = x[g⁻¹[j]]
        for axis in self.axes:
            x = jnp.take(x, source, axis=axis)
        return x

    def validate(self, group: Group, x: Any, role: str) -> None:
        """Raise a one-line ``ValueError`` when this action cannot act on ``x`` under ``group``."""
        if not _is_permutation_group(group):
            raise ValueError(
                f"{role}: a permutation action needs a group of permutations (sets.symmetric(n)), but the "
                f"elements of {group.name} have shape {np.asarray(group.elements).shape[1:]}"
            )
        n = np.asarray(group.elements).shape[1]
        for path, leaf in jax.tree_util.tree_flatten_with_path(x)[0]:
            shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
            for axis in self.axes:
                if len(shape) <= axis or shape[axis] != n:
                    size = shape[axis] if len(shape) > axis else "no"
                    raise ValueError(
                        f"{role}{jax.tree_util.keystr(path)}: {group.name} permutes {n} members, but axis {axis} "
                        f"of x (shape {shape}) has {size} entries: build the group for {size} members or fix the axes"
                    )


def permutation(axes: int | tuple[int, ...] = (1,)) -> PermutationAction:
    """Permute the set axis (or axes) of an array: ``axes=(1,)`` for node features ``(N, n, C)``,
    ``axes=(1, 2)`` for an adjacency matrix ``(N, n, n)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> adjacency = jnp.array([[[0.0, 1.0], [0.0, 0.0]]])      # an edge 0 -> 1
      >>> permutation(axes=(1, 2))(jnp.array([1, 0]), adjacency).tolist()   # becomes 1 -> 0
      [[[0.0, 0.0], [1.0, 0.0]]]
    """
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    if not axes or any(not isinstance(a, (int, np.integer)) or isinstance(a, bool) or a < 1 for a in axes):
        raise ValueError(f"axes must be set axes after the batch axis (integers >= 1), got {axes!r}")
    return PermutationAction(tuple(int(a) for a in axes))
