"""Verdicts on constructs from real model code, compiled end to end (the failure classes of the
verdict issue: silent fallbacks, complex outputs, degenerate examples, mixed precision, float
group elements, precision-dependent branches, float64 models, huge outputs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import equivax
from equivax import actions, groups

pytestmark = pytest.mark.usefixtures("strict_promotion")

SHIFT = groups.translations(8, 8, shifts=[(0, 1), (2, 3)])


def images(shape=(3, 8, 8, 2), seed=0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype=dtype)


def leak(x, size):
    """A position-dependent term: the value at one pixel, added everywhere."""
    return size * x[:, 3:4, 5:6]


# -- 1. no silent fallback: generic reductions, batched while predicates, callbacks ----------------


def generic_sum(x):
    return lax.reduce(jnp.tanh(x), 0.0, lax.add, (1, 2))


def test_generic_reduce_with_a_leak_is_not_a_pass():
    f = lambda x: generic_sum(x) + 3e-5 * x[:, 3, 5]  # noqa: E731
    result = equivax.check(f, images(), SHIFT, out_action=actions.trivial())
    assert not result.ok
    assert "equivariant" not in result.verdicts


def test_reduce_window_max_pool_with_a_generic_body_is_decided():
    def pool(x):  # a circular 2x2 max pool, stride 1, with a generic (non-max-primitive) body
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="wrap")
        return lax.reduce_window(x, -jnp.inf, lambda a, b: jnp.maximum(a, b), (1, 2, 2, 1), (1, 1, 1, 1), "VALID")

    exact = lambda x: jnp.mean(pool(jnp.tanh(x)), axis=(1, 2))  # noqa: E731
    result = equivax.check(exact, images(), SHIFT, out_action=actions.trivial())
    assert "undecided" not in result.verdicts and "broken" not in result.verdicts, result


def newton_sqrt(v):
    """sqrt by a tolerance-terminated Newton iteration: a data-dependent while loop."""

    def cond(state):
        y, prev = state
        return jnp.any(jnp.abs(y - prev) > 1e-6 * y)

    def body(state):
        y, _ = state
        return 0.5 * (y + v / y), y

    return lax.while_loop(cond, body, (v + 1.0, jnp.zeros_like(v)))[0]


def test_tolerance_terminated_loops_vmapped_over_elements_are_decided():
    f = lambda x: jnp.mean(newton_sqrt(1.0 + x**2), axis=(1, 2))  # noqa: E731
    result = equivax.check(f, images(), SHIFT, out_action=actions.trivial())
    assert set(result.verdicts) <= {"equivariant", "approximate"}, result
    broken = lambda x: f(x) + 1e-4 * x[:, 3, 5]  # noqa: E731
    assert not equivax.check(broken, images(), SHIFT, out_action=actions.trivial()).ok


# -- 2. complex outputs ----------------------------------------------------------------------------


def test_complex_outputs_are_normed_as_magnitudes():
    phase = lambda x: jnp.exp(1j * x.astype(jnp.complex64))  # noqa: E731
    assert equivax.check(phase, images(), SHIFT).ok
    broken = lambda x: phase(x) + 3e-3j * x[:, 3:4, 5:6].astype(jnp.complex64)  # noqa: E731
    result = equivax.check(broken, images(), SHIFT)
    assert result.verdicts == ("broken", "broken")
    assert np.all(result.rel_error > 1e-4)  # the imaginary break is measured, not dropped


def test_fourier_coefficients_break_is_measured_at_its_size():
    def spectrum(x, bump=0.0):
        z = jnp.fft.fft2(x, axes=(1, 2))
        return jnp.abs(z) + bump * x[:, :1, :1]

    invariant = lambda x: spectrum(x)  # noqa: E731 - |FFT| is invariant to circular shifts
    result = equivax.check(invariant, images(), SHIFT, out_action=actions.trivial())
    assert result.ok, result
    broken = equivax.check(lambda x: spectrum(x, 3e-3), images(), SHIFT, out_action=actions.trivial())
    assert not broken.ok and np.all(broken.rel_error > 1e-5)


# -- 3. degenerate examples: per-example floors ------------------------------------------------------


def instance_norm(x):
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.var(x, axis=(1, 2), keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5)


def with_blank_frame(x):
    return x.at[0].set(0.3)  # a constant image, as an empty frame is after normalisation


def test_a_blank_frame_does_not_hide_a_gain_in_the_others():
    gain = 1 + 0.05 * jnp.sin(jnp.arange(64.0).reshape(8, 8))[None, :, :, None]
    f = lambda x: instance_norm(x) * gain  # noqa: E731
    result = equivax.check(f, with_blank_frame(images()), SHIFT)
    assert result.verdicts == ("broken", "broken"), result


def test_a_blank_frame_is_set_aside_with_a_note():
    result = equivax.check(lambda x: jnp.tanh(instance_norm(x) * 3.0), with_blank_frame(images()), groups.p4(8))
    assert result.ok, result
    if result.uninformative:  # the blank frame's float32 output is rounding noise
        assert 0 in result.uninformative and any("uninformative" in n for n in result.notes)


def test_a_batch_of_only_blank_frames_is_undecided_not_passed():
    x = jnp.full((2, 8, 8, 2), 0.3, jnp.float32) + jnp.arange(2.0)[:, None, None, None]
    f = lambda x: instance_norm(x) * (1 + 0.05 * jnp.arange(8.0)[None, :, None, None])  # noqa: E731
    result = equivax.check(f, x, SHIFT)
    assert not result.ok


# -- 4. mixed precision: the approximate band is measured, not one ulp of the coarsest dtype -----------


def test_one_bfloat16_scalar_does_not_widen_the_band_for_a_float32_leak():
    scale = jnp.asarray(1.5, jnp.bfloat16)
    f = lambda x: jnp.tanh(x) * scale.astype(jnp.float32) + leak(x, 1e-3)  # noqa: E731
    result = equivax.check(f, images(), SHIFT)
    assert result.verdicts == ("broken", "broken"), result


def test_bfloat16_weights_in_an_exact_convolution_pass():
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 2, 2)), jnp.bfloat16)

    def conv(x):
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap").astype(jnp.bfloat16)
        dims = ("NHWC", "HWIO", "NHWC")
        out = lax.conv_general_dilated(padded, w, (1, 1), "VALID", dimension_numbers=dims)
        return jnp.tanh(out.astype(jnp.float32))

    result = equivax.check(conv, images(), SHIFT)
    assert result.ok, result
    leaky = equivax.check(lambda x: conv(x) + leak(x, 1e-3), images(), SHIFT)
    assert not leaky.ok


def test_a_rotation_symmetric_filter_built_from_float32_trigonometry_is_not_broken():
    # a steerable-basis style filter: a radial profile on a grid, computed in float32 from angles
    angles = jnp.asarray(np.linspace(0, 2 * np.pi, 8, endpoint=False), jnp.float32)

    def f(x):
        r = jnp.arange(-2.0, 3.0)
        yy, xx = jnp.meshgrid(r, r, indexing="ij")
        ring = sum(jnp.exp(-((yy - jnp.sin(a)) ** 2 + (xx - jnp.cos(a)) ** 2)) for a in angles)
        w = jnp.broadcast_to(ring[:, :, None, None], (5, 5, 2, 2))
        padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="wrap")
        return lax.conv_general_dilated(padded, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    result = equivax.check(f, images(), groups.rotations())
    assert "broken" not in result.verdicts and "undecided" not in result.verdicts, result


# -- 5. floating group elements ---------------------------------------------------------------------


def rotation_group(n, dtype=np.float32):
    t = 2 * np.pi * np.arange(n) / n
    mats = np.stack([np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) for a in t]).astype(dtype)
    return groups.finite(mats, name=f"C{n}")


def rotate_points(g, pos):
    return pos @ g.T


def lennard_jones(pos):
    d = jnp.linalg.norm(pos[:, :, None] - pos[:, None, :] + jnp.eye(pos.shape[1])[None, :, :, None], axis=-1)
    inv6 = (0.9 / d) ** 6
    off = 1.0 - jnp.eye(pos.shape[1])
    return jnp.sum(off * (inv6**2 - inv6), axis=(1, 2))


def test_a_rotation_invariant_energy_under_float32_rotation_matrices_is_not_broken():
    pos = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 2)) * 1.5, jnp.float32)
    c6 = rotation_group(6)
    result = equivax.check(lennard_jones, pos, c6, rotate_points, actions.trivial())
    assert result.ok, result
    tilted = lambda p: lennard_jones(p) + 1e-3 * p[:, 0, 0]  # noqa: E731
    assert not equivax.check(tilted, pos, c6, rotate_points, actions.trivial()).ok


# -- 6. float64 models keep their sensitivity -------------------------------------------------------


def test_float64_model_finds_a_leak_a_hundred_times_its_own_rounding():
    with jax.enable_x64(True):
        x = images(dtype=jnp.float64)
        pooled = lambda x: jnp.mean(jnp.tanh(x), axis=(1, 2))  # noqa: E731
        fine = equivax.check(pooled, x, SHIFT, out_action=actions.trivial())
        own = np.nanmax(fine.rel_error) if np.any(fine.rel_error > 0) else 1e-16
        broken = equivax.check(lambda x: pooled(x) + 1e-13 * x[:, 3, 5], x, SHIFT, out_action=actions.trivial())
    assert fine.ok, fine
    assert own < 1e-14
    assert not broken.ok, broken


# -- 7. huge outputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rtol", [None, 1e-3])
def test_outputs_near_the_float32_limit_are_measured(rtol):
    big = lambda x: 1e38 * jnp.tanh(x)  # noqa: E731
    assert equivax.check(big, images(), SHIFT, rtol=rtol).ok
    broken = equivax.check(lambda x: big(x) + 1e36 * x[:, 3:4, 5:6], images(), SHIFT, rtol=rtol)
    assert not broken.ok
    assert np.all(np.isfinite(broken.rel_error)) and np.all(broken.rel_error > 1e-3)


# -- filter banks expanded in float32 (escnn-style exports) -----------------------------------------


def _regular_bank(rng, k, fields_in, fields_out):
    """A C4 regular-field filter bank (HWIO, channel ``4·field + orientation``): each output
    orientation ``r`` is orientation 0 turned by ``r`` quarter turns, input orientations rolled by ``r``."""
    if fields_in == 0:  # a trivial input field
        base = rng.normal(size=(k, k, 1, fields_out)) / k
        turned = [np.rot90(base, r, axes=(0, 1)) for r in range(4)]
    else:
        base = rng.normal(size=(k, k, fields_in, 4, fields_out)) / (k * np.sqrt(4 * fields_in))
        turned = [np.roll(np.rot90(base, r, axes=(0, 1)), r, axis=3) for r in range(4)]
    bank = np.stack(turned, axis=-1).astype(np.float32)
    return bank.reshape(k, k, -1, fields_out * 4)


def _expanded_in_float32(bank, rng, ulps):
    """The bank as a float32 expansion leaves it: every tap a few ulps off, independently."""
    steps = rng.integers(-ulps, ulps + 1, size=bank.shape)
    return (bank * (1 + steps * 2.0**-24)).astype(np.float32)


def _steerable_cnn(banks, biases):
    def forward(x):
        for i, (w, b) in enumerate(zip(banks, biases, strict=True)):
            x = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
            x = jax.nn.relu(x) if i < len(banks) - 1 else x
        return x

    return forward


def _regular_fields(g, y):
    """Rotate the spatial axes and turn each field's four orientation channels."""
    y = actions.image()(g, y)
    n, h, w, c = y.shape
    fields = y.reshape(n, h, w, c // 4, 4)
    return jnp.take(fields, (jnp.arange(4) - g[2]) % 4, axis=4).reshape(n, h, w, c)


ULPS = 3


@pytest.mark.parametrize("seed", [0, 1])
def test_a_bank_expanded_in_float32_is_approximate_and_a_real_asymmetry_is_broken(seed):
    rng = np.random.default_rng(seed)
    exact = [_regular_bank(rng, 5, 0, 8)] + [_regular_bank(rng, 5, 8, 8) for _ in range(3)]
    biases = [jnp.asarray(np.repeat(rng.normal(size=8) * 0.1, 4), jnp.float32) for _ in exact]
    x = images((4, 21, 21, 1), seed=seed)
    # Orientations that agree to ±3 ulps, as a bank expanded from a sampled basis in float32 does.
    stored = [jnp.asarray(_expanded_in_float32(b, rng, ULPS), jnp.float32) for b in exact]
    result = equivax.check(_steerable_cnn(stored, biases), x, groups.rotations(), actions.image(), _regular_fields)
    assert result.ok and "broken" not in result.verdicts, result
    assert any("resolution" in reason for reason in result.reasons), result
    # One output orientation of a middle layer off by 1e-3: structural, however small the bank's noise.
    wrong = np.array(stored[1])
    wrong[..., 1] *= 1 + 1e-3
    leaky = [stored[0], jnp.asarray(wrong), *stored[2:]]
    result = equivax.check(_steerable_cnn(leaky, biases), x, groups.rotations(), actions.image(), _regular_fields)
    assert set(result.verdicts) == {"broken"}, result


# -- 9. constants written as Python floats, debug prints ---------------------------------------------

SQRT3 = 3.0**0.5  # a Python float: traced into a float32 program as float32's nearest value


def spherical_l2(u):
    """Real spherical harmonics of degree 2 with their constants as Python floats, as e3nn-style
    code writes them."""
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    return jnp.stack(
        [SQRT3 * x * z, SQRT3 * x * y, y * y - 0.5 * (x * x + z * z), SQRT3 * y * z, 0.5 * SQRT3 * (z * z - x * x)],
        axis=-1,
    )


def degree_two_energy(points, tilt=0.0):
    """Σ over nodes of |Σ_neighbours e^{-r} Y₂(r̂)|²: invariant under rotations (addition theorem)."""
    rel = points[:, :, None, :] - points[:, None, :, :]
    r = jnp.sqrt(jnp.sum(rel**2, -1) + 1e-12)
    y = spherical_l2(rel / r[..., None])
    node = jnp.einsum("npq,npqc->npc", jnp.exp(-r), y)
    return jnp.sum(node * node, axis=(-1, -2))[:, None] + tilt * points[:, 0, :1]


def test_python_float_constants_are_stored_values_not_structure():
    points = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 3)), jnp.float32)
    group, vectors = equivax.matrix_groups.sampled_so3(6), equivax.fields.channels(equivax.fields.vector(3))
    exact = equivax.check(degree_two_energy, points, group, vectors, actions.trivial())
    assert exact.ok, exact.summary()
    assert "broken" not in exact.verdicts  # √3 rounded to float32 is not a bug
    tilted = equivax.check(lambda p: degree_two_energy(p, 1e-4), points, group, vectors, actions.trivial())
    assert set(tilted.verdicts) == {"broken"}, tilted.summary()


def sixfold(g, points):
    """Rotation by g·60° built from Python-float constants, one step per sixth of a turn."""
    c, s = 0.5, SQRT3 / 2

    def step(_, v):
        return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)

    return lax.fori_loop(0, g[0], step, points)


def pair_energy(points, leak=0.0):
    d2 = jnp.sum((points[:, :, None] - points[:, None]) ** 2, -1)
    return jnp.sum(jnp.exp(-d2), (1, 2))[:, None] + jnp.sum(points * points, (1, 2))[:, None] + leak * points[:, 0, :1]


def test_an_action_built_from_rounded_constants_in_a_loop_is_approximate_and_a_leak_is_broken():
    c6 = groups.finite(np.arange(6).reshape(6, 1), name="C6", compose=lambda g, h: (g + h) % 6, action=sixfold)
    points = jax.random.normal(jax.random.key(0), (2, 8, 2))
    result = equivax.check(pair_energy, points, c6, out_action=actions.trivial())
    assert result.ok and set(result.verdicts) <= {"equivariant", "approximate"}, result.summary()
    leaking = equivax.check(lambda p: pair_energy(p, 1e-4), points, c6, out_action=actions.trivial())
    assert set(leaking.verdicts) == {"broken"}, leaking.summary()


def test_debug_prints_and_callbacks_do_not_make_a_verdict_undecided(capfd):
    calls = []

    def f(x):
        jax.debug.print("mean {m}", m=jnp.mean(x))
        jax.debug.callback(lambda v: calls.append(np.asarray(v).dtype), jnp.max(x))
        return jnp.mean(jnp.tanh(x), axis=(1, 2))

    turns = [[0, 0, 1, 0], [1, 2, 2, 0], [3, 1, 3, 0]]  # a few elements: each prints once per element
    result = equivax.check(f, images(), groups.p4(8), elements=turns, out_action=actions.trivial())
    assert result.ok and "undecided" not in result.verdicts and "float64" in result.methods, result.summary()
    assert calls and set(calls) == {np.dtype(np.float32)}  # only f's own run printed: no float64 re-run of them
    assert "mean" in capfd.readouterr().out


def test_a_float64_solver_with_a_tolerance_float32_cannot_reach_is_decided_not_hung():
    def equilibrium(points):  # rescales each centred point to the root of r³ + r = |c|
        centred = points - points.mean(1, keepdims=True)
        size = jnp.linalg.norm(centred, axis=-1)

        def body(state):
            r, _ = state
            new = r - (r**3 + r - size) / (3 * r**2 + 1)
            return new, jnp.max(jnp.abs(new - r))

        r, _ = lax.while_loop(lambda state: state[1] > 1e-12, body, (size, jnp.asarray(jnp.inf, size.dtype)))
        return centred * (r / size)[..., None]

    with jax.enable_x64(True):
        points = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 3)), jnp.float64)
        vectors = equivax.fields.channels(equivax.fields.vector(3))
        result = equivax.check(equilibrium, points, equivax.matrix_groups.sampled_o3(4), vectors, vectors)
    assert result.ok and "float64" in result.methods, result.summary()  # decided by the float32 re-run


def test_float64_matrix_groups_and_fields_work_under_strict_promotion():
    """Equinox users often run with strict dtype promotion: float64 rotation matrices acting on
    vectors, pseudovectors and tensors must not trip it (this module runs every test under it)."""
    vec = equivax.fields.vector(3)
    with jax.enable_x64(True):
        points = jnp.asarray(np.random.default_rng(4).normal(size=(2, 5, 3)), jnp.float64)

        def f(p):
            c = p - p.mean(1, keepdims=True)
            outer = (c[..., :, None] * c[..., None, :]).reshape(*c.shape[:-1], 9)
            return jnp.concatenate([c, jnp.cross(c, jnp.roll(c, 1, axis=1)), outer], axis=-1)

        out = equivax.fields.channels(vec, equivax.fields.pseudovector(3), equivax.fields.tensor(vec, vec))
        result = equivax.check(f, points, equivax.matrix_groups.sampled_o3(3), equivax.fields.channels(vec), out)
    assert result.ok, result.summary()


def test_a_float8_cast_is_precision_and_says_so_while_a_rounding_function_is_checked():
    """Fake quantisation with per-slot scales (a calibration bug): as a cast to float8, exact
    arithmetic removes it and the check says so in a note; as ``jnp.round``, it is the function."""
    slots = jnp.exp(jax.random.uniform(jax.random.key(2), (8, 1), minval=-0.7, maxval=0.7)) / 16
    w = jax.random.normal(jax.random.key(1), (16, 16)) / 4
    x = jax.random.normal(jax.random.key(0), (3, 8, 16))
    perms, on_slots = equivax.sets.sampled_permutations(8, 6), equivax.sets.permutation(1)

    def cast(v):
        return jnp.tanh((v / slots).astype(jnp.float8_e4m3fn).astype(jnp.float32) * slots @ w)

    def rounded(v):
        return jnp.tanh(jnp.round(v / slots * 8) / 8 * slots @ w)

    result = equivax.check(cast, x, perms, on_slots, on_slots)
    assert any("float8_e4m3fn" in note and "jnp.round" in note for note in result.notes), result.notes
    assert not equivax.check(rounded, x, perms, on_slots, on_slots).ok
    shared = equivax.check(
        lambda v: jnp.tanh((v * 16).astype(jnp.float8_e4m3fn).astype(jnp.float32) @ w), x, perms, on_slots, on_slots
    )
    assert shared.ok and set(shared.methods) == {"exact"}  # one scale for every slot: exact
