"""Property tests of the checker itself: no false alarms on exact layers, no misses on planted breaks.

The layers are NNX modules whose weights Hypothesis draws, so every example reuses one compiled check.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import equivax
from equivax import actions, groups

SHIFTS = groups.translations(6, 6)


class CircularConv(nnx.Module):
    """A circular 3x3 convolution with drawn weights, optionally plus a position-dependent bump."""

    def __init__(self, kernel, bump):
        self.conv = nnx.Conv(2, 3, (3, 3), padding="CIRCULAR", rngs=nnx.Rngs(0))
        self.conv.kernel[...] = kernel
        self.bump = nnx.Param(bump)

    def __call__(self, x):
        return jnp.tanh(self.conv(x)) + self.bump[...]


class Pooled(CircularConv):
    """The mean after a large offset: exactly shift-invariant, with large float32 rounding."""

    def __call__(self, x):
        return jnp.mean(super().__call__(x) + 100.0, axis=(1, 2)) - 100.0


def drawn(seed, scale):
    kernel = jax.random.normal(jax.random.key(seed), (3, 3, 2, 3)) * scale
    x = jax.random.normal(jax.random.key(seed + 1), (2, 6, 6, 2)) * scale
    return kernel, x


@settings(max_examples=15)
@given(seed=st.integers(0, 2**16), log_scale=st.floats(-2, 2))
def test_exact_layer_is_never_flagged(seed, log_scale):
    kernel, x = drawn(seed, 10.0**log_scale)
    layer = CircularConv(kernel, jnp.zeros((6, 6, 3)))
    result = equivax.check(layer, x, SHIFTS)
    assert result.ok, result


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**16),
    exponent=st.integers(1, 5),  # a 1e-6 bump at one pixel is ~1 float32 ulp of the output: "approximate"
    pixel=st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 2)),
)
def test_planted_bump_is_always_caught(seed, exponent, pixel):
    kernel, x = drawn(seed, 1.0)
    bump = jnp.zeros((6, 6, 3)).at[pixel].set(10.0**-exponent)
    result = equivax.check(CircularConv(kernel, bump), x, SHIFTS)
    assert set(result.verdicts) == {"broken"}, result
    assert np.all(result.rel_error64 > result.noise_floor)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), log_scale=st.floats(-1, 1))
def test_invariant_readout_with_rounding_is_never_flagged(seed, log_scale):
    """A spatial mean has real float32 rounding under shifts; only the float64 re-run explains it."""
    kernel, x = drawn(seed, 10.0**log_scale)
    result = equivax.check(Pooled(kernel, jnp.zeros((6, 6, 3))), x, SHIFTS, out_action=actions.trivial())
    assert result.ok, result
