"""equivax's own programs are compiled with its XLA options; the user's settings and older XLAs win."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equivax
from equivax import _xla, zoo


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


@pytest.fixture
def tiered(fresh):
    """The quick tier as users get it: no level in XLA_FLAGS (the suite sets one), on CPU."""
    fresh.setenv("XLA_FLAGS", "")
    fresh.delenv("EQUIVAX_QUICK_COMPILE", raising=False)
    return fresh


def _scaled_sum(w, x):
    return jnp.sum(jnp.tanh(x * w), axis=-1)


def test_the_first_call_compiles_quickly_and_later_calls_upgrade_once_runs_cost_that(tiered):
    levels = []
    real = _xla._Jit.lower

    def spy(self, *args):
        lowered = real(self, *args)
        compile_ = lowered.compile

        def recorded(options=None):
            levels.append((options or {}).get("xla_backend_optimization_level", "default"))
            return compile_(options)

        lowered.compile = recorded
        return lowered

    tiered.setattr(_xla._Jit, "lower", spy)
    args = (jnp.float32(0.5), jnp.linspace(-2.0, 2.0, 12, dtype=jnp.float32).reshape(3, 4))
    program = _xla.Tiered(_scaled_sum, _xla.work_bytes(jax.make_jaxpr(_scaled_sum)(*args).jaxpr))
    expected = jax.jit(_scaled_sum)(*args)
    np.testing.assert_allclose(program(*args), expected, rtol=1e-6)
    assert program.tier == "quick" and levels == [0], (program.tier, levels)
    program._budget = program._spent  # as if its runs had now cost what the quick compile did
    np.testing.assert_allclose(program(*args), expected, rtol=1e-6)
    assert program.tier == "full" and levels == [0, "default"], (program.tier, levels)
    for _ in range(3):  # no further compiles
        np.testing.assert_allclose(program(*args), expected, rtol=1e-6)
    assert levels == [0, "default"]


@pytest.mark.parametrize(
    "env, work",
    [
        ({"EQUIVAX_QUICK_COMPILE": "0"}, 1),
        ({"XLA_FLAGS": "--xla_backend_optimization_level=1"}, 1),
        ({}, _xla.QUICK_BYTES + 1),
    ],
    ids=["switched-off", "level-in-xla-flags", "too-much-work"],
)
def test_the_quick_tier_is_skipped_when_off_pinned_or_too_big(tiered, env, work):
    for key, value in env.items():
        tiered.setenv(key, value)
    program = _xla.Tiered(_scaled_sum, work)
    args = (jnp.float32(2.0), jnp.ones((2, 3), jnp.float32))
    np.testing.assert_allclose(program(*args), jax.jit(_scaled_sum)(*args), rtol=1e-6)
    assert program.tier == "jit"


def test_a_program_whose_full_compile_costs_more_quick_compiles_stays_quick_for_more_work_and_longer(tiered):
    # Shapes no other test compiles: a quick compile loaded from the suite's cache takes less time
    # than the first run, which upgrades the program at once.
    args = (jnp.float32(2.0), jnp.ones((3, 7), jnp.float32))
    assert _xla.Tiered(_scaled_sum, 2 * _xla.QUICK_BYTES).tier is None
    plain = _xla.Tiered(_scaled_sum, 2 * _xla.QUICK_BYTES)
    plain(*args)
    assert plain.tier == "jit"  # saves one quick compile: QUICK_BYTES of work at most
    costly = _xla.Tiered(_scaled_sum, 2 * _xla.QUICK_BYTES, full_compile=4.0)
    costly(*args)
    assert costly.tier == "quick"  # saves three
    costly._budget, costly._spent = 1.0, 0.0
    costly._upgrade(2.9)
    assert costly.tier == "quick"
    costly._upgrade(0.2)  # its runs have now cost three quick compiles
    assert costly.tier == "full"
    np.testing.assert_allclose(costly(*args), jax.jit(_scaled_sum)(*args), rtol=1e-6)


def test_arguments_unlike_the_first_call_hand_over_to_jit(tiered):
    program = _xla.Tiered(_scaled_sum, 1)
    np.testing.assert_allclose(program(jnp.float32(1.0), jnp.ones((2, 3), jnp.float32)), [np.tanh(1.0) * 3] * 2)
    assert program.tier == "quick"
    wider = jnp.ones((2, 5), jnp.float32)  # another shape: the quick executable refuses it
    np.testing.assert_allclose(program(jnp.float32(1.0), wider), [np.tanh(1.0) * 5] * 2, rtol=1e-6)
    assert program.tier == "jit"


def test_work_bytes_counts_loops_per_trip_and_not_library_calls():
    x = jnp.ones((4, 8), jnp.float32)
    one = _xla.work_bytes(jax.make_jaxpr(jnp.tanh)(x).jaxpr)
    assert one == 4 * 8 * 4
    looped = jax.make_jaxpr(lambda v: jax.lax.scan(lambda c, _: (jnp.tanh(c), None), v, None, length=10)[0])(x)
    assert _xla.work_bytes(looped.jaxpr) >= 10 * one
    matmul = jax.make_jaxpr(lambda a: jax.lax.dot_general(a, a, (((1,), (1,)), ((), ()))))(x)
    assert _xla.work_bytes(matmul.jaxpr) == 0


def test_verdicts_agree_in_both_tiers(tiered):
    """The quick tier changes how fast the program runs, not what the check decides."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)

    def conv(kernel):
        return lambda z: jnp.mean(zoo.circular_conv(kernel)(z), axis=(1, 2))

    def verdicts():
        equivax.clear_cache()
        group = equivax.groups.translations(8, shifts=[(1, 0), (0, 3)])
        ok = equivax.check(conv(w), x, group, out_action=equivax.actions.trivial())
        broken = equivax.check(zoo.circular_conv(w), x, equivax.groups.rotations())  # a random filter
        return ok, broken

    quick = verdicts()
    tiered.setenv("EQUIVAX_QUICK_COMPILE", "0")
    full = verdicts()
    for a, b in zip(quick, full, strict=True):
        assert a.verdicts == b.verdicts, (a, b)
        np.testing.assert_allclose(a.rel_error, b.rel_error, rtol=1e-3, atol=1e-12)
    assert quick[0].ok and not quick[1].ok


def test_work_bytes_weighs_pooling_windows_and_float64_convolutions():
    x = jnp.ones((2, 8, 8, 3), jnp.float32)
    w = jnp.ones((3, 3, 3, 3), jnp.float32)
    conv = jax.make_jaxpr(
        lambda v: jax.lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )(x).jaxpr
    assert _xla.work_bytes(conv) == 0  # float32: a library call
    # Its float64 re-run: XLA's own loop, weighed per multiply-add (2 x 8 x 8 x 3 outputs, 27 each).
    assert _xla.work_bytes(conv, np.float64) == 2 * 8 * 8 * 3 * 27 * _xla._CONV_LOOP
    pool = jax.make_jaxpr(
        lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
    )(x).jaxpr
    assert _xla.work_bytes(pool) == 9 * x.size * 4
    half = jax.make_jaxpr(jnp.tanh)(x.astype(jnp.float16)).jaxpr
    assert _xla.work_bytes(half) == _xla.work_bytes(jax.make_jaxpr(jnp.tanh)(x).jaxpr) / 2 * 16


def _conv_jaxpr(c_in, c_out):
    x, w = jnp.ones((2, 12, 12, c_in), jnp.float32), jnp.ones((3, 3, c_in, c_out), jnp.float32)
    return jax.make_jaxpr(
        lambda v: jax.lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )(x).jaxpr


@pytest.fixture
def probes():
    """The convolution probes' answers forgotten before and after (a failing probe caches ``False``)."""
    _xla._compiled_as_library.cache_clear()
    yield
    _xla._compiled_as_library.cache_clear()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="asks XLA on CPU which convolutions are library calls")
def test_float64_convolutions_a_library_takes_count_nothing(monkeypatch, probes):
    # XLA on CPU hands float64 convolutions with more than 16 channels to YNNPACK, and emits
    # narrower ones as its own loops; asked of XLA by compiling the convolution alone.
    narrow, wide = _conv_jaxpr(8, 8), _conv_jaxpr(8, 40)
    assert not _xla._library_conv(narrow.eqns[0], np.dtype(np.float64))
    assert _xla.work_bytes(narrow, np.float64) == 2 * 12 * 12 * 8 * 72 * _xla._CONV_LOOP
    assert _xla._library_conv(wide.eqns[0], np.dtype(np.float64))
    assert _xla.work_bytes(wide, np.float64) == 0
    # One probe per shape apart from the batch size.
    assert _xla._compiled_as_library.cache_info().currsize == 2
    w = jnp.ones((3, 3, 8, 40), jnp.float32)
    bigger = jax.make_jaxpr(
        lambda v: jax.lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )(jnp.ones((16, 12, 12, 8))).jaxpr
    assert _xla.work_bytes(bigger, np.float64) == 0 and _xla._compiled_as_library.cache_info().currsize == 2


def test_a_probe_that_cannot_ask_counts_the_convolution_as_a_loop(monkeypatch, probes):
    wide = _conv_jaxpr(8, 40)
    monkeypatch.setattr(_xla, "QUICK_OPTIONS", {"xla_no_such_option_anywhere": 1})  # the compile fails
    assert _xla.work_bytes(wide, np.float64) == 2 * 12 * 12 * 40 * 72 * _xla._CONV_LOOP
    _xla._compiled_as_library.cache_clear()
    monkeypatch.setattr(_xla, "QUICK_OPTIONS", {})
    monkeypatch.setattr(jax.stages.Compiled, "as_text", lambda self, *a, **k: None)  # a backend that cannot print
    assert _xla.work_bytes(wide, np.float64) == 2 * 12 * 12 * 40 * 72 * _xla._CONV_LOOP


def test_work_is_counted_only_where_the_quick_tier_is_on(tiered):
    args = (jnp.float32(1.0), jnp.ones((2, 3), jnp.float32))
    tiered.setenv("EQUIVAX_QUICK_COMPILE", "0")
    program = _xla.Tiered(_scaled_sum, lambda: pytest.fail("counted with the quick tier off"))
    np.testing.assert_allclose(program(*args), [np.tanh(1.0) * 3] * 2, rtol=1e-6)
    assert program.tier == "jit"
    tiered.delenv("EQUIVAX_QUICK_COMPILE")
    counted = []
    program = _xla.Tiered(_scaled_sum, lambda: counted.append(1) or _xla.QUICK_BYTES + 1)
    program(*args)
    assert counted == [1] and program.tier == "jit"  # over the bound: straight to the default level
    program = _xla.Tiered(_scaled_sum, lambda: counted.append(1) or 0.0)
    program(*args)
    assert counted == [1, 1] and program.tier in ("quick", "full")  # started quick (may have upgraded already)


def test_work_bytes_reads_programs_that_carry_prng_keys():
    def noisy(key, x):
        return x + jax.random.normal(jax.random.fold_in(key, 1), x.shape)

    jaxpr = jax.make_jaxpr(noisy)(jax.random.key(0), jnp.ones((4, 4), jnp.float32)).jaxpr
    assert 4 * 4 * 4 <= _xla.work_bytes(jaxpr) < _xla.QUICK_BYTES


def test_an_xla_that_refuses_the_quick_options_falls_back_to_jit(tiered):
    tiered.setattr(_xla, "QUICK_OPTIONS", {"xla_no_such_option_anywhere": 1})
    program = _xla.Tiered(_scaled_sum, 1)
    np.testing.assert_allclose(program(jnp.float32(1.0), jnp.ones((2, 3), jnp.float32)), [np.tanh(1.0) * 3] * 2)
    assert program.tier == "jit"


def test_threads_calling_one_program_compile_it_once(tiered):
    import concurrent.futures

    lowerings = []
    real = _xla._Jit.lower
    tiered.setattr(_xla._Jit, "lower", lambda self, *a: lowerings.append(1) or real(self, *a))
    program = _xla.Tiered(_scaled_sum, 1)
    args = (jnp.float32(0.5), jnp.ones((2, 3), jnp.float32))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: program(*args), range(16)))
    for out in outs:
        np.testing.assert_allclose(out, [np.tanh(0.5) * 3] * 2, rtol=1e-6)
    assert program.tier in ("quick", "full") and len(lowerings) == 1, (program.tier, lowerings)


@pytest.mark.parametrize("quick", ["1", "0"])
def test_a_program_compiled_ahead_is_the_one_its_first_call_would_compile(tiered, quick):
    tiered.setenv("EQUIVAX_QUICK_COMPILE", quick)
    lowerings = []
    real = _xla._Jit.lower
    tiered.setattr(_xla._Jit, "lower", lambda self, *a: lowerings.append(1) or real(self, *a))
    args = (jnp.float32(0.5), jnp.ones((2, 3), jnp.float32))
    program = _xla.Tiered(_scaled_sum, 1)
    program.ahead(*[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args])
    assert program.tier == ("quick" if quick == "1" else "full") and len(lowerings) == 1
    np.testing.assert_allclose(program(*args), [np.tanh(0.5) * 3] * 2, rtol=1e-6)
    assert len(lowerings) == 1  # the call ran what was compiled ahead
