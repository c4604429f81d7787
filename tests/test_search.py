"""Worst-case search (equivax.search): finds rare violations that random inputs miss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import equivax
from equivax import continuous, zoo
from equivax.search import worst_case

SIZE = 16


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Gaussian test data from NumPy (JAX's CPU compile of its generator takes seconds per shape)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.fixture(scope="module")
def planted():
    """A circular conv plus a violation along one input direction v: eps·<x, v>²·m."""
    conv = zoo.circular_conv(normal(0, (3, 3, 1, 2)) / 3)
    v = normal(1, (SIZE, SIZE, 1))
    v = v / jnp.linalg.norm(v)
    m = normal(2, (SIZE, SIZE, 2))

    def f(x):
        return conv(x) + 1e-2 * jnp.einsum("nhwc,hwc->n", x, v)[:, None, None, None] ** 2 * m

    group = equivax.groups.translations(SIZE, shifts=[(0, 1), (2, 3)])
    x0 = normal(1, (4, SIZE, SIZE, 1))
    return f, group, x0, worst_case(f, x0, group, steps=60, learning_rate=0.1)


def test_search_finds_what_random_sampling_misses(planted):
    f, group, _, found = planted
    inputs = normal(2, (1000, SIZE, SIZE, 1))
    sampled = equivax.check(f, inputs, group, rtol=1.0)  # all 1,000 in one vmapped call
    factor = np.min(found.errors / sampled.rel_error)
    assert factor >= 10, (found.errors, sampled.rel_error)


def test_result_layout_and_fixed_norm(planted):
    _, group, x0, found = planted
    assert found.labels == group.labels[1:] and found.history.shape == (60, 2)
    assert found.inputs.shape == (2, SIZE, SIZE, 1)
    norms = np.linalg.norm(np.asarray(x0).reshape(4, -1), axis=1)
    for worst in found.inputs:
        assert np.min(np.abs(norms - np.linalg.norm(worst))) < 1e-3 * norms.max()
    assert np.all(found.errors >= found.initial_errors) and found.worst in (0, 1)
    assert "shift(0,1)" in str(found)


def test_an_exact_layer_stays_at_rounding():
    w = jnp.zeros((3, 3, 1, 2)).at[1, 1].set(1.0) + 0.1 * normal(3, (3, 3, 1, 2))
    x0 = normal(4, (2, SIZE, SIZE, 1))
    group = continuous.shifts([(0.5, 0.25), (0.3, -0.7)])
    found = worst_case(zoo.circular_conv(w), x0, group, steps=30, optimizer=optax.sgd(0.1))
    assert np.max(found.errors) <= 1e-5, found.errors


def test_arguments_are_checked():
    group = equivax.groups.translations(4)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        worst_case(lambda x: x, jnp.ones((1, 4, 4, 1)), group, steps=0)
    with pytest.raises(ValueError, match="all-zero example"):
        worst_case(lambda x: x, jnp.zeros((1, 4, 4, 1)), group)
    with pytest.raises(ValueError, match="is not in"):
        worst_case(lambda x: x, jnp.ones((1, 4, 4, 1)), group, elements=[(9, 9, 9, 9)])
