"""An e3nn-style point-cloud network in plain JAX, checked with x = (positions, features).

Inputs: positions ``(N, n, 3)`` and per-point features ``"4x0e + 2x1o"`` (4 scalars, 2 vectors:
``(N, n, 10)``). Messages are built from relative positions: a radial network of the distance
weighs four paths (scalar→scalar, vector·direction→scalar, scalar·direction→vector,
vector→vector), summed over the other points; vectors are gated by scalars. The output is
``"2x0e + 2x1o"`` per point.

The network is checked under the 48 symmetries of the cube (exact signed permutation matrices)
and under sampled O(3) elements (exact float64 matrices); then a term of size 1e-5 along the z
axis is added to its first output vector: the cube elements that fix z still pass, the others
and every sampled rotation are caught.

Run: ``python examples/point_cloud.py`` (offline, seconds on a laptop CPU).
"""

import jax
import jax.numpy as jnp
import numpy as np

import equivax
from equivax import fields, matrix_groups, sets

IRREPS_IN = fields.irreps("4x0e + 2x1o")
IRREPS_OUT = fields.irreps("2x0e + 2x1o")
UP = jnp.array([0.0, 0.0, 1.0])


def init(key: jax.Array) -> dict[str, jax.Array]:
    shapes = {
        "radial_hidden": (6, 8),
        "radial_paths": (8, 4),
        "scalar_scalar": (4, 2),
        "vector_scalar": (2, 2),
        "scalar_vector": (4, 2),
        "vector_vector": (2, 2),
    }
    keys = jax.random.split(key, len(shapes))
    return {name: jax.random.normal(k, shape) / 2 for k, (name, shape) in zip(keys, shapes.items(), strict=True)}


def point_net(params: dict, inputs: tuple[jax.Array, jax.Array], break_size: float = 0.0) -> jax.Array:
    """``(pos (N, n, 3), feat (N, n, 10)) -> (N, n, 8)``: messages from relative positions."""
    pos, feat = inputs
    scalars, vectors = feat[..., :4], feat[..., 4:].reshape(*feat.shape[:-1], 2, 3)
    rel = pos[:, None, :, :] - pos[:, :, None, :]  # rel[b, i, j] = pos_j - pos_i
    dist = jnp.sqrt(jnp.sum(rel**2, axis=-1, keepdims=True) + 1e-12)
    direction = rel / dist
    basis = jnp.exp(-(((dist - jnp.linspace(0.0, 3.0, 6)) / 0.5) ** 2))  # radial basis of the distance
    radial = jnp.tanh(basis @ params["radial_hidden"]) @ params["radial_paths"]  # one weight per path
    s_j = scalars[:, None]  # (b, 1, j, 4): neighbour j's scalars
    v_j = jnp.broadcast_to(vectors[:, None], (*rel.shape[:3], 2, 3))
    along = jnp.einsum("bijcd,bijd->bijc", v_j, direction)  # vector · direction: a scalar
    out_s = jnp.sum(
        radial[..., 0:1] * (s_j @ params["scalar_scalar"]) + radial[..., 1:2] * (along @ params["vector_scalar"]),
        axis=2,
    )
    from_scalars = jnp.einsum("bijc,bijd->bijcd", radial[..., 2:3] * (s_j @ params["scalar_vector"]), direction)
    from_vectors = jnp.einsum("bijcd,ce->bijed", radial[..., 3:4, None] * v_j, params["vector_vector"])
    out_v = jnp.sum(from_scalars + from_vectors, axis=2) * jax.nn.sigmoid(out_s)[..., None]
    size = jnp.linalg.norm(out_s, axis=-1, keepdims=True)
    out_v = out_v.at[..., 0, :].add(break_size * size * UP)  # a fixed direction in space: breaks rotations
    return jnp.concatenate([jax.nn.silu(out_s), out_v.reshape(*out_v.shape[:-2], 6)], axis=-1)


def main() -> None:
    key_p, key_f, key_w = jax.random.split(jax.random.key(0), 3)
    x = (jax.random.normal(key_p, (2, 5, 3)), jax.random.normal(key_f, (2, 5, IRREPS_IN.dim)))
    params = init(key_w)
    in_actions = (fields.channels(fields.vector(3)), fields.channels(IRREPS_IN))
    out_action = fields.channels(IRREPS_OUT)

    def net(inputs):
        return point_net(params, inputs)

    def tilted(inputs):
        return point_net(params, inputs, break_size=1e-5)

    cube, o3 = matrix_groups.cube(), matrix_groups.sampled_o3(16, seed=0)
    print(equivax.check(net, x, cube, in_actions, out_action).summary())
    print("note:", matrix_groups.note(cube))
    print(equivax.check(net, x, o3, in_actions, out_action).summary())
    perms = (sets.permutation(1), sets.permutation(1))
    print(equivax.check(net, x, sets.symmetric(5), perms, sets.permutation(1)).summary())

    print("with a 1e-5 term along z in the first output vector:")
    result = equivax.check(tilted, x, cube, in_actions, out_action)
    print(result.summary())
    fixing = [label for label, g in zip(result.labels, result.elements, strict=True) if np.allclose(g @ UP, UP)]
    passing = [label for label, v in zip(result.labels, result.verdicts, strict=True) if v == "equivariant"]
    print("passing:", ", ".join(passing), "| fixing z:", ", ".join(fixing))
    print(equivax.check(tilted, x, o3, in_actions, out_action).summary())


if __name__ == "__main__":
    main()
