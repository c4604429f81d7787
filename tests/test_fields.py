"""Field actions and representations: homomorphism laws, the vector convention, validation, and a
vector-field CNN checked under p4m."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import equivax
from equivax import actions, fields, groups, matrix_groups, strategies

D4 = groups.dihedral()
C4 = groups.rotations()
P4M = groups.p4m(4)
CUBE = matrix_groups.cube()
O3 = matrix_groups.sampled_o3(6, seed=1)

#: Every built-in representation with a group it fits; exact groups first.
PLANAR_REPS = {
    "trivial": fields.trivial(),
    "sign": fields.sign(),
    "vector": fields.vector(),
    "pseudovector": fields.pseudovector(),
    "tensor": fields.tensor(fields.vector(), fields.vector()),
    "tensor3": fields.tensor(fields.sign(), fields.vector(), fields.pseudovector()),
    "regular-D4": fields.regular(D4),
    "direct-sum": fields.direct_sum(fields.trivial(), fields.vector(), fields.regular(D4)),
    "table": fields.table(D4, [np.eye(1) * (-1) ** (k + m) for k, m in groups.POINT_D4]),
    "function": fields.function(lambda g: jnp.eye(1) * (-1.0) ** (g[2] + g[3]), 1),
}
MATRIX_REPS = {
    "trivial": fields.trivial(),
    "sign": fields.sign(),
    "vector3": fields.vector(3),
    "pseudovector3": fields.pseudovector(3),
    "tensor3": fields.tensor(fields.vector(3), fields.vector(3)),
    "0o": fields.wigner_d(0, -1),
    "1e": fields.wigner_d(1, 1),
    "2e": fields.wigner_d(2),
    "3o": fields.wigner_d(3),
    "irreps": fields.irreps("2x0e + 1x1o + 1x2e"),
}


def NOT_TRACEABLE(g):
    return jnp.linalg.det(g)[None, None]  # planar elements are vectors: det fails


def draw_pair(data, group):
    elements = strategies.elements(group, include_identity=True)
    return data.draw(elements, label="g"), data.draw(elements, label="h")


def assert_homomorphism(rep, group, g, h, atol):
    gh = group.compose(jnp.asarray(g), jnp.asarray(h))
    np.testing.assert_allclose(np.asarray(rep(gh), float), np.asarray(rep(g) @ rep(h), float), atol=atol)
    np.testing.assert_allclose(np.asarray(rep(group.identity), float), np.eye(rep.dim), atol=atol)


@pytest.mark.parametrize("name", PLANAR_REPS)
@given(data=st.data())
def test_planar_representations_are_homomorphisms(name, data):
    rep = PLANAR_REPS[name]
    g, h = draw_pair(data, P4M)
    assert_homomorphism(rep, P4M, g, h, atol=0)


@given(data=st.data())
def test_regular_representation_of_c4_is_a_homomorphism(data):
    p4 = groups.p4(4)
    g, h = draw_pair(data, p4)
    assert_homomorphism(fields.regular(p4), p4, g, h, atol=0)
    assert_homomorphism(fields.regular(C4), p4, g, h, atol=0)


@pytest.mark.parametrize("name", MATRIX_REPS)
@given(data=st.data())
def test_matrix_representations_are_homomorphisms(name, data):
    rep = MATRIX_REPS[name]
    g, h = draw_pair(data, CUBE)
    assert_homomorphism(rep, CUBE, g, h, atol=1e-6)
    g, h = draw_pair(data, O3)  # products of sampled rotations are rotations too, members or not
    assert_homomorphism(rep, O3, g, h, atol=1e-5)


@pytest.mark.parametrize(
    ("act", "shape"),
    [
        (fields.field(fields.vector()), (1, 4, 4, 2)),
        (fields.field(fields.trivial(), fields.pseudovector(), fields.regular(D4)), (1, 4, 4, 11)),
        (fields.field(fields.tensor(fields.vector(), fields.vector())), (2, 4, 4, 4)),
    ],
)
@given(data=st.data())
def test_field_actions_compose(act, shape, data):
    g, h = draw_pair(data, P4M)
    x = jax.random.normal(jax.random.key(data.draw(st.integers(0, 3))), shape)
    jitted = jax.jit(act)
    left = jitted(P4M.compose(g, h), x)
    right = jitted(g, jitted(h, x))
    np.testing.assert_allclose(left, right, atol=1e-6)
    np.testing.assert_array_equal(jitted(P4M.identity, x), x)


@pytest.mark.parametrize("group", [CUBE, O3], ids=["cube", "sampled-o3"])
@given(data=st.data())
def test_channel_actions_compose(group, data):
    act = jax.jit(fields.channels(fields.irreps("1x0o + 2x1o + 1x1e + 1x2e")))
    g, h = draw_pair(data, group)
    x = jax.random.normal(jax.random.key(data.draw(st.integers(0, 3))), (2, 3, act.rep.dim))
    np.testing.assert_allclose(act(group.compose(g, h), x), act(g, act(h, x)), atol=1e-5)
    np.testing.assert_allclose(act(group.identity, x), x, atol=1e-6)


def test_homomorphism_error_is_zero_for_representations_and_catches_a_wrong_table():
    assert fields.homomorphism_error(fields.tensor(fields.vector(), fields.sign()), D4) == 0.0
    assert fields.homomorphism_error(fields.wigner_d(2), CUBE) < 1e-6
    not_a_rep = fields.function(lambda g: jnp.eye(1) * (-1.0) ** (g[2] // 2 + g[3]), 1)
    assert fields.homomorphism_error(not_a_rep, D4) == 2.0


def gradient(x):
    """Central circular differences ``(∂x/∂row, ∂x/∂col)`` of a scalar image ``(N, H, W, 1)``."""
    d_row = (jnp.roll(x, -1, axis=1) - jnp.roll(x, 1, axis=1)) / 2
    d_col = (jnp.roll(x, -1, axis=2) - jnp.roll(x, 1, axis=2)) / 2
    return jnp.concatenate([d_row, d_col], axis=-1)


@pytest.mark.parametrize("index", range(1, len(groups.p4m(5))))
def test_gradient_of_a_moved_image_is_the_moved_gradient_field(index):
    group = groups.p4m(5)
    g = group.elements[index]
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 1))
    moved_gradient = gradient(actions.image()(g, x))
    np.testing.assert_allclose(moved_gradient, fields.field(fields.vector())(g, gradient(x)), atol=1e-6)


def test_the_gradient_test_tells_conventions_apart():
    """The opposite turning sense, or (x, y) component order, would fail the test above."""
    g = jnp.array([0, 0, 1, 0])
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 1))
    turned = gradient(actions.image()(g, x))
    clockwise = fields.field(fields.vector())(jnp.array([0, 0, 3, 0]), gradient(x))
    moved_pixels = actions.image()(g, gradient(x))
    assert not np.allclose(turned, clockwise, atol=1e-3)
    assert not np.allclose(turned, moved_pixels, atol=1e-3)  # pixels moved, components not turned


def test_a_quarter_turn_sends_right_to_up():
    v = jnp.zeros((1, 3, 3, 2)).at[0, 1, 1].set(jnp.array([0.0, 1.0]))
    turned = fields.field(fields.vector())(jnp.array([0, 0, 1, 0]), v)
    np.testing.assert_array_equal(turned[0, 1, 1], [-1.0, 0.0])


def test_regular_field_matches_the_regular_action_on_the_orientation_axis():
    x = jax.random.normal(jax.random.key(1), (1, 4, 4, 8))
    for g in P4M.elements[::7]:
        by_field = fields.field(fields.regular(P4M))(g, x)
        by_axis = actions.regular(P4M)(g, x[..., None])[..., 0]
        np.testing.assert_array_equal(by_field, by_axis)


def test_tensor_product_acts_on_outer_products():
    u = jax.random.normal(jax.random.key(2), (1, 4, 4, 2))
    outer = (u[..., :, None] * u[..., None, :]).reshape(1, 4, 4, 4)
    for g in P4M.elements[::5]:
        moved_u = fields.field(fields.vector())(g, u)
        expected = (moved_u[..., :, None] * moved_u[..., None, :]).reshape(1, 4, 4, 4)
        np.testing.assert_allclose(fields.field(fields.tensor(fields.vector(), fields.vector()))(g, outer), expected)


def test_pseudovectors_and_signs_flip_under_mirrors_only():
    mirror, turn = jnp.array([0, 0, 0, 1]), jnp.array([0, 0, 1, 0])
    np.testing.assert_array_equal(fields.pseudovector()(mirror), -fields.vector()(mirror))
    np.testing.assert_array_equal(fields.pseudovector()(turn), fields.vector()(turn))
    assert int(fields.sign()(mirror)[0, 0]) == -1 and int(fields.sign()(turn)[0, 0]) == 1


def test_wigner_d_parities_and_orthogonality():
    for g in O3.elements:
        det = np.linalg.det(g)
        np.testing.assert_allclose(fields.wigner_d(1)(g), g, atol=1e-6)
        np.testing.assert_allclose(fields.wigner_d(1, 1)(g), det * g, atol=1e-6)
        d2 = np.asarray(fields.wigner_d(2)(g))
        np.testing.assert_allclose(d2 @ d2.T, np.eye(5), atol=1e-5)
    inversion = -np.eye(3)
    assert float(fields.wigner_d(2)(inversion)[0, 0]) == pytest.approx(1.0)
    assert float(fields.wigner_d(2, -1)(inversion)[0, 0]) == pytest.approx(-1.0)
    assert fields.irreps("3x0e + 2x1o + 2e").dim == 3 + 6 + 5


def test_degree_two_acts_like_a_symmetric_traceless_matrix():
    """D²(R) describes S -> R S Rᵀ on symmetric traceless S: the 5 numbers ⟨B_i, S⟩ transform by it."""
    s = np.array([[1.0, 2.0, 0.5], [2.0, -3.0, 1.0], [0.5, 1.0, 2.0]])
    basis = fields.wigner_d(2)(np.eye(3))  # the identity; the basis itself is read through D below
    assert basis.shape == (5, 5)
    g = O3.elements[3]
    rotated = g @ s @ g.T
    # Coordinates in the representation's own basis: find them by least squares on D(e_k) images.
    # A direct check: ‖S‖ is preserved and D² commutes with the rotation of S as a 9-vector.
    lifted = np.kron(g, g)
    np.testing.assert_allclose(lifted @ s.reshape(-1), rotated.reshape(-1), atol=1e-12)


@pytest.mark.parametrize(
    ("act", "group", "x", "message"),
    [
        (fields.field(fields.vector()), D4, jax.ShapeDtypeStruct((1, 4, 4, 3), jnp.float32), "has 2 components"),
        (fields.field(fields.vector()), CUBE, jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.float32), "planar elements"),
        (fields.field(fields.vector()), groups.p4(4), jax.ShapeDtypeStruct((1, 5, 5, 2), jnp.float32), "4x4"),
        (fields.field(fields.vector()), D4, jax.ShapeDtypeStruct((1, 4, 6, 2), jnp.float32), "square"),
        (fields.field(fields.vector()), D4, jax.ShapeDtypeStruct((4, 2), jnp.float32), "(N, H, W, C)"),
        (fields.field(fields.regular(C4)), D4, jax.ShapeDtypeStruct((1, 4, 4, 4), jnp.float32), "r0·m"),
        (fields.field(fields.vector(3)), D4, jax.ShapeDtypeStruct((1, 4, 4, 3), jnp.float32), "vector(2)"),
        (fields.channels(fields.vector(2)), CUBE, jax.ShapeDtypeStruct((1, 5, 2), jnp.float32), "vector(3)"),
        (fields.channels(fields.wigner_d(2)), D4, jax.ShapeDtypeStruct((1, 5, 5), jnp.float32), "3x3 rotation"),
        (fields.channels(fields.table(C4, np.ones((4, 1, 1)))), D4, np.zeros((1, 1)), "built for C4"),
        (fields.channels(fields.function(lambda g: jnp.eye(2), 3)), D4, np.zeros((1, 3)), "returns shape (2, 2)"),
        (fields.channels(fields.function(NOT_TRACEABLE, 1)), D4, np.zeros((1, 1)), "traceable"),
    ],
)
def test_validation_names_the_problem_in_one_line(act, group, x, message):
    with pytest.raises(ValueError, match="in_action") as info:
        act.validate(group, x, "in_action")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_actions_act_leafwise_and_validation_names_the_leaf_at_fault():
    act = fields.channels(fields.vector(3))
    assert act.leafwise and fields.field(fields.vector()).leafwise
    g = CUBE.elements[5]
    a, b = np.ones((2, 4, 3)), np.arange(6.0).reshape(2, 3)
    out = act(g, (a, {"v": b}))
    np.testing.assert_allclose(out[1]["v"], act(g, b))
    np.testing.assert_allclose(out[0], a @ g.T)
    act.validate(CUBE, (a, {"v": b}), "in_action")  # fits: no error
    with pytest.raises(ValueError, match=r"^in_action\[1\]\['v'\]: .* has 2 channels"):
        act.validate(CUBE, (a, {"v": np.zeros((2, 2))}), "in_action")
    with pytest.raises(ValueError, match=r"^out_action\[0\]: .*square"):
        fields.field(fields.vector()).validate(D4, [np.zeros((1, 3, 4, 2))], "out_action")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        fields.vector(0)
    with pytest.raises(ValueError, match="degree must be an integer from 0 to 4"):
        fields.wigner_d(5)
    with pytest.raises(ValueError, match="parity must be"):
        fields.wigner_d(1, 0)
    with pytest.raises(ValueError, match="cannot read the irrep"):
        fields.irreps("2x1q")
    with pytest.raises(ValueError, match="one square matrix per element of C4"):
        fields.table(C4, np.ones((3, 2, 2)))
    with pytest.raises(TypeError, match="takes representations"):
        fields.field(fields.vector(), 2)
    with pytest.raises(ValueError, match="planar group"):
        fields.regular(CUBE)
    with pytest.raises(ValueError, match="channels"):
        fields.field(fields.vector())(D4.elements[1], jnp.zeros((1, 4, 4, 3)))


def test_equal_constructions_hash_alike():
    assert fields.field(fields.vector(), fields.trivial()) == fields.field(fields.vector(), fields.trivial())
    assert hash(fields.channels(fields.irreps("0e + 1o"))) == hash(fields.channels(fields.irreps("1x0e+1x1o")))


# ------------------------------------------------------------------------------------------------
# A vector-field CNN, D4-equivariant by construction, checked under p4m with a field action.
# ------------------------------------------------------------------------------------------------


def symmetrise(kernel, rep_in, rep_out):
    """K(p) -> mean over D4 of ρ_out(g) K(g⁻¹p) ρ_in(g)⁻¹ for a 3x3 kernel (3, 3, out, in), in float64
    on the host. The constraint only permutes entries and flips signs, so the float32 rounding of
    the result is exactly equivariant too."""
    kernel = np.asarray(kernel, np.float64)
    total = np.zeros_like(kernel)
    for g in D4.elements:
        moved = np.asarray(actions.image()(g, kernel.reshape(1, 3, 3, -1))).reshape(kernel.shape)  # K(g⁻¹p)
        total += np.asarray(rep_out(g), np.float64) @ moved @ np.asarray(rep_in(g), np.float64).T
    return jnp.asarray(total / len(D4), jnp.float32)


def conv(kernel, v):
    """Circular 3x3 convolution of a field: out(q) = Σ_p K(p) v(q + p)."""
    out = 0.0
    for i in range(3):
        for j in range(3):
            out = out + jnp.roll(v, (1 - i, 1 - j), axis=(1, 2)) @ kernel[i, j].T
    return out


def vector_cnn(nudge=0.0):
    keys = jax.random.split(jax.random.key(7), 2)
    rep_in = fields.direct_sum(fields.trivial(), fields.vector())
    k1 = symmetrise(jax.random.normal(keys[0], (3, 3, 2, 3)), rep_in, fields.vector())
    k2 = symmetrise(jax.random.normal(keys[1], (3, 3, 2, 2)), fields.vector(), fields.vector())
    k2 = k2.at[0, 1, 0, 0].add(nudge)

    def f(x):
        hidden = conv(k1, x)
        hidden = hidden * jax.nn.sigmoid(jnp.sum(hidden**2, axis=-1, keepdims=True))  # a norm gate
        return conv(k2, hidden)

    return f, fields.field(fields.trivial(), fields.vector()), fields.field(fields.vector())


def test_vector_field_cnn_is_p4m_equivariant_and_a_nudged_tap_is_caught():
    group = groups.p4m(4)
    x = jax.random.normal(jax.random.key(3), (2, 4, 4, 3))
    f, act_in, act_out = vector_cnn()
    result = equivax.check(f, x, group, act_in, act_out)
    assert result.ok, result
    # 3e-6 on one O(1) tap, about 25 float32 ulps: its float64 error is 9 times the measured
    # resolution of these float32-symmetrised kernels (1e-6, 8 ulps, is within 4 times it).
    broken, act_in, act_out = vector_cnn(nudge=3e-6)
    result = equivax.check(broken, x, group, act_in, act_out)
    # The nudged tap (offset up, row component to row component) is left as it is by shifts and by
    # the mirror of the width axis (with any shift): exactly those elements pass.
    fixing = [(e[2], e[3]) in ((0, 0), (0, 1)) for e in result.elements]
    assert [v == "equivariant" for v in result.verdicts] == fixing, result
    assert result.verdicts.count("broken") == 6 * 16


def test_the_cnn_with_scalar_actions_is_caught():
    """Checked with the plain image action (components not turned) the same CNN fails: the field action matters."""
    f, _, _ = vector_cnn()
    x = jax.random.normal(jax.random.key(3), (1, 4, 4, 3))
    result = equivax.check(f, x, D4, actions.image(), actions.image())
    assert not result.ok


@pytest.mark.slow
def test_vector_field_example_runs_and_reports():
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "vector_field.py")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "p4m(6x6): 287 elements, 287 equivariant (ok; float32)"
    assert lines[1] == "p4m(6x6): 287 elements, 71 equivariant, 216 broken (NOT equivariant; float32)"
    assert "['e', 'm']" in lines[2] and "7 broken" in lines[-1]


@pytest.mark.parametrize(
    ("act", "group", "shape"),
    [
        (fields.field(fields.vector(), fields.regular(D4)), P4M, (1, 4, 4, 10)),
        (fields.channels(fields.irreps("1x0o + 1x1e + 1x2e")), CUBE, (1, 3, 9)),
        (fields.channels(fields.irreps("1x1o + 1x3o")), O3, (1, 3, 10)),
    ],
)
def test_the_check_s_homomorphism_probe_accepts_the_built_ins(act, group, shape):
    actions.probe(act, group, jax.random.normal(jax.random.key(0), shape), pairs=4)


def test_the_probe_catches_a_representation_that_is_not_one():
    half_turns = fields.function(lambda g: jnp.eye(1) * (-1.0) ** (g[2] // 2), 1)
    with pytest.raises(ValueError, match="not a group action"):
        actions.probe(fields.field(half_turns), groups.p4(4), jnp.ones((1, 4, 4, 1)), pairs=6)


def test_an_output_action_that_does_not_fit_names_f_s_output_and_the_fix():
    """The output action is applied while the check is traced, before any validation could see the
    output's shape: its refusal must still name f's output (x is fine) in one line."""
    pos = jax.random.normal(jax.random.key(0), (2, 5, 3))
    w = jax.random.normal(jax.random.key(1), (3, 14))
    vec = fields.channels(fields.vector(3))
    drops_one = lambda p: jnp.tanh(p @ w)  # noqa: E731 - 14 channels where the irreps have 15
    with pytest.raises(ValueError, match=r"^out_action cannot act on f's output \(shapes \[\(2, 5, 14\)\]\)") as err:
        irreps = fields.channels(fields.irreps("4x0e+2x1o+1x2e"))
        equivax.check(drops_one, pos, matrix_groups.sampled_o3(4), vec, irreps)
    assert "\n" not in str(err.value) and "15 components" in str(err.value)
    two = lambda p: (2.0 * p, jnp.sum(p**2, -1, keepdims=True) @ w[:1, :6])  # noqa: E731
    with pytest.raises(ValueError, match=r"holds 2 arrays: give each its own action, out_action=\(a, b, \.\.\.\)"):
        equivax.check(two, pos, matrix_groups.sampled_so3(4), vec, vec)
    with pytest.raises(ValueError, match="the last axis of f's output has 3 channels"):
        output = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
        fields.field(fields.vector()).validate(groups.p4m(8), output, "out_action")
