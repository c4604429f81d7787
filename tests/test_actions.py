"""Actions: consistency with jnp.roll/rot90/flip, and the homomorphism law ρ(gh) = ρ(g)ρ(h)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from equivax import actions, groups

P4M = groups.p4m(6)


def feature_map(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


CASES = {
    "image-p4m": (P4M, actions.image(), (2, 6, 6, 3)),
    "image-rect-translations": (groups.translations(4, 6), actions.image(), (1, 4, 6, 2)),
    "image-flips-rect": (groups.flips(), actions.image(), (1, 3, 5, 1)),
    "regular-p4": (groups.p4(5), actions.regular(groups.p4(5)), (1, 5, 5, 4, 2)),
    "regular-p4m": (P4M, actions.regular(P4M), (1, 6, 6, 8, 2)),
    "regular-D4": (groups.dihedral(), actions.regular(groups.dihedral()), (1, 3, 3, 8, 1)),
    "regular-flips": (groups.flips(), actions.regular(groups.flips()), (1, 3, 3, 2, 1)),
    "strided-p4m": (groups.p4m(6, stride=2), actions.strided(2), (1, 3, 3, 2)),
    "regular-strided": (groups.p4(8, stride=4), actions.regular(groups.p4(8), stride=4), (1, 2, 2, 4, 1)),
    "trivial": (P4M, actions.trivial(), (2, 3)),
    "tree": (P4M, actions.tree((actions.image(), actions.trivial())), None),
}


def sample(shape, seed=0):
    if shape is None:
        return (feature_map((1, 6, 6, 2), seed), feature_map((1, 3), seed + 1))
    return feature_map(shape, seed)


@pytest.mark.parametrize("name", CASES)
@given(data=st.data())
def test_homomorphism(name, data):
    group, act, shape = CASES[name]
    i, j = data.draw(st.integers(0, len(group) - 1)), data.draw(st.integers(0, len(group) - 1))
    g, h = group.elements[i], group.elements[j]
    x = sample(shape, seed=data.draw(st.integers(0, 3)))
    left = act(group.compose(g, h), x)
    right = act(g, act(h, x))
    jax.tree.map(np.testing.assert_array_equal, left, right)


@pytest.mark.parametrize("name", CASES)
def test_identity_acts_trivially_and_vmaps_over_elements(name):
    group, act, shape = CASES[name]
    x = sample(shape)
    jax.tree.map(np.testing.assert_array_equal, act(group.identity, x), x)
    out = jax.jit(jax.vmap(act, in_axes=(0, None)))(group.elements, x)
    assert jax.tree.leaves(out)[0].shape[0] == len(group)


def test_image_action_matches_numpy_conventions():
    x = feature_map((1, 6, 6, 1))
    act = actions.image()
    np.testing.assert_array_equal(act(jnp.array([0, 0, 1, 0]), x), jnp.rot90(x, 1, axes=(1, 2)))
    np.testing.assert_array_equal(act(jnp.array([0, 0, 3, 0]), x), jnp.rot90(x, 3, axes=(1, 2)))
    np.testing.assert_array_equal(act(jnp.array([0, 0, 0, 1]), x), jnp.flip(x, axis=2))
    np.testing.assert_array_equal(act(jnp.array([2, 5, 0, 0]), x), jnp.roll(x, (2, 5), axis=(1, 2)))
    expected = jnp.roll(jnp.rot90(jnp.flip(x, 2), 1, axes=(1, 2)), (1, 2), axis=(1, 2))
    np.testing.assert_array_equal(act(jnp.array([1, 2, 1, 1]), x), expected)


def test_odd_sized_rotation_about_the_centre_pixel():
    x = jnp.zeros((1, 5, 5, 1)).at[0, 2, 2, 0].set(1.0)
    turned = actions.image()(jnp.array([0, 0, 1, 0]), x)
    np.testing.assert_array_equal(turned, x)


def test_regular_action_permutes_orientations_cyclically():
    x = jnp.broadcast_to(jnp.arange(4.0)[:, None], (1, 3, 3, 4, 1))
    turned = actions.regular(groups.rotations())(jnp.array([0, 0, 1, 0]), x)
    np.testing.assert_array_equal(turned[0, 0, 0, :, 0], [3.0, 0.0, 1.0, 2.0])


def test_strided_action_divides_shifts_and_knows_its_domain():
    act = actions.strided(2)
    x = feature_map((1, 4, 4, 1))
    np.testing.assert_array_equal(act(jnp.array([2, 4, 0, 0]), x), jnp.roll(x, (1, 2), axis=(1, 2)))
    assert bool(act.defined(jnp.array([2, 4, 0, 0])))
    assert not bool(act.defined(jnp.array([1, 0, 0, 0])))
    assert not bool(actions.tree((actions.trivial(), act)).defined(jnp.array([0, 3, 0, 0])))


def test_equal_constructions_hash_alike():
    assert actions.image() == actions.image() and hash(actions.strided(2)) == hash(actions.image(2))
    assert actions.regular(groups.p4(4)) == actions.regular(groups.p4(4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        actions.strided(0)
    with pytest.raises(ValueError, match="no point group"):
        actions.regular(groups.finite([np.eye(2, dtype=int)]))
    with pytest.raises(ValueError, match="orientation axis"):
        actions.regular(groups.rotations())(jnp.zeros(4, jnp.int32), jnp.zeros((1, 3, 3, 8, 1)))
    with pytest.raises(ValueError, match="spatial axes"):
        actions.image()(jnp.zeros(4, jnp.int32), jnp.zeros((3, 3)))
    with pytest.raises(TypeError, match="every leaf"):
        actions.tree((actions.image(), 3))
