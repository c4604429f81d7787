"""Property tests of your own layers: copy this file into your test suite.

    pytest examples/property_test_example.py --equivax-summary

Each test draws inputs (structured images: noise, smooth fields, checkerboards, spikes, real
digits) and group elements with Hypothesis, and asserts f(g·x) = g·f(x). A failure shrinks to the
simplest counterexample: a 1-pixel shift, one quarter turn, a constant image.
"""

import jax.numpy as jnp
import pytest
from flax import nnx
from hypothesis import given, settings

import equivax
from equivax import actions, groups, strategies, zoo

# No deadline (the first example compiles), 50 examples: the profile equivax registers.
EQUIVAX = settings.get_profile("equivax-ci")
SIZE = 16
P4 = groups.p4(SIZE)
SHIFTS = groups.translations(SIZE, SIZE)


def blur(x):
    """A layer of yours: a symmetric 3x3 blur with circular padding."""
    for axis in (1, 2):
        x = (jnp.roll(x, 1, axis) + 2 * x + jnp.roll(x, -1, axis)) / 4
    return x


# 1. The three-line property: the blur commutes with every circular shift and quarter turn.
@settings(EQUIVAX)
@given(strategies.cases(P4, shape=(2, SIZE, SIZE, 1)))
def test_blur_is_p4_equivariant(case):
    equivax.assert_equivariant(blur, case.x, P4, elements=[case.g])


# 2. A stride: after 2x2 pooling only even shifts survive, acting as shifts by half as much.
def pooled(x):
    return zoo.max_pool(2)(blur(x))


@settings(EQUIVAX)
@given(strategies.cases(groups.translations(SIZE, SIZE, stride=2), shape=(2, SIZE, SIZE, 3)))
def test_pooled_blur_is_equivariant_to_even_shifts(case):
    equivax.assert_equivariant(pooled, case.x, SHIFTS, out_action=actions.strided(2), elements=[case.g])


# 3. A Flax layer with a declared contract: test it against its own promise.
LAYER = equivax.nn.GroupConv(2, 2, 3, group="p4", padding="circular", rngs=nnx.Rngs(0))


@settings(EQUIVAX, max_examples=20)
@given(strategies.cases(P4, shape=(1, SIZE, SIZE, 4, 2)))
def test_group_conv_keeps_its_contract(case):
    in_action, out_action = equivax.nn.contract(LAYER).actions()
    equivax.assert_equivariant(LAYER, case.x, P4, in_action, out_action, elements=[case.g])


# 4. Invariance of a whole model's logits to quarter turns, checked on every element at once.
@pytest.mark.equivax
def test_p4cnn_logits_are_invariant_to_quarter_turns():
    model = equivax.nn.P4CNN(width=2, depth=3, rngs=nnx.Rngs(0))
    x = jnp.linspace(-1, 1, 2 * SIZE * SIZE).reshape(2, SIZE, SIZE, 1)
    equivax.assert_equivariant(model, x, groups.rotations(), out_action=actions.trivial())
