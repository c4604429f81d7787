"""Groups as data: a stacked array of elements with labels, composition and inverse.

Built-in *planar* groups (translations of a torus, 90° rotations, flips, D4, p4, p4m) share one
element encoding, a length-4 integer vector ``(dy, dx, k, m)`` meaning

    g · x = roll(rot90(flip(x, m), k), (dy, dx))

on the spatial axes (1, 2) of an NHWC array: first mirror the width axis if ``m == 1``, then rotate
by ``k`` quarter turns counter-clockwise (``jnp.rot90(x, k, axes=(1, 2))``), then shift
circularly by ``dy`` rows and ``dx`` columns (``jnp.roll``). Because every built-in uses this one
encoding, one image action (``equivax.actions.image``) serves them all, and a traced element
can be composed, inverted and applied without Python branches.

User groups come from ``finite``: any stack of element arrays with a composition function
(matrix product by default); closure, identity and inverses are derived and validated from the
Cayley table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Group",
    "basic_elements",
    "dihedral",
    "finite",
    "flips",
    "p4",
    "p4m",
    "rotations",
    "translations",
]

Element = Any  # a (d,) array; traced inside checks

#: The point groups of the planar encoding, as ordered tuples of (k, m). The order fixes the
#: orientation axis of group feature maps: index ``k + 4 m`` for D4, ``k`` for C4.
POINT_TRIVIAL = ((0, 0),)
POINT_C4 = ((0, 0), (1, 0), (2, 0), (3, 0))
POINT_FLIPS = ((0, 0), (0, 1))
POINT_D4 = (*POINT_C4, (0, 1), (1, 1), (2, 1), (3, 1))


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class Group:
    """A finite group whose elements are rows of one array, so a check can ``vmap`` over them.

    Attributes:
      name: human-readable name, e.g. ``"p4(28x28)"``.
      elements: ``(|G|, d)`` array (NumPy, so host-side lookups cost no device transfer; JAX takes
        it as it is); row ``i`` is element ``i``. The identity is row 0 for built-ins.
      labels: one label per element, for humans and reports only (``"r1"``, ``"shift(0,1)·m"``).
      identity: the ``(d,)`` identity element.
      shape: ``(H, W)`` of the images the group acts on, or ``None`` when it fits any image
        (point groups). Translations are taken modulo this shape.
      point_group: for planar groups, the ordered ``(k, m)`` pairs of the rotation/flip part; it
        fixes the orientation axis of the regular action. ``None`` for user groups.
      image_action: the group's natural action on NHWC images, used when ``check`` is given no
        action; ``None`` when the group has none (then pass actions explicitly).
      resampling_tolerance: for sampled continuous families acting by interpolation (not exactly a
        group action on a pixel grid): the relative error up to which ``check`` calls a structural
        error ``"approximate"`` instead of ``"broken"``. ``None`` for exact actions.
    """

    name: str
    elements: np.ndarray
    labels: tuple[str, ...]
    identity: np.ndarray
    compose_fn: Callable[[Element, Element], Element]
    inverse_fn: Callable[[Element], Element]
    shape: tuple[int, int] | None = None
    point_group: tuple[tuple[int, int], ...] | None = None
    image_action: Callable[[Element, jax.Array], jax.Array] | None = None
    resampling_tolerance: float | None = None

    # -- pytree: the elements are the data; everything else is static structure ----------------
    def tree_flatten(self):
        aux = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "elements"}
        return (self.elements,), tuple(sorted(aux.items()))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(elements=children[0], **dict(aux))

    # -- group operations (traceable, on single elements; vmap for batches) --------------------
    def compose(self, g: Element, h: Element) -> Element:
        """Return ``g · h`` (apply ``h`` first, then ``g``)."""
        return self.compose_fn(g, h)

    def inverse(self, g: Element) -> Element:
        """Return ``g⁻¹``."""
        return self.inverse_fn(g)

    def __len__(self) -> int:
        return int(self.elements.shape[0])

    def __repr__(self) -> str:
        return f"Group({self.name}, |G|={len(self)})"

    # -- host-side helpers -----------------------------------------------------------------------
    @functools.cached_property
    def _positions(self) -> dict[bytes, int]:
        table = np.asarray(self.elements)
        return {row.tobytes(): i for i, row in reversed(list(enumerate(table)))}

    def index(self, g: Element) -> int:
        """Index of element ``g`` (a concrete array), or raise ``ValueError`` if it is not in the group."""
        table = np.asarray(self.elements)
        g = np.asarray(g)
        if g.shape != table.shape[1:]:
            raise ValueError(
                f"element {g.tolist()} has shape {g.shape}, but elements of {self.name} have shape "
                f"{table.shape[1:]}; draw elements from group.elements"
            )
        position = self._positions.get(g.astype(table.dtype).tobytes())
        if position is None or not np.array_equal(table[position], g):
            raise ValueError(
                f"element {g.tolist()} is not in {self.name}; pick one of group.elements "
                f"(e.g. {table[min(1, len(table) - 1)].tolist()})"
            )
        return position

    def label(self, g: Element) -> str:
        """Label of a concrete element."""
        return self.labels[self.index(g)]

    def non_identity(self) -> np.ndarray:
        """All elements except the identity, in order."""
        table = np.asarray(self.elements)
        return table[np.arange(len(table)) != self.index(self.identity)]

    @property
    def has_rotations(self) -> bool:
        """True when some element turns the image by a quarter turn (so images must be square)."""
        return self.point_group is not None and any(k % 2 for k, _ in self.point_group)


# ------------------------------------------------------------------------------------------------
# Planar groups: elements (dy, dx, k, m); see the module docstring.
# ------------------------------------------------------------------------------------------------


def rotate_vector(k, m, v):
    """Apply the linear part ``A^k M^m`` to a displacement ``v = (dy, dx)`` (integers, traceable).

    ``M`` mirrors the width axis, ``(dy, dx) -> (dy, -dx)``; ``A`` is the quarter turn of
    ``jnp.rot90(..., axes=(1, 2))``, which moves a displacement ``(dy, dx)`` to ``(-dx, dy)``.
    """
    dy, dx = v[0], jnp.where(m == 1, -v[1], v[1])
    k = k % 4
    ry = jnp.select([k == 0, k == 1, k == 2], [dy, -dx, -dy], dx)
    rx = jnp.select([k == 0, k == 1, k == 2], [dx, dy, -dx], -dy)
    return jnp.stack([ry, rx])


@dataclasses.dataclass(frozen=True)
class _PlanarLaw:
    """Composition and inverse of planar elements, translations taken modulo ``shape``."""

    shape: tuple[int, int] | None

    def _wrap(self, t):
        if self.shape is None:
            return jnp.zeros_like(t)
        return t % jnp.asarray(self.shape, dtype=t.dtype)

    def compose(self, g, h):
        g, h = jnp.asarray(g), jnp.asarray(h)
        k = (g[2] + (1 - 2 * g[3]) * h[2]) % 4
        m = (g[3] + h[3]) % 2
        t = self._wrap(g[:2] + rotate_vector(g[2], g[3], h[:2]))
        return jnp.concatenate([t, jnp.stack([k, m])]).astype(g.dtype)

    def inverse(self, g):
        g = jnp.asarray(g)
        k = ((2 * g[3] - 1) * g[2]) % 4
        m = g[3]
        t = self._wrap(-rotate_vector(k, m, g[:2]))
        return jnp.concatenate([t, jnp.stack([k, m])]).astype(g.dtype)


def _signed(t: int, n: int) -> int:
    """Shift ``t`` modulo ``n`` written in ``(-n/2, n/2]`` for labels."""
    t = t % n
    return t - n if t > n // 2 else t


def _planar_label(g: np.ndarray, shape: tuple[int, int] | None) -> str:
    dy, dx, k, m = (int(v) for v in g)
    parts = []
    if shape is not None and (dy or dx):
        parts.append(f"shift({_signed(dy, shape[0])},{_signed(dx, shape[1])})")
    if k:
        parts.append(f"r{k}")
    if m:
        parts.append("m")
    return "·".join(parts) or "e"


def _check_size(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer image size, got {value!r}")
    return int(value)


def _planar(
    name: str,
    shifts: np.ndarray,
    points: tuple[tuple[int, int], ...],
    shape: tuple[int, int] | None,
) -> Group:
    from equivax.actions import image  # actions depend on the encoding defined here

    rows = [(dy, dx, k, m) for dy, dx in shifts for k, m in points]
    elements = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
    law = _PlanarLaw(shape)
    return Group(
        name=name,
        elements=elements,
        labels=tuple(_planar_label(g, shape) for g in elements),
        identity=np.zeros(4, dtype=np.int32),
        compose_fn=law.compose,
        inverse_fn=law.inverse,
        shape=shape,
        point_group=points,
        image_action=image(),
    )


def _all_shifts(h: int, w: int) -> np.ndarray:
    return np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)


def _shift_list(h: int, w: int, shifts: Sequence[Sequence[int]]) -> np.ndarray:
    out = []
    for s in shifts:
        s = tuple(int(v) for v in np.asarray(s).reshape(-1))
        if len(s) != 2:
            raise ValueError(f"each shift must be a pair (dy, dx), got {s}")
        if not (-h < s[0] < h and -w < s[1] < w):
            raise ValueError(f"shift {s} does not fit a {h}x{w} image: use shifts with |dy| < {h} and |dx| < {w}")
        out.append((s[0] % h, s[1] % w))
    if (0, 0) not in out:
        out.insert(0, (0, 0))
    return np.asarray(sorted(set(out), key=out.index), dtype=np.int32).reshape(-1, 2)


def translations(
    h: int,
    w: int | None = None,
    *,
    shifts: Sequence[Sequence[int]] | None = None,
    stride: int | tuple[int, int] | None = None,
) -> Group:
    """Circular translations of an ``h × w`` image (the torus ``Z_h × Z_w``).

    Args:
      h, w: image height and width (``w`` defaults to ``h``). Checks refuse images of another size.
      shifts: optional list of ``(dy, dx)`` shifts to keep (negative values allowed); the identity
        is added. The list need not be closed; use ``stride`` for a true subgroup.
      stride: keep the sub-lattice of shifts that are multiples of ``stride`` (an int or a pair);
        it must divide the image size.

    Returns:
      The group; elements ``(dy, dx, 0, 0)`` with the identity first.

    Examples:
      >>> import equivax
      >>> g = equivax.groups.translations(4, stride=2)
      >>> g.labels
      ('e', 'shift(0,2)', 'shift(2,0)', 'shift(2,2)')
    """
    h = _check_size("h", h)
    w = h if w is None else _check_size("w", w)
    if shifts is not None and stride is not None:
        raise ValueError("pass either shifts or stride, not both")
    if stride is not None:
        sy, sx = (stride, stride) if np.isscalar(stride) else tuple(stride)
        if sy < 1 or sx < 1 or h % sy or w % sx:
            raise ValueError(f"stride {stride} must divide the image size {h}x{w} to give a subgroup of shifts")
        table = _all_shifts(h // sy, w // sx) * np.asarray([sy, sx])
        name = f"translations({h}x{w}, stride={stride})"
    elif shifts is not None:
        table = _shift_list(h, w, shifts)
        name = f"translations({h}x{w}, {len(table)} shifts)"
    else:
        table = _all_shifts(h, w)
        name = f"translations({h}x{w})"
    return _planar(name, table, POINT_TRIVIAL, (h, w))


def rotations() -> Group:
    """C4: rotations by multiples of 90° about the image centre (counter-clockwise, as ``jnp.rot90``)."""
    return _planar("C4", np.zeros((1, 2), np.int32), POINT_C4, None)


def flips() -> Group:
    """The mirror of the width axis (``jnp.flip(x, axis=2)``) and the identity."""
    return _planar("flips", np.zeros((1, 2), np.int32), POINT_FLIPS, None)


def dihedral() -> Group:
    """D4: the 8 symmetries of the square, elements ``r^k m^m`` (mirror first, then rotate)."""
    return _planar("D4", np.zeros((1, 2), np.int32), POINT_D4, None)


def _square(name: str, h: int, w: int | None) -> tuple[int, int]:
    h = _check_size("h", h)
    w = h if w is None else _check_size("w", w)
    if h != w:
        raise ValueError(
            f"{name} rotates images by 90°, which needs a square image, got {h}x{w}: crop or pad to square first"
        )
    return h, w


def p4(h: int, w: int | None = None, *, stride: int | None = None) -> Group:
    """p4 on an ``h × h`` torus: every circular shift combined with every quarter turn.

    ``stride`` keeps only shifts that are multiples of it (the subgroup a strided network keeps).
    """
    h, w = _square("p4", h, w)
    shifts = translations(h, w, stride=stride).elements[:, :2] if stride else _all_shifts(h, w)
    suffix = f", stride={stride}" if stride else ""
    return _planar(f"p4({h}x{w}{suffix})", np.asarray(shifts), POINT_C4, (h, w))


def p4m(h: int, w: int | None = None, *, stride: int | None = None) -> Group:
    """p4m on an ``h × h`` torus: every circular shift combined with every element of D4."""
    h, w = _square("p4m", h, w)
    shifts = translations(h, w, stride=stride).elements[:, :2] if stride else _all_shifts(h, w)
    suffix = f", stride={stride}" if stride else ""
    return _planar(f"p4m({h}x{w}{suffix})", np.asarray(shifts), POINT_D4, (h, w))


# ------------------------------------------------------------------------------------------------
# User groups
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _TableLaw:
    """Composition by a user function, inverse by lookup in the Cayley table."""

    elements: np.ndarray
    compose_fn: Callable[[Element, Element], Element]
    inverse_index: np.ndarray

    def compose(self, g, h):
        return self.compose_fn(g, h)

    def inverse(self, g):
        table = jnp.asarray(self.elements)
        flat = table.reshape(len(table), -1)
        hit = jnp.all(flat == jnp.reshape(jnp.asarray(g, table.dtype), (1, -1)), axis=1)
        return table[jnp.asarray(self.inverse_index)[jnp.argmax(hit)]]


def _matmul(g, h):
    return jnp.matmul(g, h)


def finite(
    elements: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    name: str = "finite",
    compose: Callable[[Element, Element], Element] | None = None,
    action: Callable[[Element, jax.Array], jax.Array] | None = None,
) -> Group:
    """A user-defined finite group from a list (or stack) of its elements.

    The Cayley table is computed once to validate closure and to find the identity and every
    inverse, so any group with up to a few thousand elements works.

    Args:
      elements: the elements, e.g. permutation or orthogonal matrices, or integer codes.
      labels: one label per element (default ``"g0"``, ``"g1"``, ...).
      name: a name for reports.
      compose: ``compose(g, h) -> g·h`` on single elements, traceable; the default is the matrix
        product, for elements that are square matrices.
      action: the group's natural action on inputs, used when ``check`` is given none.

    Examples:
      >>> import numpy as np, equivax
      >>> swap = np.array([[0, 1], [1, 0]])
      >>> g = equivax.groups.finite([np.eye(2, dtype=int), swap], labels=["e", "swap"])
      >>> len(g), g.label(swap)
      (2, 'swap')
    """
    table = np.stack([np.asarray(e) for e in elements])
    n = len(table)
    if n == 0:
        raise ValueError("a group needs at least one element (the identity)")
    if compose is None:
        if table.ndim != 3 or table.shape[1] != table.shape[2]:
            raise ValueError(
                f"elements of shape {table.shape[1:]} are not square matrices, so the default "
                "composition (matrix product) does not apply: pass compose=..."
            )
        compose = _matmul
    labels = tuple(labels) if labels is not None else tuple(f"g{i}" for i in range(n))
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} elements; give one label per element")
    flat = table.reshape(n, -1)
    if len({row.tobytes() for row in flat}) != n:
        raise ValueError(f"the elements of {name} are not distinct; list each element once")
    products = np.asarray(
        jax.vmap(lambda g: jax.vmap(lambda h: compose(g, h))(jnp.asarray(table)))(jnp.asarray(table))
    ).reshape(n, n, -1)
    cayley = np.full((n, n), -1, dtype=np.int64)
    for i in range(n):
        for j in range(n):
            hit = np.flatnonzero(np.all(np.isclose(flat, products[i, j]), axis=1))
            if hit.size == 0:
                raise ValueError(
                    f"{name} is not closed: {labels[i]}·{labels[j]} = {products[i, j].tolist()} is "
                    "not in the list; add it, or check compose"
                )
            cayley[i, j] = hit[0]
    ident = [e for e in range(n) if np.all(cayley[e] == np.arange(n)) and np.all(cayley[:, e] == np.arange(n))]
    if not ident:
        raise ValueError(f"{name} has no identity element: include it in the list")
    e = ident[0]
    inverse_index = np.asarray(
        [int(np.flatnonzero(cayley[i] == e)[0]) if np.any(cayley[i] == e) else -1 for i in range(n)]
    )
    if np.any(inverse_index < 0):
        missing = labels[int(np.flatnonzero(inverse_index < 0)[0])]
        raise ValueError(f"element {missing} of {name} has no inverse in the list")
    law = _TableLaw(table, compose, inverse_index)
    return Group(
        name=name,
        elements=table,
        labels=labels,
        identity=table[e],
        compose_fn=law.compose,
        inverse_fn=law.inverse,
        shape=None,
        point_group=None,
        image_action=action,
    )


def basic_elements(group: Group, shifts: Sequence[int] = (1, 2)) -> np.ndarray:
    """A small representative set of a large planar group's elements, for reports and demos.

    Pure shifts by each of ``shifts`` along rows, columns and the diagonal (odd and even shifts
    tell aliasing from border effects), plus every rotation or mirror without a shift; only those
    that are members of ``group``, identity excluded. A group that is not planar, or has at most
    16 elements, gives all its non-identity elements.

    Examples:
      >>> import equivax
      >>> g = equivax.groups.p4(28)
      >>> [g.label(e) for e in basic_elements(g, shifts=(1,))]
      ['shift(0,1)', 'shift(1,0)', 'shift(1,1)', 'r1', 'r2', 'r3']
    """
    if group.point_group is None or len(group) <= 16:
        return group.non_identity()
    wanted = list(dict.fromkeys(e for s in shifts for e in ((0, s, 0, 0), (s, 0, 0, 0), (s, s, 0, 0))))
    wanted += [(0, 0, k, m) for k, m in group.point_group if (k, m) != (0, 0)]
    rows = [np.asarray(e, dtype=np.asarray(group.elements).dtype) for e in wanted]
    members = [row for row in rows if row.tobytes() in group._positions]
    if not members:
        return group.non_identity()[:16]
    return np.stack(members)
