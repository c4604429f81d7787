"""Shared checks and helpers of the layers: one sentence naming the problem and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from equivax._planar import POINT_GROUPS

NHWC = ("NHWC", "HWIO", "NHWC")


def he_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Gaussian weights with variance ``2 / fan_in`` (He et al. 2015), fan-in = all but the last axis.

    With a concrete key the numbers are drawn on the host by NumPy, seeded by the key's bits:
    just as reproducible, and free, where XLA would compile a random-number program for every new
    shape (seconds each on a small CPU). Under a trace (abstract initialisation) it falls back to
    ``jax.random.normal``.
    """
    std = np.sqrt(2.0 / max(int(np.prod(shape[:-1])), 1))
    try:
        seed = np.asarray(jax.random.key_data(key)).ravel()
    except jax.errors.TracerArrayConversionError:
        return (jax.random.normal(key, shape) * std).astype(dtype)
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * std, dtype=dtype)


def lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Gaussian weights with variance ``1 / fan_in``, drawn like ``he_normal`` (for read-outs)."""
    return he_normal(key, shape, dtype) / np.sqrt(2.0)


def check_group(group: str | None, allowed=("p4", "p4m")) -> str | None:
    if group is not None and group not in allowed:
        raise ValueError(f"group must be one of {allowed} (or None for plain images), got {group!r}")
    return group


def check_padding(padding: str) -> str:
    if padding not in ("circular", "zeros"):
        raise ValueError(f"padding must be 'circular' or 'zeros', got {padding!r}")
    return padding


def check_kernel(kernel_size: int, *, odd: bool) -> int:
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    if odd and kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size {kernel_size} is even: an even filter has no centre pixel, so turning it moves "
            "its centre; use an odd kernel_size"
        )
    return kernel_size


def check_input(x: jax.Array, layer: str, group: str | None, channels: int | None = None) -> None:
    """Validate the layout: NHWC for images, (N, H, W, |K|, C) for group feature maps."""
    if group is None:
        if x.ndim != 4:
            raise ValueError(f"{layer} expects NHWC images (N, H, W, C), got shape {x.shape}")
    else:
        k = len(POINT_GROUPS[group])
        if x.ndim != 5 or x.shape[3] != k:
            raise ValueError(
                f"{layer} expects {group} feature maps (N, H, W, {k}, C) with the orientation axis at "
                f"position 3, got shape {x.shape}"
            )
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{layer} was built for {channels} input channels but x has {x.shape[-1]} (last axis of shape "
            f"{x.shape}); build it with in_features={x.shape[-1]} or fix the input"
        )


def check_divisible(x: jax.Array, layer: str, stride: int) -> None:
    h, w = x.shape[1], x.shape[2]
    if h % stride or w % stride:
        raise ValueError(
            f"{layer} subsamples by {stride}, which needs spatial sizes divisible by {stride}, got {h}x{w}: "
            f"pad or crop the input to a multiple of {stride}"
        )


def conv(x: jax.Array, kernel: jax.Array, padding: str, stride: int) -> jax.Array:
    """2-D correlation of NHWC ``x`` with an HWIO ``kernel``: circular or zero ("SAME") padding.

    Input and kernel are promoted to a common dtype, so float64 inputs run in float64.
    """
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if padding == "circular":
        ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
        x = jnp.pad(x, ((0, 0), (ph, kernel.shape[0] - 1 - ph), (pw, kernel.shape[1] - 1 - pw), (0, 0)), mode="wrap")
        return lax.conv_general_dilated(x, kernel, (stride, stride), "VALID", dimension_numbers=NHWC)
    return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=NHWC)


def merge_orientations(x: jax.Array) -> jax.Array:
    """(N, H, W, K, C) -> (N, H, W, K·C), orientation-major."""
    return x.reshape(*x.shape[:3], -1)


def split_orientations(x: jax.Array, k: int) -> jax.Array:
    """(N, H, W, K·C) -> (N, H, W, K, C)."""
    return x.reshape(*x.shape[:3], k, x.shape[3] // k)
