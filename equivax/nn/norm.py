"""Batch normalisation that keeps equivariance on group feature maps."""

from __future__ import annotations

import jax
from flax import nnx

from equivax.nn import _common
from equivax.nn.contract import Contract

__all__ = ["GroupBatchNorm"]


class GroupBatchNorm(nnx.Module):
    """Batch normalisation whose statistics, scale and bias are shared over the orientation axis.

    On (N, H, W, |K|, C) maps the mean and variance of channel ``c`` are taken over batch, space and
    orientations together, so a transformation of the input (which permutes positions and
    orientations) leaves them unchanged: the layer is equivariant in training and in evaluation
    mode. A per-orientation statistic would not be. With ``group=None`` it is ordinary batch norm
    on NHWC images.
    """

    def __init__(self, num_features: int, *, group: str | None = "p4", momentum: float = 0.9, rngs: nnx.Rngs):
        self.group = _common.check_group(group)
        self.num_features = num_features
        # nnx.BatchNorm reduces over every axis but the last: (N, H, W, K) here.
        self.norm = nnx.BatchNorm(num_features, momentum=momentum, rngs=rngs)
        kind = "image" if group is None else "regular"
        self.contract = Contract(group or "p4m", kind, kind, 1, "none", layout=group)

    def __call__(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, "GroupBatchNorm", self.group, self.num_features)
        return self.norm(x)
