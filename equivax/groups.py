"""Groups as data: a stacked array of elements with labels, composition and inverse.

Built-in *planar* groups (translations of a torus, 90° rotations, flips, D4, p4, p4m) share one
element encoding, a length-4 integer vector ``(dy, dx, k, m)`` meaning

    g · x = roll(rot90(flip(x, m), k), (dy, dx))

on the spatial axes (1, 2) of an NHWC array: first mirror the width axis if ``m == 1``, then rotate
by ``k`` quarter turns counter-clockwise (``jnp.rot90(x, k, axes=(1, 2))``), then shift
circularly by ``dy`` rows and ``dx`` columns (``jnp.roll``). Because every built-in uses this one
encoding, one image action (``equivax.actions.image``) serves them all, and a traced element
can be composed, inverted and applied without Python branches.

The law itself (composition, inverse, labels) lives in ``equivax._planar``, shared with the actions.

User groups come from ``finite``: elements, or generators whose closure is computed, with a
composition (matrix product by default); identity, inverses and labels (shortest words) come from
the Cayley table, computed on the host in the elements' dtype with a dtype-scaled tolerance.

This file holds one concept, the ``Group`` type and the constructors of every built-in family, a
little past the 450-line guide; the machinery behind ``finite`` lives in ``equivax._cayley``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from equivax import _planar
from equivax._cayley import (
    Lookup,
    Products,
    TableLaw,
    cayley_table,
    closure,
    default_tolerance,
    first_of_each,
    flat_rows,
    greedy_generators,
    identity_and_inverses,
    matmul,
    nearest_row,
    reached_from,
    word_labels,
)
from equivax._planar import POINT_C4 as POINT_C4  # re-exported: the point groups and the planar law
from equivax._planar import POINT_D4 as POINT_D4
from equivax._planar import POINT_FLIPS as POINT_FLIPS
from equivax._planar import POINT_TRIVIAL as POINT_TRIVIAL
from equivax._planar import rotate_vector as rotate_vector

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
      resampling_tolerance: deprecated here; it belongs to the interpolating action (read it with
        ``equivax.actions.resampling_tolerance(action)``). Kept, equal to the action's, for the
        sampled continuous families.
      match_tolerance: the largest difference per entry at which a concrete array is taken for an
        element (``index``, ``label``, ``inverse``); ``None`` derives it from the elements' dtype:
        0 for integers, ``sqrt(eps) · max(1, max |element|)`` for floats.
      note: what the group leaves out of the symmetry it stands for (a sampled or truncated
        family); every check on it carries the note.
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
    match_tolerance: float | None = None
    note: str | None = None

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
        """Return ``g⁻¹``; a concrete non-member raises ``ValueError`` (see ``index``).

        Traced elements cannot raise: a traced non-member of a ``finite`` group gives NaN (float
        elements) or the dtype's minimum (integer elements), which no later lookup accepts.
        """
        try:
            concrete = np.asarray(g)
        except jax.errors.TracerArrayConversionError:
            return self.inverse_fn(g)
        self.index(concrete)
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

    @functools.cached_property
    def tolerance(self) -> float:
        """The matching tolerance in use: ``match_tolerance``, or the one derived from the dtype."""
        if self.match_tolerance is not None:
            return float(self.match_tolerance)
        return default_tolerance(np.asarray(self.elements))

    def index(self, g: Element) -> int:
        """Index of element ``g`` (a concrete array), or raise ``ValueError`` if it is not in the group.

        Float elements match within ``tolerance`` (the nearest one wins); others match exactly.
        """
        table = np.asarray(self.elements)
        g = np.asarray(g)
        if g.shape != table.shape[1:]:
            raise ValueError(
                f"element {g.tolist()} has shape {g.shape}, but elements of {self.name} have shape "
                f"{table.shape[1:]}; draw elements from group.elements"
            )
        if self.tolerance > 0:
            position = nearest_row(flat_rows(table), flat_rows(g[None])[0], self.tolerance)
        else:
            position = self._positions.get(g.astype(table.dtype).tobytes())
            if position is not None and not np.array_equal(table[position], g):
                position = None
        if position is None:
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


def _check_size(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer image size, got {value!r}")
    return int(value)


def _planar_group(
    name: str,
    shifts: np.ndarray,
    points: tuple[tuple[int, int], ...],
    shape: tuple[int, int] | None,
) -> Group:
    rows = [(dy, dx, k, m) for dy, dx in shifts for k, m in points]
    elements = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
    law = _planar.PlanarLaw(shape)
    return Group(
        name=name,
        elements=elements,
        labels=tuple(_planar.label(g, shape) for g in elements),
        identity=np.zeros(4, dtype=np.int32),
        compose_fn=law.compose,
        inverse_fn=law.inverse,
        shape=shape,
        point_group=points,
        image_action=_planar.ImageAction(),
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
    return _planar_group(name, table, POINT_TRIVIAL, (h, w))


def rotations() -> Group:
    """C4: rotations by multiples of 90° about the image centre (counter-clockwise, as ``jnp.rot90``)."""
    return _planar_group("C4", np.zeros((1, 2), np.int32), POINT_C4, None)


def flips() -> Group:
    """The mirror of the width axis (``jnp.flip(x, axis=2)``) and the identity."""
    return _planar_group("flips", np.zeros((1, 2), np.int32), POINT_FLIPS, None)


def dihedral() -> Group:
    """D4: the 8 symmetries of the square, elements ``r^k m^m`` (mirror first, then rotate)."""
    return _planar_group("D4", np.zeros((1, 2), np.int32), POINT_D4, None)


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
    return _planar_group(f"p4({h}x{w}{suffix})", np.asarray(shifts), POINT_C4, (h, w))


def p4m(h: int, w: int | None = None, *, stride: int | None = None) -> Group:
    """p4m on an ``h × h`` torus: every circular shift combined with every element of D4."""
    h, w = _square("p4m", h, w)
    shifts = translations(h, w, stride=stride).elements[:, :2] if stride else _all_shifts(h, w)
    suffix = f", stride={stride}" if stride else ""
    return _planar_group(f"p4m({h}x{w}{suffix})", np.asarray(shifts), POINT_D4, (h, w))


def _stack(items: Any, what: str) -> np.ndarray:
    if isinstance(items, np.ndarray):
        table = items
    else:
        items = list(items)
        if not items:
            raise ValueError(f"finite() got an empty list of {what}: pass at least one, e.g. the identity")
        try:
            table = np.stack([np.asarray(e) for e in items])
        except ValueError as err:
            raise ValueError(f"the {what} must all have one shape ({err}); pass arrays of equal shape") from None
    if len(table) == 0:
        raise ValueError(f"finite() got an empty stack of {what}: pass at least one, e.g. the identity")
    if not (np.issubdtype(table.dtype, np.number) or table.dtype == bool):
        raise TypeError(f"the {what} have dtype {table.dtype}; pass numeric arrays (matrices or integer codes)")
    return table


def finite(
    elements: Sequence[Any] | np.ndarray | None = None,
    *,
    generators: Sequence[Any] | Mapping[str, Any] | np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    name: str = "finite",
    compose: Callable[[Element, Element], Element] | None = None,
    action: Callable[[Element, jax.Array], jax.Array] | None = None,
    tolerance: float | None = None,
    max_size: int = 20_000,
) -> Group:
    """A user-defined finite group, from its elements or from generators.

    The Cayley table is computed on the host (CPU), vectorised, in the elements' dtype, to validate
    closure and associativity and to find the identity and every inverse. Float elements (rotation
    matrices, say) are matched within a dtype-scaled tolerance, so products that differ from an
    element by rounding still land on it. Groups of several thousand elements build in seconds.

    Args:
      elements: every element, e.g. permutation or orthogonal matrices, or integer codes. Kept in
        the given order.
      generators: instead of (or besides) ``elements``: elements that generate the group, as a list
        (named ``s1, s2, ...``) or a dict ``{"r": R, "m": M}``. Their closure is computed and ordered
        by shortest word (identity first). Given both, the generators must generate the elements.
      labels: one label per element. By default each element is labelled by its shortest word in
        the generators (``"e"``, ``"r"``, ``"r²"``, ``"r³·m"``); with ``elements`` alone, generators
        ``s1, s2, ...`` are picked in list order, each the first element the earlier ones miss.
      name: a name for reports.
      compose: ``compose(g, h) -> g·h`` on single elements, traceable; the default is the matrix
        product, for elements that are square matrices.
      action: the group's natural action on inputs, used when ``check`` is given none.
      tolerance: the largest difference per entry at which two elements are equal; default
        ``default_tolerance(elements)`` (0 for integers, ``sqrt(eps)`` scaled for floats).
      max_size: the most elements the closure of ``generators`` may reach before it is refused.

    Returns:
      The ``Group``; ``index``, ``label`` and ``inverse`` refuse arrays that are no element.

    Examples:
      >>> import numpy as np, equivax
      >>> r = np.array([[0, -1], [1, 0]])  # a quarter turn
      >>> m = np.array([[1, 0], [0, -1]])  # a mirror
      >>> d4 = equivax.groups.finite(generators={"r": r, "m": m}, name="D4")
      >>> len(d4), d4.labels
      (8, ('e', 'r', 'm', 'r²', 'r·m', 'm·r', 'r³', 'r²·m'))
      >>> swap = np.array([[0, 1], [1, 0]])
      >>> g = equivax.groups.finite([np.eye(2, dtype=int), swap], labels=["e", "swap"])
      >>> len(g), g.label(swap)
      (2, 'swap')
    """
    if elements is None and generators is None:
        raise ValueError("finite() needs its elements or its generators: pass elements=[...] or generators=[...]")
    if isinstance(generators, Mapping):
        names, generators = [str(k) for k in generators], _stack(list(generators.values()), "generators")
    elif generators is not None:
        generators = _stack(generators, "generators")
        names = [f"s{i + 1}" for i in range(len(generators))]
    table = _stack(elements, "elements") if elements is not None else generators
    if compose is None:
        if table.ndim != 3 or table.shape[1] != table.shape[2]:
            raise ValueError(
                f"elements of shape {table.shape[1:]} are not square matrices, so the default "
                "composition (matrix product) does not apply: pass compose=..."
            )
        compose = matmul
    if generators is not None and generators.shape[1:] != table.shape[1:]:
        raise ValueError(f"generators have shape {generators.shape[1:]} but elements {table.shape[1:]}; use one shape")
    if tolerance is not None and not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number ≥ 0, got {tolerance!r}")
    tol = default_tolerance(table) if tolerance is None else float(tolerance)
    products = Products(compose, table[0])
    if elements is None:
        table = closure(products, generators, tol, max_size, name)
    given = tuple(labels) if labels is not None else None
    if given is not None and len(given) != len(table):
        raise ValueError(f"got {len(given)} labels for {len(table)} elements; give one label per element")
    flat = flat_rows(table)
    first = first_of_each(flat, tol)
    if np.any(first != np.arange(len(table))):
        i = int(np.flatnonzero(first != np.arange(len(table)))[0])
        raise ValueError(f"the elements of {name} are not distinct (#{first[i]} and #{i}); list each element once")

    def describe(i: int) -> str:
        return given[i] if given is not None else f"#{i} {np.asarray(table[i]).tolist()}"

    cayley = cayley_table(products, table, tol, describe, name)
    e, inverse = identity_and_inverses(cayley, describe, name)
    if generators is not None:
        gens = Lookup(flat, tol).find(flat_rows(generators))
        if np.any(gens < 0):
            raise ValueError(f"generator {names[int(np.argmax(gens < 0))]} is not an element of {name}; check it")
    else:
        gens = greedy_generators(cayley, e)
        names = [f"s{i + 1}" for i in range(len(gens))]
    order = reached_from(cayley, e, list(gens))
    if len(order) != len(table):
        raise ValueError(
            f"the generators {', '.join(names)} generate {len(order)} of the {len(table)} elements of {name}: add a "
            "generator, or pass labels"
        )
    words = word_labels(cayley, e, list(gens), names)
    if elements is None:  # ordered by shortest word; relabel the table accordingly
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        table, cayley, inverse = table[order], position[cayley[np.ix_(order, order)]], position[inverse[order]]
        words = {int(position[v]): w for v, w in words.items()}
        e = 0
    final = given if given is not None else tuple(words[i] for i in range(len(table)))
    law = TableLaw(table, compose, inverse, tol)
    return Group(
        name=name,
        elements=table,
        labels=final,
        identity=table[e],
        compose_fn=law.compose,
        inverse_fn=law.inverse,
        shape=None,
        point_group=None,
        image_action=action,
        match_tolerance=tol,
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
