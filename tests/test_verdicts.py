"""The verdict rule on synthetic measurements: the whole decision table, in milliseconds."""

import dataclasses

import numpy as np
import pytest

from equivax import verdicts
from equivax.verdicts import Measurements, decide

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def measured(rel, *, rel_other=None, rounding=None, **kw):
    """Measurements of E elements on B examples; a float64 re-run when ``rounding`` is given."""
    rel = np.atleast_2d(np.asarray(rel, dtype=float))
    n_el = rel.shape[0]
    base = dict(
        rel=rel,
        abs_error=np.where(rel.max(axis=1) > 0, 1.0, 0.0),
        finite=np.ones(n_el, bool),
        defined=np.ones(n_el, bool),
        y_finite=True,
        eps=EPS32,
    )
    if rounding is not None:
        base["rounding"] = np.asarray(rounding, dtype=float)
        base["rel_other"] = np.atleast_2d(np.asarray(rel if rel_other is None else rel_other, dtype=float))
        base["other_finite"] = np.ones(n_el, bool)
    base.update(kw)
    return Measurements(**base)


def test_exact_stride_and_nonfinite_come_first():
    m = measured(
        [[0.0], [0.5], [0.5]],
        rounding=[1e-7],
        defined=np.array([True, False, True]),
        finite=np.array([True, True, False]),
    )
    d = decide(m)
    assert d.verdicts == ("equivariant", "broken", "nonfinite")
    assert d.methods == ("exact", "stride", "nonfinite")
    assert np.isnan(d.rel_error[1]) and np.isnan(d.abs_error[1])
    assert decide(dataclasses.replace(m, y_finite=False)).verdicts == ("nonfinite", "broken", "nonfinite")


def test_rounding_below_the_floor_is_equivariant_and_structure_is_broken():
    # float32 errors 1e-6 on both; float64: rounding-sized vs structural
    m = measured([[1e-6], [1e-6]], rel_other=[[1e-15], [1e-6]], rounding=[1e-6])
    d = decide(m)
    floor = verdicts.SAFETY * (1e-6 * EPS64 / EPS32 + EPS64)
    assert d.verdicts == ("equivariant", "broken")
    assert d.methods == ("float64", "float64")
    assert d.noise_floor[1] == pytest.approx(floor)
    assert d.rel_error64[1] == pytest.approx(1e-6)
    assert d.rounding == pytest.approx(1e-6)


def test_one_uninformative_example_does_not_widen_the_others_floors():
    # example 1 is a blank frame through a normalisation: its rounding is 1e8
    m = measured([[5e-2, 1.0]], rel_other=[[5e-2, 1.0]], rounding=[1e-7, 1e8])
    d = decide(m)
    assert d.verdicts == ("broken",)
    assert d.uninformative == (1,)
    assert any("uninformative" in note for note in d.notes)
    # the informative example's floor (its own float32 error scaled to float64), not the blank frame's
    assert d.noise_floor[0] < 1e-6


def test_every_example_uninformative_is_undecided():
    d = decide(measured([[0.3, 0.3]], rounding=[1e8, 1e9]))
    assert d.verdicts == ("undecided",) and "uninformative" in d.reasons[0]
    assert not verdicts.is_passing(d.verdicts[0])


def test_no_second_precision_is_undecided_with_the_reason_and_the_fix():
    m = measured([[1e-6]], unavailable="no float64 re-run: primitive 'mystery'")
    d = decide(m)
    assert d.verdicts == ("undecided",) and d.methods == ("undecided",)
    assert "mystery" in d.reasons[0] and "rtol or atol" in d.reasons[0]


def test_a_rerun_that_is_not_finite_is_undecided():
    m = measured([[1e-6]], rounding=[1e-7], other_finite=np.array([False]))
    assert decide(m).verdicts == ("undecided",)


def test_runs_that_diverge_are_not_called_broken():
    # a precision-dependent branch: float32 error 6e-8, float64 error 0.9
    m = measured([[6e-8]], rel_other=[[0.9]], rounding=[1e-7])
    d = decide(m)
    assert d.verdicts == ("equivariant",) and "diverged" in d.reasons[0]
    # when f's own error is well above its rounding, the divergence leaves the question open
    m = measured([[1e-3]], rel_other=[[0.9]], rounding=[1e-7])
    d = decide(m)
    assert d.verdicts == ("undecided",) and "diverged" in d.reasons[0]


def test_a_structural_error_that_both_precisions_show_is_not_divergence():
    m = measured([[3e-3]], rel_other=[[3e-3]], rounding=[1e-7])
    assert decide(m).verdicts == ("broken",)


def test_structure_within_the_measured_resolution_is_approximate():
    # a steerable basis computed in float32: float64 error 1.5e-7, the resolution probe moves it by 1e-7
    m = measured([[2e-7]], rel_other=[[1.5e-7]], rounding=[1e-6], resolution=np.array([[1e-7]]))
    d = decide(m)
    assert d.verdicts == ("approximate",) and "resolution" in d.reasons[0]
    # a 1e-3 leak next to the same resolution stays broken
    m = dataclasses.replace(m, rel=np.array([[1e-3]]), rel_other=np.array([[1e-3]]))
    d = decide(m)
    assert d.verdicts == ("broken",) and "resolution" in d.reasons[0]


def test_no_resolution_measured_means_structure_is_broken_however_small():
    m = measured([[2e-7]], rel_other=[[1.5e-7]], rounding=[1e-6])
    assert decide(m).verdicts == ("broken",)


def test_resampling_tolerance_makes_interpolation_error_approximate():
    m = measured([[3e-3]], rounding=[1e-7], resampling_tolerance=1e-2)
    assert decide(m).verdicts == ("approximate",)
    assert decide(dataclasses.replace(m, resampling_tolerance=1e-3)).verdicts == ("broken",)


def test_float64_models_find_structure_ten_times_their_own_rounding():
    # f runs in float64; a float32 re-run measures rounding 1e-7, so its own float64 rounding is ~1.2e-16·...
    rounding = 1e-6
    own = rounding * EPS64 / EPS32
    leak = measured([[10 * own + 10 * EPS64]], rel_other=[[1e-6]], rounding=[rounding], f64=True, eps=EPS64)
    fine = measured([[2 * own]], rel_other=[[1e-6]], rounding=[rounding], f64=True, eps=EPS64)
    assert decide(leak).verdicts == ("broken",)
    assert decide(fine).verdicts == ("equivariant",)
    assert verdicts.MARGIN64 <= 10


def test_saturated_rounding_uses_the_measured_sensitivity():
    m = measured([[0.2]], rel_other=[[1e-6]], rounding=[0.5], sensitivity=np.array([1e-8]))
    assert decide(m).verdicts == ("equivariant",)
    assert decide(dataclasses.replace(m, sensitivity=np.array([1e-12]))).verdicts == ("broken",)


def test_tolerance_mode():
    m = measured([[1e-7], [1e-3], [1e-1], [np.nan]])
    m = dataclasses.replace(m, abs_error=np.array([1e-7, 1e-3, 1e-1, 1.0]), size=64)
    d = decide(m, rtol=1e-2)
    assert d.verdicts == ("equivariant", "approximate", "broken", "broken")
    assert set(d.methods) == {"tolerance"}
    assert decide(m, atol=1.0).verdicts[2] == "approximate"


def test_an_error_with_no_relative_size_is_never_a_pass():
    m = measured([[0.0]], rounding=[1e-7])
    m = dataclasses.replace(m, abs_error=np.array([1e-30]))
    assert decide(m).verdicts == ("undecided",)


def test_worst_over_examples_is_reported():
    m = measured([[1e-6, 3e-6, 2e-6]], rel_other=[[1e-6, 3e-6, 2e-6]], rounding=[1e-7, 1e-7, 1e-7])
    d = decide(m)
    assert d.rel_error[0] == pytest.approx(3e-6) and d.rel_error64[0] == pytest.approx(3e-6)


def test_candidates_are_the_elements_with_clean_evidence():
    m = measured([[1e-6], [1e-6], [0.0]], rel_other=[[1e-15], [1e-6], [0.0]], rounding=[1e-6])
    assert verdicts.candidates(m).tolist() == [False, True, False]
    assert not verdicts.candidates(measured([[1e-6]])).any()  # no re-run: nothing to probe


def test_verdict_order_and_passing():
    assert verdicts.VERDICTS[:2] == ("equivariant", "approximate")
    assert [v for v in verdicts.VERDICTS if verdicts.is_passing(v)] == ["equivariant", "approximate"]
    assert verdicts.rounding_bound("float32", 100) == pytest.approx(64 * EPS32 * 10)


def test_an_element_whose_errors_scale_with_the_precision_is_rounding_whatever_f_x_predicted():
    """f(x) computes exactly on integer coordinates (its rounding reads 1e-15), its rotations do not:
    a float64 error at the float32 error times eps64/eps32 is that element's rounding; the same
    float64 error without a float32 one to scale it is structure."""
    rounding = [1e-15, 1e-15]
    scaled = decide(measured([[1.4e-3, 9e-4]], rel_other=[[2.0e-12, 1.5e-12]], rounding=rounding))
    assert scaled.verdicts == ("equivariant",), scaled.reasons
    structure = decide(measured([[2e-8, 1e-8]], rel_other=[[2.0e-12, 1.5e-12]], rounding=rounding))
    assert structure.verdicts == ("broken",), structure.reasons
    hidden = decide(measured([[1.4e-3, 9e-4]], rel_other=[[1e-8, 1.5e-12]], rounding=rounding))
    assert hidden.verdicts == ("broken",), hidden.reasons  # structure well below float32's own error
    chance = decide(measured([[0.0, 9e-4]], rel_other=[[1.0e-12, 1.5e-12]], rounding=rounding))
    assert chance.verdicts == ("equivariant",), chance.reasons  # bit-exact in float32 on one example by chance
    zero_row = decide(measured([[np.inf, 0.0]], rel_other=[[np.inf, 0.0]], rounding=rounding))
    assert zero_row.verdicts == ("broken",), zero_row.reasons  # an integer output of zeros against non-zeros


def test_integer_coordinates_rotated_by_float32_matrices_are_not_broken():
    """One-pass covariance invariants of voxel coordinates (integers near 100): exact on x in float32,
    cancelling catastrophically once rotated, in both precisions alike."""
    import jax.numpy as jnp

    import equivax
    from equivax import actions, fields, matrix_groups

    def invariants(p):
        m = p.mean(1)
        c = jnp.einsum("npi,npj->nij", p, p) / p.shape[1] - m[:, :, None] * m[:, None, :]
        return jnp.stack([jnp.trace(c, axis1=1, axis2=2), jnp.sum(c * c, (1, 2))], -1)

    voxels = np.random.default_rng(0).integers(-3, 4, (3, 16, 3)) + np.array([100, 60, 180])
    x = jnp.asarray(voxels, jnp.float32)
    on_points = fields.channels(fields.vector(3))
    result = equivax.check(invariants, x, matrix_groups.sampled_so3(8), on_points, actions.trivial())
    assert result.ok and "broken" not in result.verdicts, result.summary()
    lattice = jnp.asarray(np.random.default_rng(0).integers(-3, 4, (2, 16, 3)) + np.array([100, -60, 80]), jnp.float32)
    gyration = lambda p: jnp.mean(jnp.sum(p**2, -1), 1) - jnp.sum(jnp.mean(p, 1) ** 2, -1)  # noqa: E731 - cancels
    result = equivax.check(gyration, lattice, matrix_groups.sampled_so3(8), on_points, actions.trivial())
    assert result.ok and "broken" not in result.verdicts, result.summary()
    skewed = lambda p: invariants(p) * (1 + 1e-4 * jnp.tanh(p[:, :1, 0]))  # noqa: E731 - reads one coordinate
    assert not equivax.check(skewed, x, matrix_groups.sampled_so3(8), on_points, actions.trivial()).ok
