"""The machinery of user-defined finite groups: rows matched with a dtype-scaled tolerance, products
in blocks, closure of generators, the Cayley table (identity, inverses, associativity on a sample),
and shortest words over the generators as labels.

Split from ``equivax.groups`` (which keeps the ``Group`` type and the ``finite`` constructor) so
that each file holds one concept; nothing here is public API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Element = Any  # a (d,) array; traced inside checks

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


def flat_rows(rows: np.ndarray) -> np.ndarray:
    """``(n, ...)`` elements as ``(n, d)`` real rows (float64 for inexact dtypes, int64 otherwise)."""
    rows = np.asarray(rows)
    flat = rows.reshape(len(rows), -1)
    if np.iscomplexobj(flat):
        flat = np.concatenate([flat.real, flat.imag], axis=1)
    return flat.astype(np.float64 if np.issubdtype(flat.dtype, np.inexact) else np.int64)


def row_distances(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Max-norm distances ``(len(rows), len(table))``; callers keep the product of the sizes bounded."""
    return np.max(np.abs(rows[:, None, :] - table[None, :, :]), axis=2, initial=0)


def nearest_row(table: np.ndarray, row: np.ndarray, tol: float) -> int | None:
    distance = np.max(np.abs(table - row[None]), axis=1, initial=0)
    best = int(np.argmin(distance))
    return best if distance[best] <= tol else None


class Lookup:
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


def first_of_each(rows: np.ndarray, tol: float) -> np.ndarray:
    """For each row, the index of the first row equal to it within ``tol`` (itself if none earlier)."""
    if tol == 0:
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        return first[inverse.reshape(-1)]
    first = np.empty(len(rows), dtype=np.int64)
    step = max(1, _BLOCK // max(1, rows.size))
    for start in range(0, len(rows), step):
        close = row_distances(rows[start : start + step], rows) <= tol
        first[start : start + step] = np.argmax(close, axis=1)
    return first


class Products:
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


def block_rows(a_rows: int, b: np.ndarray) -> int:
    """Rows of ``a`` per call so that a block of products holds about ``_BLOCK`` numbers."""
    return max(1, min(a_rows, _BLOCK // max(1, b.size)))


def closure(products: Products, generators: np.ndarray, tol: float, max_size: int, name: str) -> np.ndarray:
    """Every product of the generators: breadth-first, multiplying the newest elements by each generator."""
    flat_gens = flat_rows(generators)
    table = generators[np.unique(first_of_each(flat_gens, tol))]
    frontier, block = table, min(64, block_rows(max_size, generators))
    # Candidates are looked up in an index of the older elements and compared with the newer ones;
    # the index is rebuilt when the newer ones outnumber the older (amortised O(n log n)).
    older, newer = Lookup(flat_rows(table), tol), flat_rows(table)[:0]
    while len(frontier):
        candidates = products(frontier, generators, block).reshape(-1, *generators.shape[1:])
        flat = flat_rows(candidates)
        fresh = np.flatnonzero(older.find(flat) < 0)
        if fresh.size and len(newer):
            step = max(1, _BLOCK // newer.size)
            seen = [
                np.any(row_distances(flat[fresh[i : i + step]], newer) <= tol, axis=1)
                for i in range(0, fresh.size, step)
            ]
            fresh = fresh[~np.concatenate(seen)]
        if fresh.size:
            fresh = np.sort(fresh[np.unique(first_of_each(flat[fresh], tol))])
        frontier = candidates[fresh]
        table = np.concatenate([table, frontier])
        newer = np.concatenate([newer, flat[fresh]])
        if len(newer) > len(older.table):
            older, newer = Lookup(flat_rows(table), tol), newer[:0]
        if len(table) > max_size:
            raise ValueError(
                f"the generators of {name} have produced more than {max_size} elements without closing: check that "
                "they generate a finite group (a float rotation must be by 2π/n), or raise max_size"
            )
    return table


def cayley_table(products: Products, table: np.ndarray, tol: float, describe: Callable[[int], str], name: str):
    """The Cayley table ``cayley[i, j] = index of table[i] · table[j]``, checked for closure."""
    n = len(table)
    found = Lookup(flat_rows(table), tol)
    cayley = np.empty((n, n), dtype=np.int64)
    step = block_rows(n, table)
    for start in range(0, n, step):
        part = products(table[start : start + step], table, step)
        rows = found.find(flat_rows(part.reshape(-1, *table.shape[1:]))).reshape(len(part), n)
        if np.any(rows < 0):
            i, j = np.argwhere(rows < 0)[0]
            raise ValueError(
                f"{name} is not closed: {describe(start + i)}·{describe(j)} = {part[i, j].tolist()} is not in the "
                "list; add it, or check compose"
            )
        cayley[start : start + step] = rows
    return cayley


def identity_and_inverses(cayley: np.ndarray, describe: Callable[[int], str], name: str) -> tuple[int, np.ndarray]:
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


def reached_from(cayley: np.ndarray, e: int, generators: Sequence[int]) -> list[int]:
    """Elements in breadth-first order of their shortest words in ``generators`` (identity first)."""
    order, seen = [e], {e}
    for w in order:
        for s in generators:
            v = int(cayley[w, s])
            if v not in seen:
                seen.add(v)
                order.append(v)
    return order


def greedy_generators(cayley: np.ndarray, e: int) -> list[int]:
    """Generators picked in list order: each element not yet generated by the earlier picks."""
    chosen: list[int] = []
    reached = {e}
    for i in range(len(cayley)):
        if i not in reached:
            chosen.append(i)
            reached = set(reached_from(cayley, e, chosen))
    return chosen


def word_label(runs: tuple[tuple[str, int], ...]) -> str:
    """``(("r", 3), ("m", 1))`` → ``"r³·m"``; the empty word is ``"e"``."""
    return (
        "·".join(f"{letter}{str(power).translate(_SUPERSCRIPTS) if power > 1 else ''}" for letter, power in runs) or "e"
    )


def word_labels(cayley: np.ndarray, e: int, generators: Sequence[int], names: Sequence[str]) -> dict[int, str]:
    """The shortest word of every element (ties: generators in order), breadth first from the identity."""
    words: dict[int, tuple[tuple[str, int], ...]] = {e: ()}
    for w in reached_from(cayley, e, generators):
        for s, letter in zip(generators, names, strict=True):
            v = int(cayley[w, s])
            if v not in words:
                runs = words[w]
                if runs and runs[-1][0] == letter:
                    words[v] = (*runs[:-1], (letter, runs[-1][1] + 1))
                else:
                    words[v] = (*runs, (letter, 1))
    return {v: word_label(runs) for v, runs in words.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class TableLaw:
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


def matmul(g, h):
    return jnp.matmul(g, h)
