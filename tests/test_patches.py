"""Float64 convolutions written as one matrix product (equivax._patches) for the float64 re-run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import equivax
from equivax import _patches, _xla, actions, groups, zoo
from equivax.precision import retyped


def _conv_eqn(lhs, rhs, **kwargs):
    closed = jax.make_jaxpr(lambda a, b: lax.conv_general_dilated(a, b, **kwargs))(lhs, rhs)
    (eqn,) = [e for e in closed.eqns if e.primitive.name == "conv_general_dilated"]
    return closed, eqn


# (lhs shape, rhs shape, keyword arguments of lax.conv_general_dilated)
CASES = {
    "nhwc-same": ((2, 9, 9, 8), (3, 3, 8, 16), dict(padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))),
    "nchw-valid": ((2, 12, 7, 10), (5, 12, 3, 3), dict(padding="VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))),
    "asymmetric-and-negative-padding": (
        (3, 10, 8, 6),
        (2, 3, 6, 4),
        dict(padding=((2, 0), (1, -1)), dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
    "kernel-dilation": (
        (2, 11, 11, 7),
        (3, 3, 7, 5),
        dict(padding="SAME", rhs_dilation=(2, 3), dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
    "feature-groups": (
        (2, 8, 8, 24),
        (3, 3, 8, 12),
        dict(padding="SAME", feature_group_count=3, dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
    "one-dimensional, output NCW": (
        (3, 17, 10),
        (5, 10, 3),
        dict(padding=((2, 2),), dimension_numbers=("NWC", "WIO", "NCW")),
    ),
    "three-dimensional": (
        (2, 5, 6, 4, 6),
        (2, 3, 2, 6, 9),
        dict(padding="SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")),
    ),
    "odd layouts": ((6, 2, 7, 9), (3, 8, 6, 2), dict(padding="SAME", dimension_numbers=("CNWH", "HOIW", "WCHN"))),
    "one example, kernel the size of the input": (
        (1, 3, 3, 8),
        (3, 3, 8, 4),
        dict(padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
    "one pixel, all padding": (
        (1, 1, 1, 8),
        (3, 3, 8, 4),
        dict(padding=((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_patches_compute_xlas_float64_convolution(case):
    lhs_shape, rhs_shape, kwargs = CASES[case]
    rng = np.random.default_rng(0)
    lhs, rhs = rng.normal(size=lhs_shape), rng.normal(size=rhs_shape)
    with jax.enable_x64(True):
        _, eqn = _conv_eqn(lhs, rhs, window_strides=(1,) * (len(lhs_shape) - 2), **kwargs)
        assert _patches.applies(eqn.params, lhs.shape, rhs.shape, 8), case
        want = np.asarray(jax.jit(lambda a, b: lax.conv_general_dilated_p.bind(a, b, **eqn.params))(lhs, rhs))
        got = np.asarray(jax.jit(lambda a, b: _patches.patches_conv(a, b, **eqn.params))(lhs, rhs))
    assert got.shape == want.shape and got.dtype == np.float64
    # The same sums in another order: float64 rounding apart, nowhere near float32's.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max())


@pytest.mark.parametrize(
    "lhs_shape, rhs_shape, kwargs",
    [
        ((2, 9, 9, 8), (3, 3, 8, 8), dict(window_strides=(2, 2), padding="SAME")),
        ((2, 9, 9, 8), (3, 3, 8, 8), dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=(2, 1))),
        ((2, 9, 9, 3), (3, 3, 3, 8), dict(window_strides=(1, 1), padding="SAME")),  # 2-5 input channels
        ((2, 9, 9, 8), (3, 3, 8, 32), dict(window_strides=(1, 1), padding="SAME")),  # many output channels
        ((2, 12, 12, 8), (9, 9, 8, 8), dict(window_strides=(1, 1), padding="SAME")),  # 81 taps
        ((0, 9, 9, 8), (3, 3, 8, 8), dict(window_strides=(1, 1), padding="SAME")),  # an empty batch
        ((2, 9, 9, 8), (3, 3, 8, 0), dict(window_strides=(1, 1), padding="SAME")),  # no output channels
    ],
    ids=[
        "strided",
        "input-dilated",
        "3-input-channels",
        "32-output-channels",
        "9x9-kernel",
        "empty-batch",
        "no-outputs",
    ],
)
def test_other_convolutions_keep_xlas(lhs_shape, rhs_shape, kwargs):
    _, eqn = _conv_eqn(
        jnp.ones(lhs_shape, jnp.float32),
        jnp.ones(rhs_shape, jnp.float32),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        **kwargs,
    )
    assert not _patches.applies(eqn.params, lhs_shape, rhs_shape, 8)
    assert not _patches.rewrites(eqn, np.float64)


def test_a_convolution_whose_products_exceed_the_bound_keeps_xlas(monkeypatch):
    shape, kernel = (4, 16, 16, 8), (3, 3, 8, 8)
    _, eqn = _conv_eqn(jnp.ones(shape), jnp.ones(kernel), window_strides=(1, 1), padding="SAME",
                       dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    products = _patches.patch_bytes(eqn.params, shape, kernel, 8)
    assert products == 4 * 18 * 18 * 9 * 8 * 8
    monkeypatch.setattr(_patches, "PATCH_BYTES", products)
    assert _patches.applies(eqn.params, shape, kernel, 8)
    monkeypatch.setattr(_patches, "PATCH_BYTES", products - 1)
    assert not _patches.applies(eqn.params, shape, kernel, 8)


def _small_cnn(x, w1, w2):
    h = jax.nn.relu(lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return lax.conv_general_dilated(h, w2, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_a_float64_rerun_computes_its_convolutions_as_products_only_when_asked():
    rng = np.random.default_rng(1)
    args = [rng.normal(size=s).astype(np.float32) for s in ((2, 8, 8, 8), (3, 3, 8, 8), (3, 3, 8, 4))]
    closed = jax.make_jaxpr(_small_cnn)(*args)
    with jax.enable_x64(True):
        plain, patched = retyped(closed, np.float64), retyped(closed, np.float64, patches=True)
        assert (plain.patched, patched.patched) == (0, 2)
        assert "convolution" in jax.jit(plain).lower(*args).as_text()
        assert "convolution" not in jax.jit(patched).lower(*args).as_text()
        (want,), (got,) = jax.jit(plain)(*args), jax.jit(patched)(*args)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max())


def test_convolutions_already_in_float64_and_float32_reruns_are_left_alone():
    rng = np.random.default_rng(2)
    args = [rng.normal(size=s) for s in ((2, 8, 8, 8), (3, 3, 8, 8), (3, 3, 8, 4))]
    with jax.enable_x64(True):
        closed = jax.make_jaxpr(_small_cnn)(*args)  # a float64 program
        assert retyped(closed, np.float64, patches=True).patched == 0
        assert retyped(closed, np.float32, patches=True).patched == 0
    conv = next(e for e in closed.eqns if e.primitive.name == "conv_general_dilated")
    assert not _patches.rewrites(conv, np.float64)


def test_work_bytes_counts_the_products_of_a_patched_rerun():
    x, w = jnp.ones((2, 8, 8, 8), jnp.float32), jnp.ones((3, 3, 8, 8), jnp.float32)
    jaxpr = jax.make_jaxpr(
        lambda v: lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )(x).jaxpr
    assert _xla.work_bytes(jaxpr, np.float64) == 2 * 8 * 8 * 8 * 72 * _xla._CONV_LOOP  # XLA's own loop
    assert _xla.work_bytes(jaxpr, np.float64, patches=True) == 2 * 10 * 10 * 9 * 8 * 8
    assert _xla.work_bytes(jaxpr, patches=True) == 0  # float32: a library call either way


def _checks(monkeypatch, flag):
    """An invariant (mean of a circular conv) and a broken model (zero padding), checked under shifts,
    and how many convolutions their float64 re-runs wrote as products."""
    monkeypatch.setenv("EQUIVAX_CONV_PATCHES", flag)
    written = []
    real = _patches.traced
    monkeypatch.setattr(_patches, "traced", lambda *a: written.append(1) or real(*a))
    w = jax.random.normal(jax.random.key(0), (3, 3, 8, 8)) / 8
    x = jax.random.normal(jax.random.key(1), (2, 10, 10, 8))
    circular = zoo.circular_conv(w)

    def zero_padded(v):
        return lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def invariant(v):
        return jnp.mean(jax.nn.relu(circular(v)), axis=(1, 2))

    group = groups.translations(10, shifts=[(0, 1), (2, 3)])
    results = [
        equivax.check(invariant, x, group, out_action=actions.trivial()),
        equivax.check(zero_padded, x, group),
    ]
    return results, len(written)


def test_verdicts_are_the_same_with_and_without_products(monkeypatch):
    (on, written_on), (off, written_off) = _checks(monkeypatch, "1"), _checks(monkeypatch, "0")
    assert written_on >= 2 and written_off == 0, (written_on, written_off)
    assert [r.verdicts for r in on] == [r.verdicts for r in off]
    assert on[0].verdicts == ("equivariant", "equivariant") and set(on[1].verdicts) == {"broken"}
    np.testing.assert_array_equal(on[0].rel_error, off[0].rel_error)  # the float32 run is the same program
    # Structural float64 errors agree; rounding-level ones are both at float64 rounding.
    np.testing.assert_allclose(on[1].rel_error64, off[1].rel_error64, rtol=1e-9)
    assert np.all(on[0].rel_error64 < 1e-13) and np.all(off[0].rel_error64 < 1e-13)
