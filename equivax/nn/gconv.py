"""Group convolutions for p4 and p4m: lifting (images → group feature maps) and group → group.

The filter bank is transformed once per call: for every element ``g`` of the point group ``K``
(4 quarter turns for p4; those and their mirrors for p4m), the filter is turned/mirrored by ``g``
and, for group convolutions, its input-orientation axis permuted by the regular action of ``g``.
One ordinary convolution with the stacked bank then computes every output orientation; nothing
loops over examples. The transforms follow the conventions of ``equivax.actions`` (see
docs/conventions.md); the tests check each bank against the actions themselves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from equivax._planar import POINT_GROUPS, orientation_source
from equivax.nn import _common
from equivax.nn.contract import Contract

__all__ = ["GroupConv", "LiftingConv"]


def _turn(kernel: jax.Array, k: int, m: int) -> jax.Array:
    """The image action of the point element (k, m) on a kernel's spatial axes (0, 1):
    mirror the width axis if ``m``, then ``k`` quarter turns, as ``actions.image`` on images."""
    if m:
        kernel = jnp.flip(kernel, axis=1)
    return jnp.rot90(kernel, k, axes=(0, 1))


def lifting_bank(kernel: jax.Array, group: str) -> jax.Array:
    """(kh, kw, C_in, C_out) → (kh, kw, C_in, |K|·C_out): one transformed copy per orientation."""
    kh, kw, c_in, _ = kernel.shape
    bank = jnp.stack([_turn(kernel, k, m) for k, m in POINT_GROUPS[group]], axis=3)
    return bank.reshape(kh, kw, c_in, -1)


def group_bank(kernel: jax.Array, group: str) -> jax.Array:
    """(kh, kw, |K|, C_in, C_out) → (kh, kw, |K|·C_in, |K|·C_out)."""
    kh, kw, k, c_in, c_out = kernel.shape
    points = POINT_GROUPS[group]
    bank = [_turn(kernel, r, m)[:, :, orientation_source(points, r, m)] for r, m in points]
    return jnp.stack(bank, axis=4).reshape(kh, kw, k * c_in, k * c_out)


class _GroupConvolution(nnx.Module):
    """Shared set-up: validation, filter bank, orientation-shared bias, contract."""

    input_kind = "image"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        *,
        group: str = "p4",
        padding: str = "zeros",
        stride: int = 1,
        use_bias: bool = True,
        rngs: nnx.Rngs,
    ):
        self.group = _common.check_group(group)
        self.padding = _common.check_padding(padding)
        self.stride = stride
        self.in_features = in_features
        _common.check_kernel(kernel_size, odd=True)
        orientations = () if self.input_kind == "image" else (len(POINT_GROUPS[group]),)
        shape = (kernel_size, kernel_size, *orientations, in_features, out_features)
        self.kernel = nnx.Param(_common.he_normal(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
        # Subsampling keeps pixels 0, s, 2s, ...; a quarter turn of an even-sized image maps them
        # to odd ones, so a strided layer promises shifts only.
        symmetry = group if stride == 1 else "translations"
        self.contract = Contract(symmetry, self.input_kind, "regular", stride, padding, layout=group)

    def _finish(self, y: jax.Array) -> jax.Array:
        y = _common.split_orientations(y, len(POINT_GROUPS[self.group]))
        return y if self.bias is None else y + self.bias[...]


class LiftingConv(_GroupConvolution):
    """Lifting convolution Z² → G for G = p4 or p4m: NHWC images to (N, H, W, |K|, C_out).

    Exactly equivariant to the point group (quarter turns, and mirrors for p4m) with either
    padding, because zero padding is symmetric about the centre of a square image; to circular
    shifts with ``padding="circular"``. The bias is shared over orientations. Arguments:
    ``in_features, out_features, kernel_size=3, *, group="p4", padding="zeros", stride=1,
    use_bias=True, rngs``; ``kernel_size`` must be odd.

    Examples:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> LiftingConv(1, 6, group="p4m", rngs=nnx.Rngs(0))(jnp.ones((2, 9, 9, 1))).shape
      (2, 9, 9, 8, 6)
    """

    input_kind = "image"

    def __call__(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, "LiftingConv", None, self.in_features)
        bank = lifting_bank(self.kernel[...], self.group)
        return self._finish(_common.conv(x, bank, self.padding, self.stride))


class GroupConv(_GroupConvolution):
    """Group convolution G → G for G = p4 or p4m on (N, H, W, |K|, C) feature maps; arguments as
    ``LiftingConv``.

    Examples:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> GroupConv(3, 5, group="p4", rngs=nnx.Rngs(0))(jnp.ones((1, 7, 7, 4, 3))).shape
      (1, 7, 7, 4, 5)
    """

    input_kind = "regular"

    def __call__(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, "GroupConv", self.group, self.in_features)
        bank = group_bank(self.kernel[...], self.group)
        return self._finish(_common.conv(_common.merge_orientations(x), bank, self.padding, self.stride))
