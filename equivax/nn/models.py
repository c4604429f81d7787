"""Reference models for MNIST-sized inputs: CNN, MLP, P4CNN and P4MCNN, and a parameter count.

Each model builds from ``rngs`` alone with MNIST defaults (1 input channel, 10 classes); keyword
arguments change channels, classes and widths. The convolutional models keep their layers in an
``nnx.Sequential`` called ``layers`` and declare the contract of the whole stack.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from equivax.nn._common import lecun_normal
from equivax.nn.contract import Contract
from equivax.nn.conv import Conv
from equivax.nn.gconv import GroupConv, LiftingConv
from equivax.nn.pool import BlurPool, GlobalPool, GroupPool, MaxPool

__all__ = ["CNN", "MLP", "P4CNN", "P4MCNN", "count_parameters"]


def count_parameters(module: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` entries) of any NNX module.

    Examples:
      >>> from flax import nnx
      >>> count_parameters(nnx.Linear(784, 10, rngs=nnx.Rngs(0)))
      7850
    """
    return sum(int(leaf.size) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _chain(layers: Sequence[object]) -> Contract:
    contracts = [layer.contract for layer in layers if isinstance(getattr(layer, "contract", None), Contract)]
    return functools.reduce(Contract.then, contracts)


class _Stack(nnx.Module):
    """A sequence of layers followed by a linear read-out (or none)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.layers(x)
        return y if self.head is None else self.head(y)


def _pool(kind: str, group: str | None) -> list[object]:
    if kind == "max":
        return [MaxPool(2, group=group)]
    if kind == "blur":  # MaxBlurPool: dense max, then blur and subsample
        return [MaxPool(2, stride=1, group=group), BlurPool(3, 2, group=group)]
    raise ValueError(f"pool must be 'max' or 'blur', got {kind!r}")


class CNN(_Stack):
    """A small classic CNN: [conv 3x3 → ReLU → 2x2 pool] per width, global average pool, linear.

    With ``padding="circular"`` the logits are exactly invariant to circular shifts by multiples of
    the total stride ``2 ** len(widths)``; other shifts alias through the pooling (``pool="blur"``
    reduces that). It promises nothing for rotations.

    Examples:
      >>> from flax import nnx
      >>> count_parameters(CNN(rngs=nnx.Rngs(0)))
      1418
    """

    def __init__(
        self,
        in_features: int = 1,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (8, 16),
        padding: str = "zeros",
        pool: str = "max",
        rngs: nnx.Rngs,
    ):
        layers: list[object] = []
        channels = in_features
        for width in widths:
            layers += [Conv(channels, width, 3, padding=padding, rngs=rngs), nnx.relu, *_pool(pool, None)]
            channels = width
        layers.append(GlobalPool("mean"))
        self.layers = nnx.Sequential(*layers)
        self.head = nnx.Linear(channels, num_classes, kernel_init=lecun_normal, rngs=rngs)
        self.contract = _chain(layers)


def flatten(x: jax.Array) -> jax.Array:
    """``(N, ...) -> (N, values)``: one vector per example."""
    return x.reshape(x.shape[0], -1)


class MLP(_Stack):
    """The fully connected baseline: flatten, hidden layers with ReLU, linear read-out.

    The default (784 → 24 → 10) has 19,090 parameters, the size usually quoted for a dense MNIST
    network. It promises no symmetry, so it has no contract.
    """

    def __init__(
        self,
        in_features: int = 28 * 28,
        num_classes: int = 10,
        *,
        hidden: Sequence[int] = (24,),
        rngs: nnx.Rngs,
    ):
        layers: list[object] = [flatten]
        width = in_features
        for size in hidden:
            layers += [nnx.Linear(width, size, kernel_init=lecun_normal, rngs=rngs), nnx.relu]
            width = size
        self.in_features = in_features
        self.layers = nnx.Sequential(*layers)
        self.head = nnx.Linear(width, num_classes, kernel_init=lecun_normal, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        size = int(jnp.size(x) // x.shape[0])
        if size != self.in_features:
            raise ValueError(
                f"MLP was built for {self.in_features} input values per example but x has {size} "
                f"(shape {x.shape}); build it with in_features={size}"
            )
        return super().__call__(x)


class _GCNN(_Stack):
    group = "p4"

    def __init__(
        self,
        in_features: int = 1,
        num_classes: int = 10,
        *,
        width: int = 10,
        depth: int = 7,
        padding: str = "zeros",
        rngs: nnx.Rngs,
    ):
        if depth < 3:
            raise ValueError(f"depth must be at least 3 (lifting, one group convolution, output), got {depth}")
        g = self.group
        layers: list[object] = [LiftingConv(in_features, width, 3, group=g, padding=padding, rngs=rngs), nnx.relu]
        for i in range(depth - 2):
            layers += [GroupConv(width, width, 3, group=g, padding=padding, rngs=rngs), nnx.relu]
            if i == 0:
                layers.append(MaxPool(2, group=g))
        layers += [
            GroupConv(width, num_classes, 3, group=g, padding=padding, rngs=rngs),
            GroupPool("max", group=g),
            GlobalPool("mean"),
        ]
        self.layers = nnx.Sequential(*layers)
        self.head = None
        self.contract = _chain(layers)


class P4CNN(_GCNN):
    """P4CNN after Cohen & Welling (2016): 7 layers of 3x3 p4 convolutions, 10 channels × 4
    orientations, one 2x2 max pool after layer 2, max over orientations, mean over positions.

    The logits are exactly invariant to quarter turns of square inputs whose size is even (so the
    pooling windows map to pooling windows), with either padding; to circular shifts by multiples
    of 2 only with ``padding="circular"``.

    Examples:
      >>> from flax import nnx
      >>> count_parameters(P4CNN(rngs=nnx.Rngs(0)))
      21760
    """

    group = "p4"


class P4MCNN(_GCNN):
    """The P4CNN architecture for p4m (turns and mirrors, 8 orientations). The default width 7
    (≈ 10 / √2) keeps the parameter count close to P4CNN's."""

    group = "p4m"

    def __init__(self, in_features: int = 1, num_classes: int = 10, *, width: int = 7, **kwargs):
        super().__init__(in_features, num_classes, width=width, **kwargs)
