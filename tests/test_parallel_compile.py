"""The other-precision program compiled ahead, on a background thread (``EQUIVAX_PARALLEL_COMPILE``).

On by default with 4 or more cores; the suite runs with it off (conftest). These tests switch it
on and compare every verdict and number with the on-demand path, on the cases where the two could
differ: some elements bit-exact and others not (the re-run pads the subset), a float64 program (a
float32 re-run), foreign code (the refusal travels through the background thread), a forced
second-precision device, and a check whose elements are all bit-exact (it returns without waiting).
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equivax
from equivax import actions, groups

pytestmark = pytest.mark.usefixtures("strict_promotion")

_COMPILES = collections.Counter()
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _COMPILES.update([event]) if event.endswith("backend_compile_duration") else None
)


def images(shape=(2, 8, 8, 2), seed=0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def conv(w, x, padding):
    if padding == "circular":
        x, padding = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap"), "VALID"
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


W = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 2, 2)) / 3, jnp.float32)


def symmetric(w):
    ws = [jnp.rot90(w, k, axes=(0, 1)) for k in range(4)]
    return sum(ws) / 4


@pytest.mark.parametrize(
    ("flag", "cores", "ahead"), [(None, 2, False), (None, 8, True), ("1", 2, True), ("0", 8, False)]
)
def test_ahead_of_time_compilation_is_on_with_four_cores_or_when_asked(monkeypatch, flag, cores, ahead):
    from equivax import _program

    if flag is None:
        monkeypatch.delenv("EQUIVAX_PARALLEL_COMPILE", raising=False)
    else:
        monkeypatch.setenv("EQUIVAX_PARALLEL_COMPILE", flag)
    monkeypatch.setattr(_program.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert _program._ahead_of_time() is ahead


def both_ways(monkeypatch, f, *args, **kwargs):
    """The same check with the ahead-of-time compilation on and off, each from an empty cache."""
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("EQUIVAX_PARALLEL_COMPILE", flag)
        equivax.clear_cache()
        results.append(equivax.check(f, *args, **kwargs))
        equivax.block_until_compiled()
    return results


def same(a, b):
    assert a.verdicts == b.verdicts
    np.testing.assert_array_equal(a.rel_error, b.rel_error)
    for x, y in ((a.rel_error64, b.rel_error64), (a.rounding, b.rounding)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


def test_a_subset_of_elements_re_run_gives_the_numbers_of_the_on_demand_path(monkeypatch):
    # a rotation-symmetric circular conv under p4: shifts are bit-exact, quarter turns are rounding
    f = lambda x: conv(symmetric(W), x, "circular")  # noqa: E731
    elements = [(0, 1, 0, 0), (0, 0, 1, 0), (2, 3, 0, 0), (1, 0, 3, 0)]
    on, off = both_ways(monkeypatch, f, images(), groups.p4(8), elements=elements)
    same(on, off)
    assert set(on.verdicts) == {"equivariant"}
    assert on.rel_error64 is not None and np.isnan(on.rel_error64).any() and not np.isnan(on.rel_error64).all()


def test_a_broken_model_is_broken_either_way(monkeypatch):
    f = lambda x: conv(W, x, "SAME")  # noqa: E731 - zero padding breaks shifts at the border
    on, off = both_ways(monkeypatch, f, images(), groups.translations(8, 8, shifts=[(0, 1), (2, 3)]))
    same(on, off)
    assert set(on.verdicts) == {"broken"}


def test_a_float64_program_is_re_run_in_float32_from_the_background_thread(monkeypatch, recwarn):
    with jax.enable_x64(True):
        w = W.astype(jnp.float64)
        f = lambda x: jnp.tanh(conv(symmetric(w), x, "circular"))  # noqa: E731
        on, off = both_ways(
            monkeypatch, f, images(dtype=jnp.float64), groups.p4(8), elements=[(0, 1, 1, 0), (2, 0, 3, 0)]
        )
    same(on, off)
    assert on.ok and on.dtype == "float64"
    assert not [w for w in recwarn if "int64" in str(w.message)], "the re-run lost x64 on its thread"


def test_foreign_code_is_refused_through_the_background_thread(monkeypatch):
    def host(v):
        return np.tanh(v)

    def f(x):
        y = jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="sequential")
        return conv(W, y, "SAME")  # broken at the border, by how much float32 alone cannot say

    on, off = both_ways(monkeypatch, f, images(), groups.translations(8, 8, shifts=[(1, 2)]))
    assert on.verdicts == off.verdicts == ("undecided",)
    assert on.reasons == off.reasons and "foreign code (pure_callback)" in on.reasons[0]


def test_the_forced_second_device_receives_the_ahead_compiled_program(monkeypatch):
    monkeypatch.setenv("EQUIVAX_SECOND_PRECISION_DEVICE", "cpu")
    f = lambda x: conv(symmetric(W), x, "SAME")  # noqa: E731
    on, off = both_ways(monkeypatch, f, images(), groups.rotations())
    same(on, off)


def test_a_bit_exact_check_returns_and_its_later_re_run_compiles_nothing(monkeypatch):
    monkeypatch.setenv("EQUIVAX_PARALLEL_COMPILE", "1")
    equivax.clear_cache()
    leak = {"eps": 0.0}
    x = images()
    group = groups.translations(8, 8, shifts=[(0, 1), (3, 5)])

    def f(x, leak):
        return conv(W, x, "circular") + leak * x[:, :1, :1, :]

    model = jax.tree_util.Partial(f, leak=jnp.float32(0.0))  # the leak is a parameter: one program
    first = equivax.check(model, x, group, out_action=actions.image())
    assert first.ok and np.all(first.rel_error == 0)
    equivax.block_until_compiled()
    before = _COMPILES["/jax/core/compile/backend_compile_duration"]
    broken = equivax.check(jax.tree_util.Partial(f, leak=jnp.float32(1e-3)), x, group)
    assert set(broken.verdicts) == {"broken"} and broken.rel_error64 is not None
    assert _COMPILES["/jax/core/compile/backend_compile_duration"] == before, "the float64 program compiled again"
    del leak
