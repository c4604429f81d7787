"""Small reference layers as pure JAX functions, for the CLI demo, the docs and the tests.

Each constructor takes its weights and returns ``f(x)`` on NHWC images. They are deliberately
plain: what they compute, and which symmetry they have, is visible in a few lines.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "circular_conv",
    "global_mean",
    "max_pool",
    "p4_lifting",
    "zero_padded_conv",
]

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, w: jax.Array, padding) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC)


def circular_conv(w: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """Convolution with periodic (wrap-around) padding: exactly equivariant to circular shifts.

    ``w`` is an odd-sized ``(kh, kw, c_in, c_out)`` filter bank.
    """
    ph, pw = w.shape[0] // 2, w.shape[1] // 2

    def f(x: jax.Array) -> jax.Array:
        x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="wrap")
        return _conv(x, w, "VALID")

    return f


def zero_padded_conv(w: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """Convolution with zero padding ("SAME"): equivariant only away from the borders."""
    return lambda x: _conv(x, w, "SAME")


def max_pool(size: int = 2) -> Callable[[jax.Array], jax.Array]:
    """Max pooling with window and stride ``size``: keeps only shifts divisible by ``size``."""
    window = (1, size, size, 1)
    return lambda x: lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")


def global_mean(x: jax.Array) -> jax.Array:
    """Spatial mean per channel: invariant to every planar symmetry."""
    return jnp.mean(x, axis=(1, 2))


def p4_lifting(w: jax.Array, *, clockwise: bool = False) -> Callable[[jax.Array], jax.Array]:
    """Lifting convolution Z² → p4: correlate with the four rotated copies of ``w``.

    Output ``(N, H, W, 4, C_out)``, orientation ``r`` from the filter turned ``r`` quarter turns
    counter-clockwise; equivariant under the regular action of p4. ``clockwise=True`` turns the
    filters the wrong way (a planted bug: breaks r1 and r3, keeps r2).
    """
    sign = -1 if clockwise else 1
    bank = jnp.stack([jnp.rot90(w, sign * r, axes=(0, 1)) for r in range(4)], axis=3)
    kh, kw, c_in, _, c_out = bank.shape
    flat = bank.reshape(kh, kw, c_in, 4 * c_out)
    conv = circular_conv(flat)

    def f(x: jax.Array) -> jax.Array:
        y = conv(x)
        return y.reshape(*y.shape[:3], 4, c_out)

    return f
