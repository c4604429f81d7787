"""Re-evaluation in float64 must equal what a float64 program computes, nested programs included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend import core as jex

from equivax.precision import RetypeError, retype_value, retyped


@jax.custom_vjp
def triple(x):
    return 3.0 * x


triple.defvjp(lambda x: (triple(x), None), lambda _, g: (3.0 * g,))


def program(x, w, float_dtype, complex_dtype):
    """Every construct the re-run must see through: jit, scan, cond, while, custom_jvp/vjp, remat, fft.

    Constants are exact in float32 (1.125, not 1.1): the re-run keeps the program's float32 values
    and makes only its arithmetic more precise, so a literal 1.1 would stay 1.10000002.
    """
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jax.jit(lambda t: jnp.tanh(t) * 2.0)(y)
    total, _ = lax.scan(lambda c, row: (c + row.sum(), c), 0.0, y)
    y = lax.cond(total > 0, lambda a: a * 1.5, lambda a: a - 0.25, y)
    y = jax.nn.relu(y) + triple(y) + jax.checkpoint(jnp.sin)(y)
    _, y = lax.while_loop(lambda s: s[0] < 3, lambda s: (s[0] + 1, s[1] * 1.125), (0, y))
    y = y + lax.map(lambda r: r / 3.0, y, batch_size=1)
    spectrum = jnp.fft.fft2(y.astype(complex_dtype), axes=(1, 2))
    offsets = jnp.arange(y.shape[-1], dtype=float_dtype)
    dot = lax.dot_general(y, w[0, 0], (((3,), (1,)), ((), ())), preferred_element_type=float_dtype)
    return spectrum.real + offsets + float_dtype(1e-8) + dot.sum()


def test_float64_rerun_matches_a_float64_program_exactly():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 3))
    closed = jax.make_jaxpr(lambda x, w: program(x, w, jnp.float32, jnp.complex64))(x, w)
    with jax.enable_x64(True):
        (rerun,) = jax.jit(retyped(closed, jnp.float64))(x, w)
        x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
        reference = program(x64, w64, jnp.float64, jnp.complex128)
    assert rerun.dtype == jnp.float64
    float32 = program(x, w, jnp.float32, jnp.complex64)
    assert np.max(np.abs(np.asarray(float32, np.float64) - np.asarray(reference))) > 1e-7  # float32 rounds
    np.testing.assert_allclose(rerun, reference, rtol=1e-13, atol=1e-12)


def test_closed_over_constants_and_literals_are_promoted():
    tiny = jnp.float32(1e-9)
    closed = jax.make_jaxpr(lambda x: (x + tiny) - x)(jnp.float32(1.0))
    assert float(jex.jaxpr_as_fun(closed)(jnp.float32(1.0))[0]) == 0.0  # lost in float32
    with jax.enable_x64(True):
        (value,) = retyped(closed, jnp.float64)(1.0)
    assert value == pytest.approx(1e-9, rel=1e-6)


def test_reduce_precision_is_dropped():
    closed = jax.make_jaxpr(lambda x: lax.reduce_precision(x, exponent_bits=5, mantissa_bits=2))(jnp.float32(1.1))
    with jax.enable_x64(True):
        (value,) = retyped(closed, jnp.float64)(1.1)
    assert float(value) == pytest.approx(1.1)


def test_demotion_to_float32():
    with jax.enable_x64(True):
        closed = jax.make_jaxpr(lambda x: jnp.sum(x * 1e-3))(jnp.ones(10, jnp.float64))
        (value,) = retyped(closed, jnp.float32)(np.ones(10))
    assert value.dtype == jnp.float32


def test_integers_and_keys_are_left_alone():
    assert retype_value(np.arange(3, dtype=np.int32), np.float64).dtype == np.int32
    assert retype_value(np.ones(2, np.float32), np.float64).dtype == np.float64
    assert retype_value(np.ones(2, np.complex64), np.float64).dtype == np.complex128


def test_random_floats_made_from_bits_survive():
    closed = jax.make_jaxpr(lambda x: x + jax.random.uniform(jax.random.key(0), x.shape))(jnp.ones(3))
    with jax.enable_x64(True):
        (value,) = retyped(closed, jnp.float64)(np.ones(3))
    np.testing.assert_allclose(value, 1 + jax.random.uniform(jax.random.key(0), (3,)), rtol=1e-7)


def test_unknown_nested_programs_are_refused():
    opaque = jex.Primitive("opaque_call")
    opaque.def_abstract_eval(lambda x, *, body: x)
    body = jax.make_jaxpr(jnp.sin)(1.0)
    closed = jax.make_jaxpr(lambda x: opaque.bind(x, body=body))(jnp.float32(1.0))
    with pytest.raises(RetypeError, match="opaque_call"), jax.enable_x64(True):
        retyped(closed, jnp.float64)(1.0)


def test_scatters_and_linear_solves_are_promoted():
    def program(a, x):
        y = x.at[0].add(1e-9).at[1].mul(3.0).at[2].max(0.5).at[3].set(0.25)
        return jnp.linalg.solve(a, y) + jax.ops.segment_sum(y, jnp.array([0, 0, 1, 1]), num_segments=4)

    a = jnp.eye(4) * 3 + 0.1
    x = jnp.arange(4.0)
    closed = jax.make_jaxpr(program)(a, x)
    with jax.enable_x64(True):
        (rerun,) = retyped(closed, jnp.float64)(np.asarray(a, np.float64), np.asarray(x, np.float64))
        reference = program(jnp.asarray(a, jnp.float64), jnp.asarray(x, jnp.float64))
    assert rerun.dtype == jnp.float64
    np.testing.assert_allclose(rerun, reference, rtol=1e-14)


def test_rounded_literals_are_told_from_exact_ones():
    from equivax.precision import inexact_literal

    assert not any(inexact_literal(np.float32(v)) for v in (0.5, 3.0, 1000.0, -0.75, 2.0**-20, 0.0, np.inf))
    assert all(inexact_literal(np.float32(v)) for v in (0.1, 3.0**0.5, 1e-5, 1 / 3))
    assert not inexact_literal(np.float64(0.1))  # float64 is what a re-run computes in


def test_moved_literals_move_half_an_ulp_together_and_flip():
    s = np.float32(3.0**0.5 / 2)
    closed = jax.make_jaxpr(lambda v: jnp.stack([0.5 * v - (3.0**0.5 / 2) * v, -(3.0**0.5 / 2) * v]))(jnp.float32(1))
    with jax.enable_x64(True):
        plain = retyped(closed, jnp.float64)
        up = np.asarray(jax.jit(retyped(closed, jnp.float64, (1, False)))(1.0)[0])
        down = np.asarray(jax.jit(retyped(closed, jnp.float64, (1, True)))(1.0)[0])
        same = np.asarray(jax.jit(plain)(1.0)[0])
    assert plain.literal_eps == float(np.finfo(np.float32).eps)
    np.testing.assert_array_equal(same, [0.5 - np.float64(s), -np.float64(s)])
    moved_up, moved_down = 0.5 - up[0], 0.5 - down[0]  # the constant as each program saw it
    half = np.float64(s) * np.finfo(np.float32).eps / 2
    np.testing.assert_allclose([abs(moved_up - s), abs(moved_down - s)], half, rtol=1e-6)
    assert np.sign(moved_up - s) == -np.sign(moved_down - s)
    np.testing.assert_allclose([-up[1], -down[1]], [moved_up, moved_down], rtol=1e-15)  # one sign for ±√3/2


def newton_root(s, tol):
    """r with r³ + r = s, iterated until the step is below ``tol``."""

    def body(state):
        r, _ = state
        new = r - (r**3 + r - s) / (3 * r**2 + 1)
        return new, jnp.max(jnp.abs(new - r))

    return lax.while_loop(lambda state: state[1] > tol, body, (s, jnp.asarray(jnp.inf, s.dtype)))[0]


def test_a_loop_whose_tolerance_is_below_the_rerun_precision_stops_where_its_state_repeats():
    with jax.enable_x64(True):
        s = jnp.linspace(0.5, 3.0, 7, dtype=jnp.float64)
        closed = jax.make_jaxpr(lambda s: newton_root(s, 1e-12))(s)  # float32 cannot get steps that small
        (root32,) = jax.jit(retyped(closed, jnp.float32))(s)
        (root64,) = jax.jit(retyped(closed, jnp.float64))(s)
    assert root32.dtype == jnp.float32
    np.testing.assert_allclose(root32, root64, rtol=4e-7)  # as close as float32 gets
    np.testing.assert_allclose(root64**3 + root64, s, rtol=1e-14)


def test_a_loop_that_neither_ends_nor_repeats_is_cut_off_with_nan(monkeypatch):
    from equivax import _rerun_rules

    monkeypatch.setattr(_rerun_rules, "WHILE_LIMIT", 50)
    count_up = lambda v: lax.while_loop(lambda c: c[0] < 1000, lambda c: (c[0] + 1, c[1] * 1.01), (0, v))  # noqa: E731
    closed = jax.make_jaxpr(count_up)(jnp.float32(1))
    with jax.enable_x64(True):
        steps, value = jax.jit(retyped(closed, jnp.float64))(1.0)
    assert int(steps) == 50 and np.isnan(value)  # never a value the loop did not reach
    short = jax.make_jaxpr(lambda v: lax.while_loop(lambda c: c[0] < 20, lambda c: (c[0] + 1, c[1] * 1.25), (0, v)))
    with jax.enable_x64(True):
        steps, value = jax.jit(retyped(short(jnp.float32(1)), jnp.float64))(1.0)
    assert int(steps) == 20 and value == 1.25**20
