"""Error statistics of ``f(g·x)`` against ``g·f(x)``: traced per element, and on the host.

The one definition of relative error used everywhere: per example (row of the output),
``‖got − want‖₂ / ‖want‖₂``, with ``|z|²`` for complex values. Both norms are taken of the values
multiplied by a power of two near the reciprocal of the row's largest magnitude (clamped so the
factor itself is a normal number: XLA turns a division by a scale into a multiplication by its
reciprocal, and 1/1e38 would flush to zero), so the ratio neither overflows (outputs near the
float32 limit) nor flushes; the scale cancels. Values below float32 are measured in float32. A
row whose ``want`` is zero has relative error 0 when ``got`` is zero too and ``inf`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["batched", "element_stats", "error_map", "relative_rows"]


def batched(leaves: Sequence[Any], n: int) -> bool:
    """Whether every leaf carries the batch axis (of length ``n``) first."""
    return all(len(np.shape(leaf)) >= 1 and np.shape(leaf)[0] == n for leaf in leaves)


def _rows(xp: Any, leaves: Sequence[Any], is_batched: bool) -> Any:
    """All values as an ``(examples, values)`` matrix (one row when the output has no batch axis)."""
    if is_batched:
        return xp.concatenate([xp.reshape(leaf, (leaf.shape[0], -1)) for leaf in leaves], axis=1)
    return xp.concatenate([xp.reshape(leaf, (1, -1)) for leaf in leaves], axis=1)


def _inverse_power_of_two(xp: Any, largest: Any) -> Any:
    """``2**-e`` for ``largest = m · 2**e`` (``0.5 ≤ m < 1``, ``frexp``'s exponent), ``e`` clamped to
    ±100 so the factor is a normal number. Traced, it is built from the exponent bits (a shift and
    a mask: XLA compiles ``frexp``/``ldexp`` into much more code for the same number)."""
    largest = xp.where(largest > 0, largest, 1)  # an all-zero row: any factor does
    if xp is np:
        _, exponent = np.frexp(largest)
        return np.ldexp(np.ones_like(largest), -np.clip(exponent, -100, 100))
    info = jnp.finfo(largest.dtype)
    ints = jnp.int32 if info.bits == 32 else jnp.int64
    bias = info.maxexp - 1
    biased = (lax.bitcast_convert_type(largest, ints) >> info.nmant) & (2 * bias + 1)
    exponent = jnp.clip(biased - (bias - 1), -100, 100)  # subnormals clamp to -100
    return lax.bitcast_convert_type((bias - exponent) << info.nmant, largest.dtype)


def _relative(xp: Any, got: Any, want: Any) -> Any:
    """Per-row relative distance of two ``(rows, values)`` matrices, overflow- and flush-safe."""
    largest = xp.maximum(xp.max(xp.abs(got), axis=1), xp.max(xp.abs(want), axis=1))
    factor = _inverse_power_of_two(xp, largest)[:, None]  # exact, normal
    factor = factor.astype(got.dtype)  # complex rows: a complex factor with zero imaginary part
    num = xp.sqrt(xp.sum(xp.square(xp.abs(got * factor - want * factor)), axis=1))
    den = xp.sqrt(xp.sum(xp.square(xp.abs(want * factor)), axis=1))
    safe = xp.where(den > 0, den, 1)
    return xp.where(den > 0, num / safe, xp.where(num > 0, xp.inf, 0))


def _wide(leaf: jax.Array) -> jax.Array:
    """Values below float32 (bfloat16, float16, float8) measured in float32: exact, and wide enough.

    Integer and boolean outputs (class ids, counts, masks) are measured as floats without rounding:
    up to 16 bits directly in float32; wider integers as a high and a low part, each exact (in
    float32 for 32-bit integers, float64 for 64-bit ones), so two different integers never compare
    equal, however large."""
    if jnp.issubdtype(leaf.dtype, jnp.bool_) or (
        jnp.issubdtype(leaf.dtype, jnp.integer) and jnp.iinfo(leaf.dtype).bits <= 16
    ):
        return leaf.astype(jnp.float32)
    if jnp.issubdtype(leaf.dtype, jnp.integer):
        bits = jnp.iinfo(leaf.dtype).bits
        low_bits, to = (12, jnp.float32) if bits <= 32 else (26, jnp.float64)
        high, low = leaf >> low_bits, leaf & ((1 << low_bits) - 1)
        return jnp.stack([high.astype(to), low.astype(to)], axis=-1)
    if jnp.finfo(leaf.dtype).bits < 32:
        return leaf.astype(jnp.complex64 if jnp.iscomplexobj(leaf) else jnp.float32)
    return leaf


def element_stats(got: Any, want: Any, n: int) -> dict[str, jax.Array]:
    """Traced statistics of one element on one output part.

    ``rel``: per-example relative error (``(n,)``, or ``(1,)`` for an unbatched output);
    ``abs``: the largest absolute difference; ``where``: its flat index into the
    ``(examples, values)`` matrix; ``finite``: whether both sides are finite.
    """
    got_leaves, want_leaves = [_wide(a) for a in jax.tree.leaves(got)], [_wide(a) for a in jax.tree.leaves(want)]
    is_batched = batched(want_leaves, n)
    got_rows, want_rows = _rows(jnp, got_leaves, is_batched), _rows(jnp, want_leaves, is_batched)
    # Where either side is NaN or inf, both are set to zero: the rest is measured as usual.
    both = jnp.isfinite(got_rows) & jnp.isfinite(want_rows)
    finite = jnp.all(both)
    got_rows, want_rows = jnp.where(both, got_rows, 0), jnp.where(both, want_rows, 0)
    rel = _relative(jnp, got_rows, want_rows)
    # |a − b| without overflow: half of each side first (exact in binary), doubled on the host.
    half = jnp.abs(got_rows / 2 - want_rows / 2).reshape(-1)
    where = jnp.argmax(half).astype(jnp.int32)
    return {"rel": rel, "abs_half": half[where], "where": where, "finite": finite}


def error_map(got: jax.Array, want: jax.Array, is_batched: bool, channels_first: bool = False) -> jax.Array | None:
    """Largest ``|f(g·x) − g·f(x)|`` at each position of a spatial output, over examples and
    channels: a ``(H, W)`` map (``None`` for outputs without two spatial axes). The spatial axes
    are 1 and 2 after the batch axis, or the last two with ``channels_first``."""
    spatial = got.ndim - (1 if is_batched else 0)
    if spatial < 2:
        return None
    if not jnp.issubdtype(got.dtype, jnp.inexact):  # integers: no wrap-around of unsigned differences
        got, want = got.astype(jnp.float32), want.astype(jnp.float32)
    diff = jnp.abs(got - want)
    diff = jnp.where(jnp.isfinite(diff), diff, 0)
    if not is_batched:
        diff = diff[None]
    if channels_first:
        diff = jnp.moveaxis(diff, (-2, -1), (1, 2))
    return jnp.max(diff, axis=(0, *range(3, diff.ndim)))


def _host(leaf: Any) -> np.ndarray:
    leaf = np.asarray(leaf)
    if leaf.dtype.kind in "iu" and leaf.dtype.itemsize == 8:  # exact halves, as traced (``_wide``)
        return np.stack([(leaf >> 26).astype(np.float64), (leaf & (2**26 - 1)).astype(np.float64)], axis=-1)
    return leaf.astype(np.complex128 if np.iscomplexobj(leaf) else np.float64)


def relative_rows(a: Any, b: Any, is_batched: bool) -> np.ndarray:
    """Per-example ``‖a − b‖ / ‖b‖`` of two concrete pytrees, in float64 (complex128) on the host."""
    rows_a = _rows(np, [_host(leaf) for leaf in jax.tree.leaves(a)], is_batched)
    rows_b = _rows(np, [_host(leaf) for leaf in jax.tree.leaves(b)], is_batched)
    finite = np.all(np.isfinite(rows_a), axis=1) & np.all(np.isfinite(rows_b), axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = _relative(np, np.where(np.isfinite(rows_a), rows_a, 0), np.where(np.isfinite(rows_b), rows_b, 0))
    return np.where(finite, rel, np.inf).astype(np.float64)
