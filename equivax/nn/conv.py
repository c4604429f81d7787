"""Standard convolution with circular or zero padding, carrying its contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from equivax.nn import _common
from equivax.nn.contract import Contract

__all__ = ["Conv"]


class Conv(nnx.Module):
    """A 2-D convolution on NHWC images.

    ``padding="circular"`` wraps the image around (a torus), which makes the layer exactly
    equivariant to circular shifts; ``"zeros"`` is the usual choice and holds only away from the
    borders. ``stride`` subsamples the output, so only shifts divisible by it survive.

    Examples:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> layer = Conv(1, 4, 3, padding="circular", rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 8, 8, 1))).shape, layer.contract.exact_for
      ((2, 8, 8, 4), 'circular shifts')
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        *,
        padding: str = "zeros",
        stride: int = 1,
        use_bias: bool = True,
        rngs: nnx.Rngs,
    ):
        self.kernel_size = _common.check_kernel(kernel_size, odd=False)
        self.padding = _common.check_padding(padding)
        self.stride = stride
        self.in_features = in_features
        shape = (kernel_size, kernel_size, in_features, out_features)
        self.kernel = nnx.Param(_common.he_normal(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
        self.contract = Contract("translations", "image", "image", stride, padding)

    def __call__(self, x: jax.Array) -> jax.Array:
        _common.check_input(x, "Conv", None, self.in_features)
        y = _common.conv(x, self.kernel[...], self.padding, self.stride)
        return y if self.bias is None else y + self.bias[...]
