"""Pooling on images and group feature maps: spatial, anti-aliased, over orientations, global."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from equivax.nn import _common
from equivax.nn.contract import Contract

__all__ = ["AvgPool", "BlurPool", "GlobalPool", "GroupPool", "MaxPool"]


def _kind(group: str | None) -> str:
    return "image" if group is None else "regular"


def _window(x: jax.Array, size: int, stride: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ones = (1,) * (x.ndim - 3)
    return (1, size, size, *ones), (1, stride, stride, *ones)


class _SpatialPool(nnx.Module):
    reducer = staticmethod(lax.max)
    identity = -jnp.inf
    name = "pool"

    def __init__(self, size: int = 2, stride: int | None = None, *, group: str | None = None):
        self.size = _common.check_kernel(size, odd=False)
        self.stride = size if stride is None else stride
        if not 1 <= self.stride <= size:
            raise ValueError(f"stride must be between 1 and the window size {size}, got {self.stride}")
        self.group = _common.check_group(group)
        # Non-overlapping windows tile the image, so turns and mirrors map windows to windows;
        # overlapping ones are padded circularly on one side and keep only shifts.
        symmetry = "p4m" if self.stride == size else "translations"
        if group is not None and symmetry != "translations":
            symmetry = group
        padding = "none" if self.stride == size else "circular"
        self.contract = Contract(symmetry, _kind(group), _kind(group), self.stride, padding, layout=group)

    def _pooled_sum(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, type(self).__name__, self.group)
        _common.check_divisible(x, type(self).__name__, self.stride)
        extra = self.size - self.stride
        if extra:
            pad = [(0, 0)] * x.ndim
            pad[1] = pad[2] = (0, extra)
            x = jnp.pad(x, pad, mode="wrap")
        window, strides = _window(x, self.size, self.stride)
        return lax.reduce_window(x, self.identity, self.reducer, window, strides, "VALID")


class MaxPool(_SpatialPool):
    """Spatial max pooling, window ``size``, step ``stride`` (default ``size``), NHWC or group maps.

    Examples:
      >>> import jax.numpy as jnp
      >>> MaxPool(2)(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, ..., 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pooled_sum(x)


class AvgPool(_SpatialPool):
    """Spatial average pooling, as ``MaxPool``."""

    reducer = staticmethod(lax.add)
    identity = 0.0

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pooled_sum(x) / self.size**2


def binomial_filter(size: int) -> np.ndarray:
    """The normalised 1-D binomial filter of ``size`` taps ([1, 2, 1] / 4 for 3)."""
    row = np.array([1.0])
    for _ in range(size - 1):
        row = np.convolve(row, [1.0, 1.0])
    return row / row.sum()


class BlurPool(nnx.Module):
    """Anti-aliased subsampling (Zhang, "Making Convolutional Networks Shift-Invariant Again", 2019).

    Low-pass filter with a binomial filter of ``filter_size`` taps (circular padding), then keep
    every ``stride``-th pixel. Blurring before subsampling makes the output change smoothly with
    odd shifts instead of aliasing; it does not make it exactly equivariant to them. Combined with
    a stride-1 max (``MaxPool(2, stride=1)``) it is Zhang's MaxBlurPool.
    """

    def __init__(self, filter_size: int = 3, stride: int = 2, *, group: str | None = None):
        self.filter_size = _common.check_kernel(filter_size, odd=False)
        self.stride = stride
        self.group = _common.check_group(group)
        self.contract = Contract("translations", _kind(group), _kind(group), stride, "circular", layout=group)

    def __call__(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, "BlurPool", self.group)
        _common.check_divisible(x, "BlurPool", self.stride)
        taps = jnp.asarray(binomial_filter(self.filter_size), dtype=x.dtype)
        lo = (self.filter_size - 1) // 2
        for axis in (1, 2):
            x = sum(t * jnp.roll(x, lo - i, axis=axis) for i, t in enumerate(taps))
        return x[:, :: self.stride, :: self.stride]


class GroupPool(nnx.Module):
    """Pool over the orientation axis: (N, H, W, |K|, C) → (N, H, W, C), invariant fibres.

    The output transforms like an image: the group's point part only moves pixels.
    """

    def __init__(self, mode: str = "max", *, group: str = "p4"):
        if mode not in ("max", "mean"):
            raise ValueError(f"mode must be 'max' or 'mean', got {mode!r}")
        self.mode = mode
        self.group = _common.check_group(group)
        self.contract = Contract(group, "regular", "image", 1, "none", layout=group)

    def __call__(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, "GroupPool", self.group)
        return jnp.max(x, axis=3) if self.mode == "max" else jnp.mean(x, axis=3)


class GlobalPool(nnx.Module):
    """Pool over all positions (and orientations, for group maps): → (N, C), invariant."""

    def __init__(self, mode: str = "mean", *, group: str | None = None):
        if mode not in ("max", "mean"):
            raise ValueError(f"mode must be 'max' or 'mean', got {mode!r}")
        self.mode = mode
        self.group = _common.check_group(group)
        self.contract = Contract(group or "p4m", _kind(group), "invariant", 1, "none", layout=group)

    def __call__(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, "GlobalPool", self.group)
        axes = tuple(range(1, x.ndim - 1))
        return jnp.max(x, axis=axes) if self.mode == "max" else jnp.mean(x, axis=axes)
