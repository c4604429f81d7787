"""Cube groups and sampled rotations: exact matrices, seeded samples, notes, and what a finite subgroup misses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equivax
from equivax import matrix_groups

CUBE = matrix_groups.cube()


@pytest.mark.parametrize(
    ("make", "size", "proper"), [(matrix_groups.cube, 48, False), (matrix_groups.cube_rotations, 24, True)]
)
def test_cube_groups_are_closed_groups_of_exact_signed_permutations(make, size, proper):
    group = make()
    table = group.elements
    assert table.shape == (size, 3, 3) and table.dtype == np.float64
    assert len({m.tobytes() for m in table}) == size and len(set(group.labels)) == size
    np.testing.assert_array_equal(table[0], np.eye(3))
    assert set(np.unique(table)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(np.einsum("gij,gkj->gik", table, table), np.broadcast_to(np.eye(3), table.shape))
    products = np.einsum("gij,hjk->ghik", table, table).reshape(-1, 3, 3)
    members = {m.tobytes() for m in table}
    assert all(p.tobytes() in members for p in products)  # closed, exactly
    dets = np.round(np.linalg.det(table))
    assert set(dets) == ({1.0} if proper else {1.0, -1.0})
    assert group.label(np.diag([1.0, 1.0, 1.0])) == "e"
    assert "subgroup" in matrix_groups.note(group) and "⊂" in group.name


@pytest.mark.parametrize(
    ("make", "dim", "dets"),
    [
        (matrix_groups.sampled_so2, 2, {1.0}),
        (matrix_groups.sampled_o2, 2, {1.0, -1.0}),
        (matrix_groups.sampled_so3, 3, {1.0}),
        (matrix_groups.sampled_o3, 3, {1.0, -1.0}),
    ],
)
def test_sampled_rotations_are_seeded_float64_orthogonal_matrices(make, dim, dets):
    group, again, other = make(8, seed=0), make(8, seed=0), make(8, seed=1)
    table = group.elements
    assert table.dtype == np.float64 and table.shape[1:] == (dim, dim)
    np.testing.assert_array_equal(table, again.elements)
    assert not np.array_equal(table, other.elements)
    np.testing.assert_allclose(
        np.einsum("gij,gkj->gik", table, table), np.broadcast_to(np.eye(dim), table.shape), atol=1e-14
    )
    assert set(np.round(np.linalg.det(table))) == dets
    np.testing.assert_array_equal(table[0], np.eye(dim))
    assert len(set(group.labels)) == len(group)
    assert "a sample, not the whole group" in matrix_groups.note(group)
    g = table[3]  # the float64 member itself: a float32 rounding of it is not a member
    np.testing.assert_allclose(group.compose(g, group.inverse(g)), np.eye(dim), atol=1e-6)


def test_sampled_o3_contains_the_inversion():
    group = matrix_groups.sampled_o3(4)
    assert group.label(-np.eye(3)) == "inversion"


def test_bad_counts():
    with pytest.raises(ValueError, match="positive number of sampled elements"):
        matrix_groups.sampled_so3(0)


def radial_vectors(p):
    """An O(3)-equivariant map of point clouds (N, n, 3): each point pulled towards the others."""
    rel = p[:, None, :, :] - p[:, :, None, :]
    return jnp.sum(rel * jnp.exp(-jnp.sum(rel**2, axis=-1, keepdims=True)), axis=2)


def test_points_are_the_default_action():
    pos = jax.random.normal(jax.random.key(0), (2, 5, 3))
    for group in (CUBE, matrix_groups.sampled_o3(6)):
        result = equivax.check(radial_vectors, pos, group)
        assert result.ok, result


def test_a_cubic_term_passes_the_cube_and_fails_sampled_rotations():
    """What the note warns about: x⁴+y⁴+z⁴ is invariant under the cube's 48 symmetries, not under O(3)."""
    pos = jax.random.normal(jax.random.key(0), (2, 5, 3))

    def cubic(p):
        quartic = jnp.sum(p**4, axis=-1, keepdims=True) / jnp.sum(p**2, axis=-1, keepdims=True) ** 2
        return radial_vectors(p) * (1 + 1e-3 * quartic)

    assert equivax.check(cubic, pos, CUBE).ok
    result = equivax.check(cubic, pos, matrix_groups.sampled_o3(6))
    assert result.verdicts[0] == "equivariant"  # the inversion leaves x⁴+y⁴+z⁴ alone
    assert set(result.verdicts[1:]) == {"broken"}, result
