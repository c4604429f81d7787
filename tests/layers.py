"""Layers written for the tests in plain JAX: exact ones, and ones with planted breaks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from equivax import zoo


def weights(shape, seed=0, scale=None):
    fan_in = 1
    for s in shape[:-1]:
        fan_in *= s
    scale = (1.0 / fan_in) ** 0.5 if scale is None else scale
    return jax.random.normal(jax.random.key(seed), shape) * scale


def deep_circular_cnn(depth=6, width=8, gain=3.0, seed=0):
    """``depth`` circular 3x3 convolutions with ReLU; ``gain`` > 1 makes activations grow."""
    convs = [zoo.circular_conv(weights((3, 3, 3 if i == 0 else width, width), seed + i) * gain) for i in range(depth)]

    def f(x):
        for conv in convs:
            x = jax.nn.relu(conv(x))
        return x

    return f


def p4_group_conv(w):
    """Group convolution p4 -> p4 with circular padding; ``w`` is ``(kh, kw, 4, c_in, c_out)``.

    Output orientation ``r`` correlates with the filter turned ``r`` quarter turns and its
    orientation axis rolled by ``r``.
    """
    kh, kw, _, c_in, c_out = w.shape
    bank = jnp.stack([jnp.roll(jnp.rot90(w, r, axes=(0, 1)), r, axis=2) for r in range(4)], axis=4)
    conv = zoo.circular_conv(bank.reshape(kh, kw, 4 * c_in, 4 * c_out))

    def f(x):
        n, h, wd = x.shape[:3]
        y = conv(x.reshape(n, h, wd, 4 * c_in))
        return y.reshape(n, h, wd, 4, c_out)

    return f


def p4_network(depth=8, width=6, seed=0, activation=jnp.tanh):
    """A lifting layer then ``depth - 1`` p4 group convolutions, ``activation`` between them."""
    lift = zoo.p4_lifting(weights((3, 3, 3, width), seed))
    layers = [p4_group_conv(weights((3, 3, 4, width, width), seed + 1 + i)) for i in range(depth - 1)]

    def f(x):
        x = activation(lift(x))
        for layer in layers:
            x = activation(layer(x))
        return x

    return f
