"""Float64 convolutions written as a matrix product, for the float64 re-run on CPU.

XLA on CPU hands float32 convolutions to a library but emits float64 ones as loops of its own,
whose speed varies with the channels: with 1 or 6-16 input and up to 16 output channels (the
widths of small test models) they mostly run 1-7 times longer than the same sums written as a float64 matrix
product, a library call, and the program holding them compiles slowly. ``patches_conv`` computes
such a convolution (stride 1) with one ``dot_general``: every padded input position times every
tap's kernel, then, for each tap, those products shifted by the tap's offset in the flattened
(batch, *spatial) order, summed in one loop, and the positions outside the output dropped.

The sums are the same, in another order, so the result differs from XLA's float64 convolution by
float64 rounding only. Feature groups are a batch dimension of the product; kernel dilation
moves the offsets. Other convolutions (strided, input-dilated, wider, ``batch_group_count``,
over ``MAX_TAPS`` taps or ``PATCH_BYTES`` of products) keep XLA's (``applies``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "IN_CHANNELS",
    "MAX_TAPS",
    "OUT_CHANNELS",
    "PATCH_BYTES",
    "applies",
    "patch_bytes",
    "patches_conv",
    "rewrites",
    "traced",
]

#: Kernels with more taps than this keep XLA's convolution: each tap is one term of a sum.
MAX_TAPS = 64
#: The channels per group where the products beat XLA's float64 convolution on CPU: one input
#: channel (a stem on grey images) or 6 to 16, and up to 16 output channels. There the products took
#: 0.14-1.1 of its run time (median about 0.4) at 2-32 examples of 16-56 pixels; with 2-4 input
#: channels, or 24 or more output channels, up to 7 times as long. Measured for 3x3 kernels
#: (benchmarks/README.md, "Float64 convolutions").
IN_CHANNELS = frozenset({1, *range(6, 17)})
OUT_CHANNELS = 16
#: Convolutions whose products (``patch_bytes``: the taps times the padded input) are larger
#: than this keep XLA's convolution: the memory of a chunk stays bounded.
PATCH_BYTES = 256 * 2**20


def _out_sizes(params: dict[str, Any], lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...]) -> list[int]:
    lhs_spec, rhs_spec, _ = params["dimension_numbers"]
    sizes = []
    for i, (lo, hi) in enumerate(params["padding"]):
        dilated = (lhs_shape[lhs_spec[2 + i]] - 1) * params["lhs_dilation"][i] + 1 + lo + hi
        window = (rhs_shape[rhs_spec[2 + i]] - 1) * params["rhs_dilation"][i] + 1
        sizes.append((dilated - window) // params["window_strides"][i] + 1 if dilated >= window else 0)
    return sizes


def applies(params: dict[str, Any], lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...], itemsize: int) -> bool:
    """Whether ``patches_conv`` takes this convolution (in a dtype of ``itemsize`` bytes): stride 1,
    no input dilation, one batch group, channels in ``IN_CHANNELS`` and up to ``OUT_CHANNELS``, at
    most ``MAX_TAPS`` taps and ``PATCH_BYTES`` of products."""
    if params.get("dimension_numbers") is None or params.get("batch_group_count", 1) != 1:
        return False
    if 0 in lhs_shape or 0 in rhs_shape:  # nothing to multiply: XLA's handles the empty shapes
        return False
    if any(s != 1 for s in params["window_strides"]) or any(d != 1 for d in params["lhs_dilation"]):
        return False
    lhs_spec, rhs_spec, _ = params["dimension_numbers"]
    groups = params["feature_group_count"]
    c_in, c_out = lhs_shape[lhs_spec[1]] // groups, rhs_shape[rhs_spec[0]] // groups
    if c_in not in IN_CHANNELS or c_out > OUT_CHANNELS or c_in * c_out == 1:  # one channel: XLA's is faster
        return False
    taps = math.prod(rhs_shape[d] for d in rhs_spec[2:])
    if taps > MAX_TAPS or min(_out_sizes(params, lhs_shape, rhs_shape), default=1) <= 0:
        return False
    return patch_bytes(params, lhs_shape, rhs_shape, itemsize) <= PATCH_BYTES


def patch_bytes(params: dict[str, Any], lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes of the products ``patches_conv`` makes before summing them: every padded input position
    times every tap's kernel."""
    lhs_spec, rhs_spec, _ = params["dimension_numbers"]
    taps = math.prod(rhs_shape[d] for d in rhs_spec[2:])
    spatial = (lhs_shape[i] + lo + hi for i, (lo, hi) in zip(lhs_spec[2:], params["padding"], strict=True))
    return lhs_shape[lhs_spec[0]] * math.prod(spatial) * taps * rhs_shape[rhs_spec[0]] * itemsize


def rewrites(eqn: Any, float_dtype: Any) -> bool:
    """Whether a re-run in ``float_dtype`` computes this equation with ``patches_conv``: a real
    convolution below float64 widened to float64, which ``applies``."""
    if eqn.primitive.name != "conv_general_dilated" or np.dtype(float_dtype) != np.float64:
        return False
    lhs, rhs = (v.aval for v in eqn.invars)
    if not jnp.issubdtype(lhs.dtype, jnp.floating) or jnp.finfo(lhs.dtype).bits >= 64:
        return False
    return applies(eqn.params, lhs.shape, rhs.shape, 8)


def _layout(lhs: Any, rhs: Any, params: dict[str, Any]) -> tuple[Any, Any]:
    """The operands as (N, *spatial, C), padded, and (*taps, C / groups, O)."""
    lhs_spec, rhs_spec, _ = params["dimension_numbers"]
    x = lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    w = lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    pads = [(0, 0, 0), *((lo, hi, 0) for lo, hi in params["padding"]), (0, 0, 0)]
    return lax.pad(x, np.zeros((), x.dtype), pads), w


def patches_conv(lhs: Any, rhs: Any, **params: Any) -> Any:
    """``lax.conv_general_dilated_p`` with these parameters, as matrix products."""
    _, _, out_spec = params["dimension_numbers"]
    nd = len(out_spec) - 2
    out = _out_sizes(params, lhs.shape, rhs.shape)
    x, w = _layout(lhs, rhs, params)
    y = _shift_sum(x, w, out, params)  # (N, *out, O)
    logical = (0, nd + 1, *range(1, nd + 1))  # batch, feature, spatial: where each sits in y
    perm = [0] * (nd + 2)
    for axis, physical in zip(logical, out_spec, strict=True):
        perm[physical] = axis
    return lax.transpose(y, tuple(perm))


def _product(a: Any, w: Any, params: dict[str, Any]) -> Any:
    """``a`` (..., groups, C / groups) times ``w`` (K, C / groups, groups, O / groups), each group
    with its own: (groups, ..., K, O / groups)."""
    dims = a.ndim
    return lax.dot_general(
        a,
        w,
        (((dims - 1,), (1,)), ((dims - 2,), (2,))),
        precision=params.get("precision"),
        preferred_element_type=params.get("preferred_element_type"),
    )


def _shift_sum(x: Any, w: Any, out: list[int], params: dict[str, Any]) -> Any:
    """Every position times every tap in one product, flat over (N, *spatial), then for
    each tap the products it needs, shifted by the tap's offset in that flat order, summed."""
    nd = len(out)
    n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    taps, o = w.shape[:nd], w.shape[-1]
    groups = params["feature_group_count"]
    k = math.prod(taps)
    flat = math.prod(x.shape[:-1])
    z = _product(x.reshape(flat, groups, c // groups), w.reshape(k, c // groups, groups, o // groups), params)
    steps = [math.prod(spatial[d + 1 :]) for d in range(nd)]
    offsets = [
        sum(t * r * step for t, r, step in zip(tap, params["rhs_dilation"], steps, strict=True))
        for tap in itertools.product(*(range(t) for t in taps))
    ]
    m = flat - max(offsets)
    total = None
    for index, offset in enumerate(offsets):  # (groups, m, O / groups) each
        term = lax.slice(z, (0, offset, index, 0), (groups, offset + m, index + 1, o // groups)).reshape(groups, m, -1)
        total = term if total is None else total + term
    total = lax.transpose(total, (1, 0, 2)).reshape(m, o)
    full = lax.pad(total, np.zeros((), total.dtype), [(0, flat - m, 0), (0, 0, 0)]).reshape(n, *spatial, o)
    return lax.slice(full, (0,) * (nd + 2), (n, *out, o))


def traced(params: dict[str, Any], lhs: Any, rhs: Any) -> Any:
    """The closed jaxpr of ``patches_conv`` for operands of these avals (float64 enabled)."""
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (lhs, rhs)]
    with jax.enable_x64(True):
        return jax.make_jaxpr(lambda a, b: patches_conv(a, b, **params))(*specs)
