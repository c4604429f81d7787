"""Group axioms, property-tested for every built-in group and for user groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import equivax
from equivax import groups

GROUPS = {
    "translations": groups.translations(5, 7),
    "translations-stride": groups.translations(6, 6, stride=2),
    "C4": groups.rotations(),
    "flips": groups.flips(),
    "D4": groups.dihedral(),
    "p4": groups.p4(5),
    "p4m": groups.p4m(4),
    "p4m-stride": groups.p4m(6, stride=3),
}


def members(group):
    return {tuple(np.asarray(g).tolist()) for g in group.elements}


def pick(group):
    return st.integers(0, len(group) - 1).map(lambda i: group.elements[i])


@pytest.mark.parametrize("name", GROUPS)
@given(data=st.data())
def test_axioms(name, data):
    group = GROUPS[name]
    g, h, k = data.draw(pick(group)), data.draw(pick(group)), data.draw(pick(group))
    compose = group.compose
    assert tuple(np.asarray(compose(g, h)).tolist()) in members(group)  # closure
    np.testing.assert_array_equal(compose(compose(g, h), k), compose(g, compose(h, k)))  # associativity
    np.testing.assert_array_equal(compose(group.identity, g), g)
    np.testing.assert_array_equal(compose(g, group.identity), g)
    np.testing.assert_array_equal(compose(g, group.inverse(g)), group.identity)
    np.testing.assert_array_equal(compose(group.inverse(g), g), group.identity)


@pytest.mark.parametrize("name", GROUPS)
def test_operations_trace_with_a_traced_element(name):
    group = GROUPS[name]
    products = jax.jit(jax.vmap(lambda g: group.compose(g, group.inverse(g))))(group.elements)
    np.testing.assert_array_equal(products, np.broadcast_to(group.identity, products.shape))


def test_sizes_labels_and_identity_first():
    assert [len(GROUPS[n]) for n in GROUPS] == [35, 9, 4, 2, 8, 100, 128, 32]
    for group in GROUPS.values():
        assert group.labels[0] == "e"
        assert len(set(group.labels)) == len(group)
        np.testing.assert_array_equal(group.elements[0], group.identity)
    assert groups.dihedral().labels == ("e", "r1", "r2", "r3", "m", "r1·m", "r2·m", "r3·m")
    assert groups.translations(4, 4).label(np.array([3, 1, 0, 0])) == "shift(-1,1)"
    assert groups.p4(4).label(np.array([0, 1, 2, 0])) == "shift(0,1)·r2"


def test_dihedral_relations():
    d4 = groups.dihedral()
    r, m = jnp.array([0, 0, 1, 0]), jnp.array([0, 0, 0, 1])
    np.testing.assert_array_equal(d4.compose(m, r), d4.compose(d4.inverse(r), m))  # m r = r⁻¹ m
    np.testing.assert_array_equal(d4.compose(m, m), d4.identity)


def test_conjugating_a_shift_by_a_turn_turns_the_shift():
    p4 = groups.p4(8)
    r, t = jnp.array([0, 0, 1, 0]), jnp.array([0, 1, 0, 0])  # t = shift one column
    conj = p4.compose(p4.compose(r, t), p4.inverse(r))
    assert p4.label(conj) == "shift(-1,0)"  # a quarter turn moves (dy, dx) to (-dx, dy)


def test_translation_arguments_are_validated():
    with pytest.raises(ValueError, match="must divide"):
        groups.translations(7, stride=2)
    with pytest.raises(ValueError, match="either shifts or stride"):
        groups.translations(4, shifts=[(1, 1)], stride=2)
    with pytest.raises(ValueError, match="positive integer"):
        groups.translations(0)
    with pytest.raises(ValueError, match="pair"):
        groups.translations(4, shifts=[(1, 2, 3)])
    assert groups.translations(4, shifts=[(-1, 0)]).labels == ("e", "shift(-1,0)")


def test_index_rejects_non_members_and_wrong_shapes():
    g = groups.translations(4, 4)
    with pytest.raises(ValueError, match="not in translations"):
        g.index(np.array([0, 0, 1, 0]))
    with pytest.raises(ValueError, match="has shape"):
        g.index(np.array([0, 0]))


def test_group_is_a_pytree_of_its_elements():
    p4 = groups.p4(3)
    leaves, treedef = jax.tree.flatten(p4)
    assert len(leaves) == 1 and leaves[0].shape == (36, 4)
    again = jax.tree.unflatten(treedef, leaves)
    assert again.name == p4.name and again.labels == p4.labels


# ---------------------------------------------------------------------------------------------
# User groups
# ---------------------------------------------------------------------------------------------


def cyclic_permutations(n):
    return [np.roll(np.eye(n, dtype=np.int32), k, axis=0) for k in range(n)]


@given(n=st.integers(2, 6), data=st.data())
def test_finite_group_of_permutation_matrices(n, data):
    group = groups.finite(cyclic_permutations(n), name=f"Z{n}")
    assert len(group) == n
    np.testing.assert_array_equal(group.identity, np.eye(n))
    g = data.draw(pick(group))
    np.testing.assert_array_equal(group.compose(g, group.inverse(g)), group.identity)
    np.testing.assert_array_equal(group.inverse(g), np.asarray(g).T)


def test_finite_group_with_integer_codes_and_custom_compose():
    z5 = groups.finite([np.array([k]) for k in range(5)], compose=lambda g, h: (g + h) % 5, name="Z5")
    np.testing.assert_array_equal(z5.inverse(np.array([2])), [3])
    assert z5.label(np.array([4])) == "s1⁴"  # the shortest word in the generator picked first


def test_finite_group_validation():
    with pytest.raises(ValueError, match="not closed"):
        groups.finite(cyclic_permutations(4)[:3])
    with pytest.raises(ValueError, match="no identity"):
        groups.finite([np.array([0]), np.array([1])], compose=lambda g, h: g)
    with pytest.raises(ValueError, match="no inverse"):
        groups.finite([np.eye(2, dtype=int), np.zeros((2, 2), dtype=int)])
    with pytest.raises(ValueError, match="not square matrices"):
        groups.finite([np.array([0]), np.array([1])])
    with pytest.raises(ValueError, match="not distinct"):
        groups.finite([np.eye(2), np.eye(2)])
    with pytest.raises(ValueError, match="labels"):
        groups.finite([np.eye(2)], labels=["a", "b"])


def test_user_group_works_in_a_check():
    """Z4 acting on the channel axis by cyclic permutation: a channel-wise tanh commutes with it."""
    perms = cyclic_permutations(4)
    group = groups.finite(perms, name="Z4 on channels", action=lambda g, x: x @ g.T.astype(x.dtype))
    x = jax.random.normal(jax.random.key(0), (3, 4))
    assert equivax.check(jnp.tanh, x, group).ok
    mix = jnp.arange(16.0).reshape(4, 4) / 10  # a dense layer does not commute with permutations
    assert not equivax.check(lambda x: x @ mix, x, group).ok
