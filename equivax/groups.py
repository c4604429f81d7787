"""Groups as data: a stacked array of elements with labels, composition and inverse.

Built-in *planar* groups (translations of a torus, 90° rotations, flips, D4, p4, p4m) share one
element encoding, a length-4 integer vector ``(dy, dx, k, m)`` meaning

    g · x = roll(rot90(flip(x, m), k), (dy, dx))

on the spatial axes (1, 2) of an NHWC array: first mirror the width axis if ``m == 1``, then rotate
by ``k`` quarter turns counter-clockwise (``jnp.rot90(x, k, axes=(1, 2))``), then shift
circularly by ``dy`` rows and ``dx`` columns (``jnp.roll``). Because every built-in uses this one
encoding, one image action (``equivax.actions.image``) serves them all, and a traced element
can be composed, inverted and applied without Python branches.

The law itself (composition, inverse, labels) lives in ``equivax._planar``, shared with the
actions and the layers.

User groups come from ``finite``: a list of elements, or generators whose closure is computed,
with a composition function (matrix product by default); closure, identity, inverses and labels
(shortest words in the generators) are derived from the Cayley table, computed on the host in the
elements' dtype and matched with a dtype-scaled tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equivax import _planar
from equivax._planar import POINT_C4, POINT_D4, POINT_FLIPS, POINT_TRIVIAL, rotate_vector

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

# Re-exported for code that reads the point groups and the planar law from here.
_ = (POINT_C4, POINT_D4, POINT_FLIPS, POINT_TRIVIAL, rotate_vector)


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
            position = _nearest(_flat(table), _flat(g[None])[0], self.tolerance)
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


# ------------------------------------------------------------------------------------------------
# User groups: matching rows with a tolerance, the Cayley table, closure of generators, words
# ------------------------------------------------------------------------------------------------

#: Products are computed in blocks of at most this many numbers (bounds host memory).
_BLOCK = 1 << 22
_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def default_tolerance(elements: np.ndarray) -> float:
    """The tolerance at which two elements are taken to be equal: 0 for exact dtypes, and
    ``sqrt(eps) · max(1, max |element|)`` for floats (3.5e-4 in float32, 1.5e-8 in float64): far above
    the rounding of a few thousand products, far below the spacing of distinct group elements."""
    elements = np.asarray(elements)
    if not np.issubdtype(elements.dtype, np.inexact):
        return 0.0
    scale = max(1.0, float(np.max(np.abs(elements)))) if elements.size else 1.0
    return float(np.sqrt(np.finfo(elements.dtype).eps) * scale)


def _flat(rows: np.ndarray) -> np.ndarray:
    """``(n, ...)`` elements as ``(n, d)`` real rows (float64 for inexact dtypes, int64 otherwise)."""
    rows = np.asarray(rows)
    flat = rows.reshape(len(rows), -1)
    if np.iscomplexobj(flat):
        flat = np.concatenate([flat.real, flat.imag], axis=1)
    return flat.astype(np.float64 if np.issubdtype(flat.dtype, np.inexact) else np.int64)


def _distances(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Max-norm distances ``(len(rows), len(table))``; callers keep the product of the sizes bounded."""
    return np.max(np.abs(rows[:, None, :] - table[None, :, :]), axis=2, initial=0)


def _nearest(table: np.ndarray, row: np.ndarray, tol: float) -> int | None:
    distance = np.max(np.abs(table - row[None]), axis=1, initial=0)
    best = int(np.argmin(distance))
    return best if distance[best] <= tol else None


class _Lookup:
    """Find rows in a table of flat elements within ``tol`` (max-norm), in ``O(log n)`` per row.

    Most rows are found by a hash of their grid cell. For the others, every row is projected on one
    seeded random direction ``u``; a table row within ``tol`` of a query has a projection within
    ``tol · ‖u‖₁`` of the query's, so the sorted projections give a short range of candidates, which
    are then compared entry by entry. Exact and complete.
    """

    def __init__(self, table: np.ndarray, tol: float):
        self.table, self.tol = table, tol
        self.direction = np.random.default_rng(0).standard_normal(table.shape[1])
        self.reach = tol * float(np.sum(np.abs(self.direction))) * (1 + 1e-9)
        projections = table @ self.direction
        self.order = np.argsort(projections, kind="stable")
        self.sorted = projections[self.order]
        # A first guess: rows in the same grid cell (of 8 tol) as an element, found by a sorted hash.
        self.mix = np.random.default_rng(1).integers(1, 2**62, size=table.shape[1]).astype(np.uint64)
        hashes = self._hash(table)
        self.hash_order = np.argsort(hashes, kind="stable")
        self.hash_sorted = hashes[self.hash_order]

    def _hash(self, rows: np.ndarray) -> np.ndarray:
        keys = np.round(rows / (8 * self.tol)) if self.tol > 0 else rows
        return (keys.astype(np.int64).view(np.uint64) * self.mix).sum(axis=1, dtype=np.uint64)

    def find(self, rows: np.ndarray) -> np.ndarray:
        """Index of each row in the table (within ``tol``), -1 where it has none."""
        index = np.full(len(rows), -1)
        if len(self.table) == 0 or len(rows) == 0:
            return index
        hashes = self._hash(rows)
        pos = np.minimum(np.searchsorted(self.hash_sorted, hashes), len(self.hash_sorted) - 1)
        guess = self.hash_order[pos]
        hit = (self.hash_sorted[pos] == hashes) & np.all(np.abs(rows - self.table[guess]) <= self.tol, axis=1)
        index[hit] = guess[hit]
        rest = np.flatnonzero(~hit)
        if rest.size:
            index[rest] = self._search(rows[rest])
        return index

    def _search(self, rows: np.ndarray) -> np.ndarray:
        """The projection search, for rows the hash did not place."""
        index = np.full(len(rows), -1)
        projections = rows @ self.direction
        lo = np.searchsorted(self.sorted, projections - self.reach, side="left")
        hi = np.searchsorted(self.sorted, projections + self.reach, side="right")
        width = int(np.max(hi - lo))
        if width == 0:
            return index
        step = max(1, _BLOCK // (width * rows.shape[1]))
        for start in range(0, len(rows), step):
            part = slice(start, start + step)
            slots = lo[part, None] + np.arange(width)[None, :]
            candidates = self.order[np.minimum(slots, len(self.order) - 1)]
            distance = np.max(np.abs(self.table[candidates] - rows[part, None, :]), axis=2, initial=0)
            distance = np.where(slots < hi[part, None], distance, np.inf)
            best = np.argmin(distance, axis=1)
            ok = distance[np.arange(len(best)), best] <= self.tol
            index[part] = np.where(ok, candidates[np.arange(len(best)), best], -1)
        return index


def _first_of_each(rows: np.ndarray, tol: float) -> np.ndarray:
    """For each row, the index of the first row equal to it within ``tol`` (itself if none earlier)."""
    if tol == 0:
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        return first[inverse.reshape(-1)]
    first = np.empty(len(rows), dtype=np.int64)
    step = max(1, _BLOCK // max(1, rows.size))
    for start in range(0, len(rows), step):
        close = _distances(rows[start : start + step], rows) <= tol
        first[start : start + step] = np.argmax(close, axis=1)
    return first


class _Products:
    """All products ``a_i · b_j`` of two stacks of elements, computed by one compiled, vmapped
    ``compose`` on the CPU, in the elements' dtype (64-bit when they are), block by block."""

    def __init__(self, compose: Callable[[Element, Element], Element], example: np.ndarray):
        self.compose, self.dtype = compose, example.dtype
        self.wide = example.dtype.itemsize >= 8
        self.cpu = jax.devices("cpu")[0]
        with jax.enable_x64(self.wide):
            out = jax.eval_shape(compose, example, example)
        if getattr(out, "shape", None) != example.shape:
            raise ValueError(
                f"compose(g, h) returned {getattr(out, 'shape', type(out).__name__)} for elements of shape "
                f"{example.shape}: it must return one element of the same shape"
            )
        self.table = jax.jit(jax.vmap(jax.vmap(compose, in_axes=(None, 0)), in_axes=(0, None)))
        self.right: tuple[Any, Any] = (None, None)

    def __call__(self, a: np.ndarray, b: np.ndarray, block: int) -> np.ndarray:
        """``(len(a), len(b), ...)`` products, ``a`` in blocks of ``block`` rows, the last one padded, so
        that one compiled program serves every call with the same ``block`` and ``b``."""
        parts = []
        with jax.enable_x64(self.wide), jax.default_device(self.cpu):
            if self.right[0] is not b:
                self.right = (b, jax.device_put(b, self.cpu))
            for start in range(0, len(a), block):
                part = a[start : start + block]
                padded = np.concatenate([part, np.repeat(part[:1], block - len(part), axis=0)])
                parts.append(np.asarray(self.table(padded, self.right[1]))[: len(part)])
        return np.concatenate(parts).astype(self.dtype, copy=False)


def _block(a_rows: int, b: np.ndarray) -> int:
    """Rows of ``a`` per call so that a block of products holds about ``_BLOCK`` numbers."""
    return max(1, min(a_rows, _BLOCK // max(1, b.size)))


def _close(products: _Products, generators: np.ndarray, tol: float, max_size: int, name: str) -> np.ndarray:
    """Every product of the generators: breadth-first, multiplying the newest elements by each generator."""
    flat_gens = _flat(generators)
    table = generators[np.unique(_first_of_each(flat_gens, tol))]
    frontier, block = table, min(64, _block(max_size, generators))
    # Candidates are looked up in an index of the older elements and compared with the newer ones;
    # the index is rebuilt when the newer ones outnumber the older (amortised O(n log n)).
    older, newer = _Lookup(_flat(table), tol), _flat(table)[:0]
    while len(frontier):
        candidates = products(frontier, generators, block).reshape(-1, *generators.shape[1:])
        flat = _flat(candidates)
        fresh = np.flatnonzero(older.find(flat) < 0)
        if fresh.size and len(newer):
            step = max(1, _BLOCK // newer.size)
            seen = [
                np.any(_distances(flat[fresh[i : i + step]], newer) <= tol, axis=1) for i in range(0, fresh.size, step)
            ]
            fresh = fresh[~np.concatenate(seen)]
        if fresh.size:
            fresh = np.sort(fresh[np.unique(_first_of_each(flat[fresh], tol))])
        frontier = candidates[fresh]
        table = np.concatenate([table, frontier])
        newer = np.concatenate([newer, flat[fresh]])
        if len(newer) > len(older.table):
            older, newer = _Lookup(_flat(table), tol), newer[:0]
        if len(table) > max_size:
            raise ValueError(
                f"the generators of {name} have produced more than {max_size} elements without closing: check that "
                "they generate a finite group (a float rotation must be by 2π/n), or raise max_size"
            )
    return table


def _cayley(products: _Products, table: np.ndarray, tol: float, describe: Callable[[int], str], name: str):
    """The Cayley table ``cayley[i, j] = index of table[i] · table[j]``, checked for closure."""
    n = len(table)
    found = _Lookup(_flat(table), tol)
    cayley = np.empty((n, n), dtype=np.int64)
    step = _block(n, table)
    for start in range(0, n, step):
        part = products(table[start : start + step], table, step)
        rows = found.find(_flat(part.reshape(-1, *table.shape[1:]))).reshape(len(part), n)
        if np.any(rows < 0):
            i, j = np.argwhere(rows < 0)[0]
            raise ValueError(
                f"{name} is not closed: {describe(start + i)}·{describe(j)} = {part[i, j].tolist()} is not in the "
                "list; add it, or check compose"
            )
        cayley[start : start + step] = rows
    return cayley


def _identity_and_inverses(cayley: np.ndarray, describe: Callable[[int], str], name: str) -> tuple[int, np.ndarray]:
    n = len(cayley)
    every = np.arange(n)
    identities = np.flatnonzero(np.all(cayley == every, axis=1) & np.all(cayley.T == every, axis=1))
    if identities.size == 0:
        raise ValueError(f"{name} has no identity element: include it in the list")
    e = int(identities[0])
    has_inverse = np.any(cayley == e, axis=1)
    if not np.all(has_inverse):
        missing = describe(int(np.flatnonzero(~has_inverse)[0]))
        raise ValueError(f"element {missing} of {name} has no inverse in the list")
    inverse = np.argmax(cayley == e, axis=1)
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(0, n, size=(3, min(4096, n**3)))
    broken = np.flatnonzero(cayley[cayley[a, b], c] != cayley[a, cayley[b, c]])
    if broken.size:
        i = broken[0]
        a, b, c = describe(a[i]), describe(b[i]), describe(c[i])
        raise ValueError(f"compose is not associative on {name}: ({a}·{b})·{c} ≠ {a}·({b}·{c}); check compose")
    return e, inverse


def _reached(cayley: np.ndarray, e: int, generators: Sequence[int]) -> list[int]:
    """Elements in breadth-first order of their shortest words in ``generators`` (identity first)."""
    order, seen = [e], {e}
    for w in order:
        for s in generators:
            v = int(cayley[w, s])
            if v not in seen:
                seen.add(v)
                order.append(v)
    return order


def _greedy_generators(cayley: np.ndarray, e: int) -> list[int]:
    """Generators picked in list order: each element not yet generated by the earlier picks."""
    chosen: list[int] = []
    reached = {e}
    for i in range(len(cayley)):
        if i not in reached:
            chosen.append(i)
            reached = set(_reached(cayley, e, chosen))
    return chosen


def _word(runs: tuple[tuple[str, int], ...]) -> str:
    """``(("r", 3), ("m", 1))`` → ``"r³·m"``; the empty word is ``"e"``."""
    return (
        "·".join(f"{letter}{str(power).translate(_SUPERSCRIPTS) if power > 1 else ''}" for letter, power in runs) or "e"
    )


def _words(cayley: np.ndarray, e: int, generators: Sequence[int], names: Sequence[str]) -> dict[int, str]:
    """The shortest word of every element (ties: generators in order), breadth first from the identity."""
    words: dict[int, tuple[tuple[str, int], ...]] = {e: ()}
    for w in _reached(cayley, e, generators):
        for s, letter in zip(generators, names, strict=True):
            v = int(cayley[w, s])
            if v not in words:
                runs = words[w]
                if runs and runs[-1][0] == letter:
                    words[v] = (*runs[:-1], (letter, runs[-1][1] + 1))
                else:
                    words[v] = (*runs, (letter, 1))
    return {v: _word(runs) for v, runs in words.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class _TableLaw:
    """Composition by a user function; inverse by looking the element up (within ``tol``)."""

    elements: np.ndarray
    compose_fn: Callable[[Element, Element], Element]
    inverse_index: np.ndarray
    tol: float

    def compose(self, g, h):
        return self.compose_fn(g, h)

    def inverse(self, g):
        table = jnp.asarray(self.elements)
        flat = table.reshape(len(table), -1)
        row = jnp.reshape(jnp.asarray(g, table.dtype), (1, -1))
        # Without x64, float64 elements are traced in float32: match at the coarser of the two tolerances.
        tol = max(self.tol, default_tolerance(np.asarray(self.elements).astype(table.dtype)))
        if tol > 0:
            distance = jnp.max(jnp.abs(flat - row), axis=1)
            i = jnp.argmin(distance)
            member = distance[i] <= tol
        else:
            differs = jnp.any(flat != row, axis=1)
            i = jnp.argmin(differs)
            member = ~differs[i]
        found = table[jnp.asarray(self.inverse_index)[i]]
        if jnp.issubdtype(table.dtype, jnp.inexact):
            return jnp.where(member, found, jnp.nan)
        if jnp.issubdtype(table.dtype, jnp.integer):
            return jnp.where(member, found, jnp.iinfo(table.dtype).min)
        return found


def _matmul(g, h):
    return jnp.matmul(g, h)


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
        compose = _matmul
    if generators is not None and generators.shape[1:] != table.shape[1:]:
        raise ValueError(f"generators have shape {generators.shape[1:]} but elements {table.shape[1:]}; use one shape")
    if tolerance is not None and not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number ≥ 0, got {tolerance!r}")
    tol = default_tolerance(table) if tolerance is None else float(tolerance)
    products = _Products(compose, table[0])
    if elements is None:
        table = _close(products, generators, tol, max_size, name)
    given = tuple(labels) if labels is not None else None
    if given is not None and len(given) != len(table):
        raise ValueError(f"got {len(given)} labels for {len(table)} elements; give one label per element")
    flat = _flat(table)
    first = _first_of_each(flat, tol)
    if np.any(first != np.arange(len(table))):
        i = int(np.flatnonzero(first != np.arange(len(table)))[0])
        raise ValueError(f"the elements of {name} are not distinct (#{first[i]} and #{i}); list each element once")

    def describe(i: int) -> str:
        return given[i] if given is not None else f"#{i} {np.asarray(table[i]).tolist()}"

    cayley = _cayley(products, table, tol, describe, name)
    e, inverse = _identity_and_inverses(cayley, describe, name)
    if generators is not None:
        gens = _Lookup(flat, tol).find(_flat(generators))
        if np.any(gens < 0):
            raise ValueError(f"generator {names[int(np.argmax(gens < 0))]} is not an element of {name}; check it")
    else:
        gens = _greedy_generators(cayley, e)
        names = [f"s{i + 1}" for i in range(len(gens))]
    order = _reached(cayley, e, list(gens))
    if len(order) != len(table):
        raise ValueError(
            f"the generators {', '.join(names)} generate {len(order)} of the {len(table)} elements of {name}: add a "
            "generator, or pass labels"
        )
    words = _words(cayley, e, list(gens), names)
    if elements is None:  # ordered by shortest word; relabel the table accordingly
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        table, cayley, inverse = table[order], position[cayley[np.ix_(order, order)]], position[inverse[order]]
        words = {int(position[v]): w for v, w in words.items()}
        e = 0
    final = given if given is not None else tuple(words[i] for i in range(len(table)))
    law = _TableLaw(table, compose, inverse, tol)
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
