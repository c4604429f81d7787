"""The probes a verdict runs: the resolution of the stored values, read at any angle."""

import dataclasses

import numpy as np
import pytest

from equivax import _measure, verdicts

EPS32 = float(np.finfo(np.float32).eps)


class Moved:
    """A stand-in program whose float64 error, with the stored values moved up or down, is given."""

    def __init__(self, up, down):
        self.rel = {False: np.asarray(up, float), True: np.asarray(down, float)}
        self.calls = []

    def run_in(self, dtype, consts, params, x, chosen, seed=None, flip=False):
        self.calls.append((seed, flip))
        return None, {"parts": [{"rel": self.rel[flip][: len(chosen)]}]}


def measurements(rel64):
    rel64 = np.atleast_2d(np.asarray(rel64, float))
    return verdicts.Measurements(
        rel=np.full_like(rel64, 1e-3),
        abs_error=np.ones(len(rel64)),
        finite=np.ones(len(rel64), bool),
        defined=np.ones(len(rel64), bool),
        y_finite=True,
        eps=EPS32,
        rel_other=rel64,
        rounding=np.full(rel64.shape[1], 1e-7),
    )


def resolution(program, rel64):
    args = (None, None, np.zeros((len(rel64), 1)))
    (m,) = _measure._resolution(program, [], args, [measurements(rel64)], np.arange(len(rel64)))
    return m.resolution


def test_a_move_orthogonal_to_a_larger_error_is_read_at_its_size():
    # error e = 1e-6; the stored values' half-ulp move p = 3e-7, at a right angle to it: the error
    # becomes sqrt(e² + p²) both ways, which differs from e by p²/2e = 4.5e-8, not by p.
    e, p = 1e-6, 3e-7
    moved = np.hypot(e, p)
    program = Moved([[moved]], [[moved]])
    assert resolution(program, [[e]])[0, 0] == pytest.approx(p, rel=1e-6)
    assert program.calls == [(1, False), (1, True)]  # the same move, once each way


def test_a_move_along_the_error_is_read_at_its_size():
    e, p = 1e-6, 3e-7
    assert resolution(Moved([[e + p]], [[e - p]]), [[e]])[0, 0] == pytest.approx(p, rel=1e-6)


def test_a_move_that_does_not_touch_the_error_reads_zero_and_decides_nothing():
    e = 1e-6
    assert resolution(Moved([[e]], [[e]]), [[e]])[0, 0] == 0
    m = measurements([[e]])
    m = verdicts.Measurements(**{**m.__dict__, "resolution": np.zeros((1, 1))})
    assert verdicts.decide(m).verdicts == ("broken",)


def test_an_error_beyond_any_probe_is_broken_without_one():
    rounding = np.full(2, 1e-6)
    base = measurements([[1e-2, 2e-2], [3e-7, 1e-7]])
    m = verdicts.Measurements(**{**base.__dict__, "rounding": rounding})
    far = verdicts.beyond_resolution(m, stored_eps=EPS32)
    # reach: 4 · 1000 · 1e-6 = 4e-3 for float32 stored values
    assert far.tolist() == [True, False]
    # bfloat16 stored values reach 2**16 times further: nothing is beyond
    assert not verdicts.beyond_resolution(m, stored_eps=float(2.0**-7)).any()
    # f(x) computed exactly (no rounding) still allows a probe of one float32 ulp
    exact = verdicts.Measurements(**{**m.__dict__, "rounding": np.zeros(2)})
    assert verdicts.beyond_resolution(exact, stored_eps=EPS32).tolist() == [True, False]


def test_clearly_broken_models_skip_the_probe_and_stay_broken(monkeypatch):
    import jax
    import jax.numpy as jnp

    import equivax
    from equivax import actions, groups, zoo

    calls = []
    probe = _measure._resolution
    monkeypatch.setattr(_measure, "_resolution", lambda *a: calls.append(1) or probe(*a))
    kernel = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 2, 3)), jnp.float32)
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 2))
    wrong_way = zoo.p4_lifting(kernel, clockwise=True)
    result = equivax.check(wrong_way, x, groups.rotations(), out_action=actions.regular(groups.rotations()))
    assert [v for v, label in zip(result.verdicts, result.labels, strict=True) if label != "r2"] == ["broken"] * 2
    assert calls == []
    # An asymmetric filter bank stored in float32, off by a few ulps: the probe runs, and excuses it.
    w = np.asarray(kernel, np.float64)
    turned = np.stack([np.rot90(w, k, axes=(0, 1)) for k in range(4)], axis=-1).mean(-1)
    noisy = (turned * (1 + np.random.default_rng(1).integers(-2, 3, size=w.shape) * 2.0**-24)).astype(np.float32)
    result = equivax.check(
        zoo.circular_conv(jnp.asarray(noisy)), jax.random.normal(jax.random.key(1), (2, 8, 8, 2)), groups.p4(8)
    )
    assert result.ok and calls, result


def test_an_uninformative_example_does_not_put_an_element_beyond_the_probe():
    # example 1 is a blank frame: its float64 sensitivity is of order 1 (its floor reaches 1), its
    # float64 error 0.9; example 0, informative, decides, and its error is within a probe's reach
    base = measurements([[3e-7, 0.9]])
    m = verdicts.Measurements(
        **{**base.__dict__, "rounding": np.asarray([1e-6, 1e-6]), "sensitivity": np.asarray([0.0, 10.0])}
    )
    assert not verdicts.beyond_resolution(m, stored_eps=EPS32).any()
    assert verdicts.beyond_resolution(dataclasses.replace(m, sensitivity=None), stored_eps=EPS32).tolist() == [True]


def _float64_runs(monkeypatch, f, x, group, **kwargs):
    import equivax
    from equivax import _program

    calls = []
    real = _program.Program.run_in

    def spy(self, dtype, *args, **kw):
        calls.append(kw.get("seed"))
        return real(self, dtype, *args, **kw)

    monkeypatch.setattr(_program.Program, "run_in", spy)
    equivax.clear_cache()
    return equivax.check(f, x, group, **kwargs), calls


def test_the_checks_own_argmax_does_not_make_a_smooth_model_pay_the_nudge(monkeypatch):
    """The check's statistics take an argmax of the errors: only f's own steps call for the
    float64 nudge of x. A smooth invariant model, not bit-exact under turns, runs float64 once."""
    import jax.numpy as jnp

    import equivax

    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(8,)).astype(np.float32)

    def smooth(v):
        return jnp.tanh(jnp.mean(v, axis=(1, 2)) * w)

    def binned(v):
        return smooth(v) + 0 * jnp.floor(v[:, 0, 0])

    trivial = equivax.actions.trivial()
    result, calls = _float64_runs(monkeypatch, smooth, x, equivax.groups.rotations(), out_action=trivial)
    assert result.ok and "float64" in result.methods and calls == [None], (result, calls)
    result, calls = _float64_runs(monkeypatch, binned, x, equivax.groups.rotations(), out_action=trivial)
    assert result.ok and calls == [None, None], (result, calls)  # its floor: the nudge runs too


def _has_steps(f, x):
    import jax

    from equivax import _program

    return any(_program._is_step(e) for e in _program._equations(jax.make_jaxpr(f)(x).jaxpr))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("tolerance loop", True),
        ("counted loop", False),
        ("cond on a float", True),
        ("callback", True),
        ("round", True),
        ("smooth", False),
        ("relu", False),
        ("leaky where", True),
        ("heaviside where", True),
        ("nan guard", False),
        ("argsort", True),
        ("sorted values", False),
        ("top_k", True),
        ("periodic wrap", True),
        ("searchsorted", True),
        ("integer remainder", False),
    ],
)
def test_steps_are_thresholds_on_floats_loops_that_stop_at_a_tolerance_and_opaque_code(name, expected):
    import jax
    import jax.numpy as jnp
    from jax import lax

    programs = {
        "tolerance loop": lambda v: lax.while_loop(lambda c: jnp.sum(c**2) > 1.0, lambda c: c * 0.5, v),
        "counted loop": lambda v: lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, c[1] * 0.5), (0, v))[1],
        "cond on a float": lambda v: lax.cond(jnp.sum(v) > 0, lambda u: u, lambda u: -u, v),
        "callback": lambda v: jax.pure_callback(lambda a: a, jax.ShapeDtypeStruct(v.shape, v.dtype), v),
        "round": jnp.round,
        "smooth": lambda v: jnp.tanh(v) @ jnp.ones((3, 3)),
        "relu": jax.nn.relu,
        "leaky where": lambda v: jnp.where(v > 0, v, 0.1 * v),  # continuous, but equivax cannot tell
        "heaviside where": lambda v: jnp.where(v > 0.5, 1.0, 0.0),
        "nan guard": jax.nn.softplus,  # its only comparison is v != v
        "argsort": lambda v: jnp.argsort(v).astype(v.dtype),  # nearest neighbours by distance
        "sorted values": jnp.sort,  # continuous in v
        "top_k": lambda v: lax.top_k(v, 2)[0],
        "periodic wrap": lambda v: jnp.mod(v, 1.0),  # periodic boundary conditions
        "searchsorted": lambda v: jnp.searchsorted(jnp.asarray([0.1, 0.5], v.dtype), v).astype(v.dtype),
        "integer remainder": lambda v: v * (jnp.arange(3) % 2),
    }
    assert _has_steps(programs[name], jnp.ones(3)) is expected
