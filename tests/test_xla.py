"""equivax's own programs are compiled with its XLA options; the user's settings and older XLAs win."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equivax
from equivax import _xla


@pytest.fixture
def fresh(monkeypatch):
    _xla.compiler_options.cache_clear()
    yield monkeypatch
    _xla.compiler_options.cache_clear()


def test_options_are_used_unless_xla_flags_sets_them(fresh):
    fresh.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert dict(_xla.compiler_options()) == _xla.COMPILER_OPTIONS
    _xla.compiler_options.cache_clear()
    fresh.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert _xla.compiler_options() == ()


def test_an_option_this_xla_does_not_know_is_dropped_not_an_error(fresh):
    fresh.setenv("XLA_FLAGS", "")
    fresh.setattr(_xla, "COMPILER_OPTIONS", {"xla_no_such_option_anywhere": True})
    assert _xla.compiler_options() == ()
    f = _xla.jit(lambda x: jnp.sin(x) * 2)
    np.testing.assert_array_equal(f(jnp.arange(3.0)), jnp.sin(jnp.arange(3.0)) * 2)


def test_jit_keeps_jax_jit_arguments_and_lowers(fresh):
    fresh.setenv("XLA_FLAGS", "")

    def scale(n, x):
        return x * n

    f = _xla.jit(scale, static_argnums=0)
    np.testing.assert_array_equal(f(3, jnp.ones(2)), [3.0, 3.0])
    assert "mul" in f.lower(3, jnp.ones(2)).as_text()
    assert f.__name__ == "scale"


def test_a_check_compiles_its_program_with_the_options(fresh):
    fresh.setenv("XLA_FLAGS", "")
    seen = []
    real = jax.jit

    def spy(fn, **kwargs):
        seen.append(kwargs.get("compiler_options"))
        return real(fn, **kwargs)

    fresh.setattr(_xla.jax, "jit", spy)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    result = equivax.check(lambda z: jnp.tanh(z) * 3, x, equivax.groups.rotations())
    assert result.ok, result
    assert _xla.COMPILER_OPTIONS in seen, seen
