"""The one definition of relative error: traced and host versions agree, and the scaling is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equivax import _statistics as statistics


def _values(dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(0)
    spread = np.ldexp(rng.uniform(0.5, 1, 400), rng.integers(info.minexp - 20, info.maxexp, 400))
    special = [0.0, info.tiny, info.tiny / 3, info.smallest_subnormal, info.max, 1.0, 0.5, 2.0**-100, 2.0**100]
    return np.concatenate([spread, special]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_traced_power_of_two_is_frexp_s_clamped_to_a_normal_number(dtype):
    values = _values(dtype)
    with jax.enable_x64(dtype == np.float64):
        traced = np.asarray(jax.jit(lambda v: statistics._inverse_power_of_two(jnp, v))(values))
    host = statistics._inverse_power_of_two(np, values).astype(dtype)
    normal = (values == 0) | (values >= np.finfo(dtype).tiny)
    np.testing.assert_array_equal(traced[normal], host[normal])
    # XLA on CPU flushes subnormal inputs to zero: either factor keeps every product finite
    assert set(traced[~normal].tolist()) <= {0.5, 2.0**100} and (~normal).sum() >= 2
    assert np.all(np.isfinite(traced)) and np.all(traced >= np.finfo(dtype).tiny)
    exponents = np.log2(traced.astype(np.float64))
    assert np.all(exponents == np.round(exponents)) and np.all(np.abs(exponents) <= 100)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_traced_and_host_relative_errors_agree_at_any_scale(scale):
    rng = np.random.default_rng(1)
    want = (rng.normal(size=(3, 50)) * scale).astype(np.float32)
    got = (want * (1 + rng.normal(size=want.shape) * 1e-3)).astype(np.float32)
    traced = np.asarray(jax.jit(lambda a, b: statistics._relative(jnp, a, b))(got, want))
    host = statistics.relative_rows(got, want, is_batched=True)
    np.testing.assert_allclose(traced, host, rtol=1e-5)
    assert np.all((traced > 1e-4) & (traced < 1e-2))


def test_a_nan_on_either_side_drops_that_position_from_both():
    want = jnp.asarray([[1.0, 2.0, 3.0, 4.0]])
    got = jnp.asarray([[1.0, jnp.nan, 3.0, 4.5]])
    stats = statistics.element_stats(got[None], want[None], 1)
    assert not bool(stats["finite"])
    expected = 0.5 / np.sqrt(1 + 9 + 16)  # position 1 left out of both norms
    np.testing.assert_allclose(float(stats["rel"][0]), expected, rtol=1e-6)
    assert float(stats["abs_half"]) * 2 == 0.5 and int(stats["where"]) == 3
