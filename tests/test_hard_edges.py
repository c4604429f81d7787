"""Hard edges of the check core: stale programs, training mode, bad arguments, untraceable code."""

import functools
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx

import equivax
from equivax import actions, groups

pytestmark = pytest.mark.usefixtures("strict_promotion")

SHIFT = groups.translations(8, 8, shifts=[(0, 1)])


def images(shape=(2, 8, 8, 2), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


class Conv:
    """A mutable layer a closure captures, as a user's module would be."""

    def __init__(self):
        self.w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 2, 2)), jnp.float32)
        self.padding = "circular"

    def __call__(self, x):
        if self.padding == "circular":
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
            padding = "VALID"
        else:
            padding = self.padding
        return jax.lax.conv_general_dilated(x, self.w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_a_closure_over_a_changed_module_is_never_judged_by_the_old_program():
    conv = Conv()
    f = lambda x: conv(x)  # noqa: E731
    assert equivax.check(f, images(), SHIFT).ok
    conv.padding = "SAME"  # zero padding now: broken at the border
    assert not equivax.check(f, images(), SHIFT).ok
    conv.padding = "circular"
    assert equivax.check(f, images(), SHIFT).ok
    conv.w = conv.w * jnp.arange(9.0).reshape(3, 3, 1, 1)  # new values, same program: re-used, and read
    before = equivax.cache_info()
    assert equivax.check(f, images(), SHIFT).ok
    after = equivax.cache_info()
    assert after.programs == before.programs and after.hits == before.hits + 1


def test_closed_over_values_are_read_on_every_call():
    bias = {"b": jnp.zeros((8, 8, 2))}
    f = lambda x: x + bias["b"]  # noqa: E731
    assert equivax.check(f, images(), SHIFT).ok
    bias["b"] = bias["b"].at[0, 0].set(1.0)  # a position-dependent bias: broken
    assert not equivax.check(f, images(), SHIFT).ok


def test_a_callable_pytree_reuses_its_program_without_tracing():
    def apply(params, x):
        return jnp.tanh(x * params["scale"])

    calls = []

    def counted(params, x):
        calls.append(1)
        return apply(params, x)

    equivax.clear_cache()
    for step in range(5):
        f = jax.tree_util.Partial(counted, {"scale": jnp.asarray(1.0 + step, jnp.float32)})
        assert equivax.check(f, images(), SHIFT).ok
    info = equivax.cache_info()
    assert info.programs == 1 and info.hits == 4
    traced = len(calls)
    equivax.check(jax.tree_util.Partial(counted, {"scale": jnp.asarray(9.0, jnp.float32)}), images(), SHIFT)
    assert len(calls) == traced  # parameters changed, nothing traced


class Net(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 2, (3, 3), padding="CIRCULAR", rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.drop(self.conv(x))


def test_a_module_in_training_mode_is_checked_in_eval_mode_with_a_note():
    model = Net(nnx.Rngs(0))
    result = equivax.check(model, images(), SHIFT)
    assert result.ok, result
    assert any("eval mode" in note and "Dropout" in note for note in result.notes)
    assert "model.eval()" in result.notes[0]
    assert model.drop.deterministic is False  # the user's module is untouched
    model.eval()
    assert equivax.check(model, images(), SHIFT).notes == ()


def test_a_linen_module_without_variables_gets_the_fix():
    class Dense(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Dense(2)(x)

    module = Dense()
    with pytest.raises(TypeError, match=r"Partial\(model.apply, variables\)"):
        equivax.check(module, images(), SHIFT)
    variables = module.init(jax.random.key(0), images())
    assert equivax.check(jax.tree_util.Partial(module.apply, variables), images(), SHIFT).ok


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1e-3", True])
def test_bad_tolerances_get_one_line(bad):
    with pytest.raises(ValueError, match="rtol must be"):
        equivax.check(jnp.tanh, images(), SHIFT, rtol=bad)
    with pytest.raises(ValueError, match="atol must be"):
        equivax.check(jnp.tanh, images(), SHIFT, atol=bad)


def test_outputs_that_are_not_arrays_get_one_line():
    with pytest.raises(TypeError, match="f returned a str leaf"):
        equivax.check(lambda x: {"y": x, "name": "conv"}, images(), SHIFT)


def test_an_action_tree_that_does_not_match_the_output_gets_one_line():
    with pytest.raises(ValueError, match="action tree has the structure"):
        equivax.check(lambda x: (x, x), images(), SHIFT, out_action=(actions.image(),))


def test_callbacks_that_cannot_be_vmapped_get_the_fix():
    def host(x):
        return jax.pure_callback(np.tanh, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    with pytest.raises(TypeError, match="vmap_method"):
        equivax.check(host, images(), SHIFT)


def test_the_other_precision_can_be_routed_to_the_host(monkeypatch):
    monkeypatch.setenv("EQUIVAX_SECOND_PRECISION_DEVICE", "cpu")
    leak = lambda x: jnp.tanh(x) + 1e-5 * x[:, 3:4, 5:6]  # noqa: E731
    result = equivax.check(leak, images(), SHIFT)
    assert result.verdicts == ("broken",) and result.methods == ("float64",)
    assert equivax.check(
        lambda x: jnp.mean(jnp.tanh(x), axis=(1, 2)), images(), groups.p4(8), out_action=actions.trivial()
    ).ok


def test_nan_inputs_and_parameters_never_pass():
    with pytest.raises(ValueError, match="NaN"):
        equivax.check(jnp.tanh, images().at[0, 0, 0, 0].set(jnp.nan), SHIFT)
    bad = functools.partial(lambda w, x: x * w, jnp.float32(jnp.nan))
    assert equivax.check(bad, images(), SHIFT).verdicts == ("nonfinite",)


@pytest.mark.slow
def test_the_persistent_compilation_cache_is_on_by_default_and_can_be_switched_off(tmp_path):
    code = (
        "import jax, jax.numpy as jnp, equivax\n"
        "x = jnp.ones((1, 8, 8, 1))\n"
        "print(equivax.check(lambda x: jnp.tanh(x) * 2, x, equivax.groups.p4(8)).ok)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "on")}
    for name in (
        "EQUIVAX_COMPILATION_CACHE",
        "JAX_COMPILATION_CACHE_DIR",
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
        "XLA_FLAGS",
    ):
        env.pop(name, None)  # as a user's environment: the suite's own run cache and flags are not theirs
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert any((tmp_path / "on" / "equivax" / "jax").iterdir())
    env = {**env, "XDG_CACHE_HOME": str(tmp_path / "off"), "EQUIVAX_COMPILATION_CACHE": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "off" / "equivax").exists()


SCALE = {"value": 2.0}


def scaled(x):
    return jnp.tanh(x) * SCALE["value"] + (x[:, :1, :1] if SCALE["value"] < 0 else 0.0)


def test_an_unchanged_closure_is_not_traced_again_and_a_changed_global_is_seen():
    offset = jnp.float32(0.5)
    f = lambda x: jnp.tanh(x) + offset  # noqa: E731
    equivax.check(f, images(), SHIFT)
    before = equivax.cache_info()
    assert equivax.check(f, images(), SHIFT).ok
    after = equivax.cache_info()
    assert after.traces == before.traces and after.hits == before.hits + 1
    assert equivax.check(scaled, images(), SHIFT).ok
    SCALE["value"] = -1.0  # a global the function reads: now position-dependent
    try:
        assert not equivax.check(scaled, images(), SHIFT).ok
    finally:
        SCALE["value"] = 2.0


def test_an_untraceable_action_is_named_not_f():
    def python_roll(g, x):
        return jnp.roll(x, int(g[1]), axis=2)  # int() of a traced element

    with pytest.raises(TypeError, match="in_action is not traceable"):
        equivax.check(jnp.tanh, images(), SHIFT, python_roll, actions.image())


@pytest.mark.parametrize(
    "bad, message",
    [(images().at[0, 0, 0, 0].set(jnp.nan), "NaN"), (images()[0], "NHWC"), (images().astype(jnp.int32), "dtype")],
)
def test_lie_derivatives_validate_their_input(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        equivax.lie_error(jnp.tanh, bad, "rotation")
    with pytest.raises((ValueError, TypeError), match=message):
        equivax.lie_derivative(jnp.tanh, bad, "translate_x", "translate_x")


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (equivax.actions.trivial, "out_action is the factory actions.trivial itself, not an action: call it"),
        (equivax.actions.image, "out_action is the factory actions.image itself"),
        (lambda g: g, "out_action <lambda>(g) cannot be called as act(g, x)"),
    ],
)
def test_an_action_that_cannot_take_g_and_x_is_named_in_one_line(action, message):
    with pytest.raises(TypeError, match=re.escape(message)) as err:
        equivax.check(jnp.tanh, jnp.ones((1, 4, 4, 1)), equivax.groups.rotations(), out_action=action)
    assert "\n" not in str(err.value)
