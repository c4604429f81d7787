"""An e3nn-style point-cloud network in plain JAX, checked with x = (positions, features).

Positions ``(N, n, 3)`` rotate by the matrix; features ``(N, n, 4 + 2·3)`` are 4 scalars and 2
vectors (``"4x0e + 2x1o"``). Messages are built from relative positions: a radial network of the
distance weighs four paths (scalar→scalar, vector·direction→scalar, scalar·direction→vector,
vector→vector), summed over neighbours; vectors are gated by scalars.
"""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equivax
from equivax import fields, matrix_groups, sets

IRREPS_IN = fields.irreps("4x0e + 2x1o")
IRREPS_OUT = fields.irreps("2x0e + 2x1o")
N_POINTS = 5
UP = jnp.array([0.0, 0.0, 1.0])


def init(seed=0):
    keys = jax.random.split(jax.random.key(seed), 6)
    return {
        "radial_hidden": jax.random.normal(keys[0], (6, 8)) / 2,
        "radial_paths": jax.random.normal(keys[1], (8, 4)) / 3,
        "scalar_scalar": jax.random.normal(keys[2], (4, 2)) / 2,
        "vector_scalar": jax.random.normal(keys[3], (2, 2)) / 2,
        "scalar_vector": jax.random.normal(keys[4], (4, 2)) / 2,
        "vector_vector": jax.random.normal(keys[5], (2, 2)) / 2,
    }


def point_net(params, inputs, break_size=0.0):
    """``(pos, feat) -> feat_out``, O(3)- and permutation-equivariant unless ``break_size`` is nonzero."""
    pos, feat = inputs
    scalars, vectors = feat[..., :4], feat[..., 4:].reshape(*feat.shape[:-1], 2, 3)
    rel = pos[:, None, :, :] - pos[:, :, None, :]  # rel[b, i, j] = pos_j - pos_i
    dist = jnp.sqrt(jnp.sum(rel**2, axis=-1, keepdims=True) + 1e-12)
    direction = rel / dist  # zero for j = i
    basis = jnp.exp(-(((dist - jnp.linspace(0.0, 3.0, 6)) / 0.5) ** 2))
    radial = jnp.tanh(basis @ params["radial_hidden"]) @ params["radial_paths"]  # (b, i, j, 4 paths)
    s_j, v_j = scalars[:, None], vectors[:, None]  # neighbour j's features, seen from i
    along = jnp.einsum("bijcd,bijd->bijc", jnp.broadcast_to(v_j, (*rel.shape[:3], 2, 3)), direction)
    out_s = jnp.sum(
        radial[..., :1] * (s_j @ params["scalar_scalar"]) + radial[..., 1:2] * (along @ params["vector_scalar"]),
        axis=2,
    )
    from_scalars = jnp.einsum("bijc,bijd->bijcd", s_j @ params["scalar_vector"] * radial[..., 2:3], direction)
    from_vectors = jnp.einsum("bijcd,ce->bijed", v_j * radial[..., 3:4, None], params["vector_vector"])
    out_v = jnp.sum(from_scalars + from_vectors, axis=2)  # (b, i, 2, 3)
    out_v = out_v * jax.nn.sigmoid(out_s)[..., None]  # gate vectors by invariant scalars
    size = jnp.linalg.norm(out_s, axis=-1, keepdims=True)
    out_v = out_v.at[..., 0, :].add(break_size * size * UP)  # a fixed direction: breaks rotations
    return jnp.concatenate([jax.nn.silu(out_s), out_v.reshape(*out_v.shape[:-2], 6)], axis=-1)


def point_cloud(seed=0):
    key_p, key_f = jax.random.split(jax.random.key(seed))
    return jax.random.normal(key_p, (2, N_POINTS, 3)), jax.random.normal(key_f, (2, N_POINTS, IRREPS_IN.dim))


POS_ACTION = fields.channels(fields.vector(3))
FEAT_ACTION = fields.channels(IRREPS_IN)
OUT_ACTION = fields.channels(IRREPS_OUT)


def fixes_up(element):
    return bool(np.allclose(np.asarray(element) @ np.asarray(UP), np.asarray(UP)))


def test_point_net_is_equivariant_under_the_cube_group_and_sampled_o3():
    params = init()
    f = lambda inputs: point_net(params, inputs)  # noqa: E731
    for group in (matrix_groups.cube(), matrix_groups.sampled_o3(8)):
        result = equivax.check(f, point_cloud(), group, (POS_ACTION, FEAT_ACTION), OUT_ACTION)
        assert result.ok, result


def test_a_small_break_is_caught_and_the_elements_that_fix_its_direction_pass():
    params = init()
    f = lambda inputs: point_net(params, inputs, break_size=1e-5)  # noqa: E731
    cube = matrix_groups.cube()
    result = equivax.check(f, point_cloud(), cube, (POS_ACTION, FEAT_ACTION), OUT_ACTION)
    passing = [v == "equivariant" for v in result.verdicts]
    assert passing == [fixes_up(e) for e in result.elements], result
    assert sum(passing) == 7 and result.verdicts.count("broken") == 40  # C4v about z, less the identity
    result = equivax.check(f, point_cloud(), matrix_groups.sampled_o3(8), (POS_ACTION, FEAT_ACTION), OUT_ACTION)
    assert set(result.verdicts) == {"broken"}, result


def test_point_net_is_permutation_equivariant():
    params = init()
    f = lambda inputs: point_net(params, inputs)  # noqa: E731
    result = equivax.check(
        f, point_cloud(), sets.symmetric(N_POINTS), (sets.permutation(1), sets.permutation(1)), sets.permutation(1)
    )
    assert result.ok, result


def test_positions_only_as_one_array():
    """Without pytree inputs: features made from the positions themselves (|p|² and p)."""
    params = init()

    def f(pos):
        feat = jnp.concatenate([jnp.sum(pos**2, -1, keepdims=True) * jnp.ones(4), pos, 2 * pos], axis=-1)
        return point_net(params, (pos, feat), break_size=1e-5)

    pos = point_cloud()[0]
    result = equivax.check(f, pos, matrix_groups.cube(), POS_ACTION, OUT_ACTION)
    assert [v == "equivariant" for v in result.verdicts] == [fixes_up(e) for e in result.elements], result


@pytest.mark.slow
def test_point_cloud_example_runs_and_reports():
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "point_cloud.py")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cube(48) ⊂ O(3): 47 elements, 47 equivariant" in done.stdout
    assert "7 equivariant, 40 broken" in done.stdout


def test_chunked_and_float64_checks_agree_with_the_default():
    params = init()
    f = lambda inputs: point_net(params, inputs, break_size=1e-5)  # noqa: E731
    cube = matrix_groups.cube()
    actions = ((POS_ACTION, FEAT_ACTION), OUT_ACTION)
    whole = equivax.check(f, point_cloud(), cube, *actions)
    chunked = equivax.check(f, point_cloud(), cube, *actions, chunk_size=5)
    assert chunked.verdicts == whole.verdicts
    with jax.enable_x64(True):
        pos, feat = point_cloud()
        wide = equivax.check(f, (pos.astype(jnp.float64), feat.astype(jnp.float64)), cube, *actions)
    assert wide.dtype == "float64" and wide.verdicts == whole.verdicts, wide
