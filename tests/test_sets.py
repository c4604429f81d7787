"""Permutations of set axes: the group law, the action law, validation, and checks of set and graph models."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import equivax
from equivax import fields, groups, sets

S4 = sets.symmetric(4)


def draw(data, group, label):
    return group.elements[data.draw(st.integers(0, len(group) - 1), label=label)]


@given(data=st.data())
def test_composition_and_inverse_are_those_of_permutations(data):
    g, h = draw(data, S4, "g"), draw(data, S4, "h")
    np.testing.assert_array_equal(S4.compose(g, h), [g[i] for i in h])
    np.testing.assert_array_equal(S4.compose(g, S4.inverse(g)), S4.identity)
    S4.index(np.asarray(S4.compose(g, h)))  # closed: the product is a member


@pytest.mark.parametrize(("axes", "shape"), [((1,), (2, 4, 3)), ((1, 2), (2, 4, 4)), ((2,), (1, 3, 4))])
@given(data=st.data())
def test_permutation_action_is_a_homomorphism(axes, shape, data):
    act = jax.jit(sets.permutation(axes))
    g, h = draw(data, S4, "g"), draw(data, S4, "h")
    x = jax.random.normal(jax.random.key(data.draw(st.integers(0, 3))), shape)
    np.testing.assert_array_equal(act(S4.compose(g, h), x), act(g, act(h, x)))
    np.testing.assert_array_equal(act(S4.identity, x), x)


def test_node_i_moves_to_position_g_i():
    g = np.array([2, 0, 3, 1])
    x = jnp.arange(4.0)[None, :, None]
    moved = sets.permutation(1)(g, x)
    for i in range(4):
        assert moved[0, g[i], 0] == x[0, i, 0]


def test_adjacency_is_permuted_on_both_axes():
    g = np.array([1, 2, 0, 3])
    adjacency = jnp.zeros((1, 4, 4)).at[0, 0, 3].set(1.0)  # one edge 0 -> 3
    moved = sets.permutation((1, 2))(g, adjacency)
    assert float(moved[0, g[0], g[3]]) == 1.0 and float(moved.sum()) == 1.0


def test_symmetric_group_lists_every_permutation_once():
    for n in range(1, 6):
        group = sets.symmetric(n)
        assert len(group) == len(list(itertools.permutations(range(n))))
        assert len({row.tobytes() for row in group.elements}) == len(group)
        np.testing.assert_array_equal(group.elements[0], np.arange(n))
    assert S4.labels[0] == "e" and "(0 1)" in S4.labels and "(0 1 2 3)" in S4.labels
    with pytest.raises(ValueError, match="sampled_permutations"):
        sets.symmetric(7)


def test_sampled_permutations_are_seeded_distinct_and_noted():
    first, again, other = (sets.sampled_permutations(12, 10, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(first.elements, again.elements)
    assert not np.array_equal(first.elements, other.elements)
    assert len(first) == 11 and len({row.tobytes() for row in first.elements}) == 11
    assert np.all(np.sort(first.elements, axis=1) == np.arange(12))
    assert first.labels[1] == "(0 1)"  # the swap of the first two comes first
    assert "a sample, not the whole group" in first.note
    # the note is a field: it survives a pytree round trip and a replace, and reaches every check
    rebuilt = jax.tree.map(lambda e: e, first)
    assert rebuilt.note == first.note and np.array_equal(rebuilt.elements, first.elements)
    assert dataclasses.replace(first, name="renamed").note == first.note
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 3)), jnp.float32)
    result = equivax.check(lambda v: jnp.tanh(v), x, rebuilt, in_action=sets.permutation((1,)))
    assert result.ok and first.note in result.notes
    with pytest.raises(ValueError, match="count must be a positive"):
        sets.sampled_permutations(5, 0)


def test_validation_names_the_problem_in_one_line():
    act = sets.permutation((1, 2))
    with pytest.raises(ValueError, match="axis 2 of x") as info:
        act.validate(S4, jax.ShapeDtypeStruct((1, 4, 5), jnp.float32), "in_action")
    assert "\n" not in str(info.value) and str(info.value).startswith("in_action")
    with pytest.raises(ValueError, match=r"^in_action\['nodes'\]: S4 permutes 4 members"):
        sets.permutation(1).validate(S4, {"edges": np.zeros((1, 4, 4)), "nodes": np.zeros((1, 3))}, "in_action")
    with pytest.raises(ValueError, match="needs a group of permutations"):
        act.validate(groups.dihedral(), np.zeros((1, 4, 4)), "out_action")
    with pytest.raises(ValueError, match="integers >= 1"):
        sets.permutation(0)
    with pytest.raises(ValueError, match="cannot act on axis 1"):
        sets.permutation(1)(S4.elements[1], jnp.zeros((1, 5)))


# ------------------------------------------------------------------------------------------------
# Models on sets: the group's default action permutes axis 1.
# ------------------------------------------------------------------------------------------------


def test_deep_sets_pass_and_a_running_sum_fails():
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    weights = jax.random.normal(jax.random.key(1), (3, 3))

    def deep_sets(x):
        return jnp.tanh(x @ weights + jnp.mean(x, axis=1, keepdims=True))

    def running_sum(x):
        return jnp.cumsum(x, axis=1)

    assert equivax.check(deep_sets, x, S4).ok
    result = equivax.check(running_sum, x, S4)
    assert not result.ok and result.verdicts.count("broken") == len(S4) - 1
    assert equivax.check(lambda x: jnp.sum(x, axis=1), x, S4, out_action=equivax.actions.trivial()).ok


# ------------------------------------------------------------------------------------------------
# A graph network on (adjacency, node features): permuted on both axes and on the node axis.
# ------------------------------------------------------------------------------------------------

N_NODES, N_FEATURES = 5, 3


def graph_batch(seed=0):
    key_a, key_f = jax.random.split(jax.random.key(seed))
    upper = jnp.triu((jax.random.uniform(key_a, (2, N_NODES, N_NODES)) < 0.5).astype(jnp.float32), 1)
    adjacency = upper + jnp.swapaxes(upper, 1, 2)
    return adjacency, jax.random.normal(key_f, (2, N_NODES, N_FEATURES))


def gnn(index_embedding=False):
    keys = jax.random.split(jax.random.key(3), 4)
    w_self, w_message = (jax.random.normal(k, (N_FEATURES, N_FEATURES)) for k in keys[:2])
    w_out = jax.random.normal(keys[2], (N_FEATURES, 2))
    embedding = jax.random.normal(keys[3], (N_NODES, N_FEATURES))

    def f(inputs):
        adjacency, h = inputs
        if index_embedding:
            h = h + embedding  # node i gets a vector of its own: depends on the numbering
        for _ in range(2):
            degree = jnp.sum(adjacency, axis=-1, keepdims=True) + 1.0
            h = jax.nn.relu(h @ w_self + (adjacency @ h) @ w_message / degree)
        return h @ w_out

    return f


GRAPH_ACTIONS = (sets.permutation((1, 2)), sets.permutation(1))


def test_message_passing_passes_under_node_permutations():
    result = equivax.check(gnn(), graph_batch(), sets.symmetric(N_NODES), GRAPH_ACTIONS, sets.permutation(1))
    assert result.ok, result
    assert len(result.labels) == 119


def test_a_node_index_embedding_fails():
    f = gnn(index_embedding=True)
    result = equivax.check(f, graph_batch(), sets.symmetric(N_NODES), GRAPH_ACTIONS, sets.permutation(1))
    assert set(result.verdicts) == {"broken"}, result


def test_graph_invariant_readout_with_a_field_of_channels():
    """A graph-level output that is invariant, next to node outputs: a pytree of output actions."""
    f = gnn()

    def two_outputs(inputs):
        nodes = f(inputs)
        return nodes, jnp.sum(nodes, axis=1)

    out_action = (sets.permutation(1), fields.channels(fields.trivial(), fields.trivial()))
    result = equivax.check(two_outputs, graph_batch(), sets.symmetric(N_NODES), GRAPH_ACTIONS, out_action)
    assert result.ok, result


def test_the_check_s_homomorphism_probe_accepts_permutations():
    x = jax.random.normal(jax.random.key(0), (1, 5, 5))
    equivax.actions.probe(sets.permutation((1, 2)), sets.sampled_permutations(5, 6), x, pairs=4)
    with pytest.raises(ValueError, match="not a group action"):
        equivax.actions.probe(lambda g, x: jnp.take(x, g, axis=1), S4, jnp.arange(8.0).reshape(1, 4, 2), pairs=4)
