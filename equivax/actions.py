"""Actions: pure functions ``act(g, x) -> x`` that accept a traced group element.

An action is any callable with that signature; one ``jax.vmap`` over the elements of a group then
transforms a whole batch of inputs at once. The built-ins below act on arrays laid out as NHWC
images (spatial axes 1 and 2) or as ``(N, H, W, |K|, C)`` group feature maps, with planar elements
``(dy, dx, k, m)`` as described in ``equivax.groups``.

An action may also define ``defined(g) -> bool`` (traceable). Elements for which it is false lie
outside the subgroup the action can represent (a 1-pixel shift after a stride-2 layer); a check
marks them ``"broken"`` with that reason instead of rounding the shift.

Every built-in is a frozen dataclass, so two equal constructions hash alike and a check compiled
for one is reused for the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equivax.groups import Group, rotate_vector

__all__ = [
    "Action",
    "ImageAction",
    "RegularAction",
    "TreeAction",
    "TrivialAction",
    "image",
    "is_defined",
    "regular",
    "strided",
    "tree",
    "trivial",
]

#: The interface: ``act(g, x) -> x``, traceable in both arguments.
Action = Callable[[Any, Any], Any]

OUTSIDE_STRIDE = (
    "outside the subgroup the output action represents (a shift its stride drops, or a turn or mirror "
    "its orientation axis lacks)"
)


def _source_pixels(g: jax.Array, height: int, width: int, stride: int) -> tuple[jax.Array, jax.Array]:
    """Row and column indices ``q = g⁻¹ · p`` for every output pixel ``p`` (integer arithmetic).

    Positions are handled in doubled, centred coordinates ``2p - (n - 1)`` so that the quarter
    turn about the array centre stays integral for both even and odd sizes.
    """
    g = jnp.asarray(g).astype(jnp.int32)
    dy, dx, k, m = g[0] // stride, g[1] // stride, g[2], g[3]
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    # Undo the translation, then the linear part L = A^k M^m, whose inverse is A^k' M^m.
    u = jnp.stack([(rows - dy) % height * 2 - (height - 1), (cols - dx) % width * 2 - (width - 1)])
    k_inv = ((2 * m - 1) * k) % 4
    q = rotate_vector(k_inv, m, u)
    return (q[0] + (height - 1)) // 2, (q[1] + (width - 1)) // 2


def _check_spatial(x: jax.Array, name: str, min_ndim: int) -> None:
    if x.ndim < min_ndim:
        raise ValueError(
            f"the {name} action expects an array with spatial axes 1 and 2 "
            f"({'N, H, W, |K|, C' if min_ndim == 5 else 'N, H, W, C'}), got shape {x.shape}"
        )


def _check_stride(stride: int) -> int:
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    return int(stride)


@dataclasses.dataclass(frozen=True)
class ImageAction:
    """Shifts, quarter turns and mirrors of the spatial axes (1, 2); shifts divided by ``stride``."""

    stride: int = 1

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        _check_spatial(x, "image", 3)
        rows, cols = _source_pixels(g, x.shape[1], x.shape[2], self.stride)
        return x[:, rows, cols]

    def defined(self, g: jax.Array) -> jax.Array:
        g = jnp.asarray(g)
        return (g[0] % self.stride == 0) & (g[1] % self.stride == 0)


def image(stride: int = 1) -> ImageAction:
    """The natural action of a planar group on NHWC images.

    With ``stride = s`` the action is the one carried by an output subsampled by ``s``: a shift by
    ``t`` acts as a shift by ``t / s``, and shifts not divisible by ``s`` are outside its domain.

    Examples:
      >>> import jax.numpy as jnp, equivax
      >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
      >>> act = equivax.actions.image()
      >>> bool(jnp.all(act(jnp.array([0, 0, 1, 0]), x) == jnp.rot90(x, 1, axes=(1, 2))))
      True
    """
    return ImageAction(_check_stride(stride))


def strided(stride: int) -> ImageAction:
    """The image action on an output subsampled by ``stride`` (``image(stride=stride)``)."""
    return image(stride)


def _point_lookup(points: tuple[tuple[int, int], ...]) -> np.ndarray:
    table = np.full((4, 2), -1, dtype=np.int32)
    for i, (k, m) in enumerate(points):
        table[k, m] = i
    return table


@dataclasses.dataclass(frozen=True)
class RegularAction:
    """Spatial transform of axes (1, 2) plus the regular permutation of the orientation axis 3."""

    points: tuple[tuple[int, int], ...]
    stride: int = 1
    name: str = "regular"

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        _check_spatial(x, f"{self.name} regular", 5)
        if x.shape[3] != len(self.points):
            raise ValueError(
                f"the regular action of {self.name} expects group feature maps (N, H, W, "
                f"{len(self.points)}, C) with the orientation axis at position 3, got shape {x.shape}"
            )
        g = jnp.asarray(g).astype(jnp.int32)
        rows, cols = _source_pixels(g, x.shape[1], x.shape[2], self.stride)
        # Orientation h goes to g·h, so output h reads input g⁻¹·h.
        k_inv, m = ((2 * g[3] - 1) * g[2]) % 4, g[3]
        pts = jnp.asarray(self.points, dtype=jnp.int32)
        k_src = (k_inv + (1 - 2 * m) * pts[:, 0]) % 4
        m_src = (m + pts[:, 1]) % 2
        perm = jnp.asarray(_point_lookup(self.points))[k_src, m_src]
        return jnp.take(x[:, rows, cols], perm, axis=3)

    def defined(self, g: jax.Array) -> jax.Array:
        g = jnp.asarray(g).astype(jnp.int32)
        has_point = jnp.asarray(_point_lookup(self.points))[g[2] % 4, g[3] % 2] >= 0
        return ImageAction(self.stride).defined(g) & has_point


def regular(group: Group, stride: int = 1) -> RegularAction:
    """The regular action of a planar group on ``(N, H, W, |K|, C)`` group feature maps.

    The orientation axis has one entry per element of the group's point group ``K`` (4 for C4/p4,
    8 for D4/p4m, index ``k + 4 m``); an element ``g`` moves entry ``h`` to ``g·h`` while the
    spatial axes are transformed as by ``image``.
    """
    if group.point_group is None:
        raise ValueError(
            f"{group.name} has no point group, so it has no regular action on feature maps; pass your own action(g, x)"
        )
    return RegularAction(group.point_group, _check_stride(stride), group.name)


@dataclasses.dataclass(frozen=True)
class TrivialAction:
    """Leaves its input unchanged: use as the output action to check invariance."""

    def __call__(self, g: Any, x: Any) -> Any:
        return x


def trivial() -> TrivialAction:
    """The trivial action ``x -> x``: ``f(g·x) = f(x)`` is invariance."""
    return TrivialAction()


@dataclasses.dataclass(frozen=True)
class TreeAction:
    """One action per leaf of a pytree output (the structure may stop above the arrays)."""

    treedef: Any
    leaves: tuple[Any, ...]

    def __call__(self, g: Any, y: Any) -> Any:
        actions = jax.tree.unflatten(self.treedef, self.leaves)
        return jax.tree.map(lambda act, part: act(g, part), actions, y)

    def defined(self, g: Any) -> jax.Array:
        return jnp.all(jnp.stack([is_defined(a, g) for a in self.leaves]))


def tree(actions: Any) -> TreeAction:
    """Combine actions for a pytree output, e.g. ``tree((image(), trivial()))`` for
    ``f(x) = (features, logits)``; the structure must be a prefix of the output's."""
    leaves, treedef = jax.tree.flatten(actions)
    for leaf in leaves:
        if not callable(leaf):
            raise TypeError(f"every leaf of an action tree must be an action act(g, x), got {leaf!r}")
    return TreeAction(treedef, tuple(leaves))


def is_defined(action: Action, g: Any) -> jax.Array:
    """Whether ``action`` can represent element ``g`` (true unless it says otherwise)."""
    defined = getattr(action, "defined", None)
    return jnp.asarray(True) if defined is None else jnp.asarray(defined(g))
