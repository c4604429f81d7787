"""equivax.training.Monitor: one compiled check re-used across parameter updates, verdicts over steps."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import equivax
from equivax import actions, groups
from equivax.nn import CNN, Conv
from equivax.training import Monitor, html, plot, to_json, write

TRACES = {"count": 0}  # how often a model's Python __call__ ran: once per trace when all is compiled


class Counted(nnx.Module):
    """A circular CNN whose __call__ counts how often Python runs it."""

    def __init__(self, rngs: nnx.Rngs):
        self.cnn = CNN(widths=(4,), padding="circular", rngs=rngs)

    def __call__(self, x):
        TRACES["count"] += 1
        return self.cnn(x)


class Planted(nnx.Variable):
    """State the optimizer does not train: a test plants a value in it."""


class Leaky(nnx.Module):
    """A circular convolution plus ``leak`` at each position: shift-equivariant while ``leak`` is
    constant (zero), broken once a position-dependent value is planted in it."""

    def __init__(self, size: int, rngs: nnx.Rngs):
        self.conv = Conv(1, 2, 3, padding="circular", rngs=rngs)
        self.leak = Planted(jnp.zeros((size, size, 2)))

    def __call__(self, x):
        TRACES["count"] += 1
        return jnp.tanh(self.conv(x)) + self.leak[...]


def _images(n=4, size=8, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 1))


def _trainer(model, images, labels_or_targets, loss):
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        value, grads = nnx.value_and_grad(lambda m: loss(m(images), labels_or_targets))(model)
        optimizer.update(model, grads)
        return value

    return lambda: step(model, optimizer)


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def test_one_compiled_check_serves_50_parameter_updates():
    x = _images()
    model = Counted(nnx.Rngs(0))
    elements = [np.array(e) for e in [(0, 2, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0)]]  # shift by 2, odd shift, r1
    monitor = Monitor(
        model, x, groups.p4(8), out_action=actions.trivial(), elements=elements, lie=("rotation",), name="cnn"
    )
    train_step = _trainer(model, x, jnp.arange(4), _cross_entropy)
    train_step()
    monitor(0)  # traces and compiles the check, the Lie derivative and the output scale once
    traced = TRACES["count"]
    for step in range(1, 51):
        train_step()
        monitor(step)
    assert TRACES["count"] == traced, "the model was traced again"
    assert monitor.compilations[0] > 0 and monitor.compilations[1:] == [0] * 50
    assert len(monitor.steps) == 51 and monitor.rel_error.shape == (51, 3)
    # the check saw every update: the errors move, and the last equals a fresh check of the trained model
    assert len(set(monitor.errors("shift(0,1)").tolist())) > 40
    fresh = equivax.check(lambda x: model(x), x, groups.p4(8), out_action=actions.trivial(), elements=elements)
    np.testing.assert_allclose(monitor.rel_error[-1], fresh.rel_error, rtol=1e-5)
    assert monitor.verdicts[-1] == fresh.verdicts == ("equivariant", "broken", "broken")
    lie = float(jnp.mean(equivax.lie_error(model, x, "rotation")))
    rms = float(jnp.sqrt(jnp.mean(model(x) ** 2)))
    np.testing.assert_allclose(monitor.lie_relative("rotation")[-1], lie / rms, rtol=1e-5)
    assert monitor.first_failure("shift(0,2)") is None and monitor.first_failure("r1") == 0


@pytest.mark.parametrize("ahead", ["0", "1"])
def test_a_planted_update_mid_training_breaks_the_verdicts_from_that_step_on(ahead, monkeypatch):
    monkeypatch.setenv("EQUIVAX_PARALLEL_COMPILE", ahead)
    x = _images()
    model = Leaky(8, nnx.Rngs(1))
    monitor = Monitor(model, x, groups.translations(8, 8), elements=[np.array((0, 1, 0, 0)), np.array((3, 5, 0, 0))])
    train_step = _trainer(model, x, jnp.roll(x, 1, axis=1), lambda y, t: jnp.mean((y[..., :1] - t) ** 2))
    traced = None
    for step in range(20):
        train_step()
        if step == 10:  # the planted update: a value at each position, no change of shape or type
            model.leak[...] = jax.random.normal(jax.random.key(2), (8, 8, 2))
        if step % 2 == 0:
            monitor(step)
            traced = traced or TRACES["count"]
    assert TRACES["count"] == traced, "the model was traced again"
    before = [v for s, v in zip(monitor.steps, monitor.verdicts, strict=True) if s < 10]
    after = [v for s, v in zip(monitor.steps, monitor.verdicts, strict=True) if s >= 10]
    assert before and all(v == ("equivariant", "equivariant") for v in before)
    assert after and all(v == ("broken", "broken") for v in after)
    assert monitor.first_failure() == 10 and monitor.first_failure("shift(3,-3)") == 10
    # the float64 re-run is compiled once: when a verdict first needs it, or ahead, with the first
    # check (counted there, though no element needed it before the planted update)
    later = {s: c for s, c in zip(monitor.steps[1:], monitor.compilations[1:], strict=True) if c}
    assert set(later) == (set() if ahead == "1" else {10}), later
    assert np.all(monitor.rel_error[monitor.steps.index(10) :] > 1e-2)


def _circular_apply(params, x):
    """An apply-style model: circular 3x3 convolution, tanh, spatial mean, linear read-out."""
    TRACES["count"] += 1
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
    y = jax.lax.conv_general_dilated(padded, params["w"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jnp.tanh(y), axis=(1, 2)) @ params["head"]


def test_apply_style_models_pass_a_partial_and_are_not_traced_again():
    x = _images()
    keys = jax.random.split(jax.random.key(3))
    params = {"w": jax.random.normal(keys[0], (3, 3, 1, 4)), "head": jax.random.normal(keys[1], (4, 3))}
    optimizer = optax.sgd(0.1)
    opt_state = optimizer.init(params)
    labels = jnp.arange(4) % 3

    @jax.jit
    def train_step(params, opt_state):
        grads = jax.grad(lambda p: _cross_entropy(_circular_apply(p, x), labels))(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    elements = [np.array((0, 1, 0, 0)), np.array((0, 0, 1, 0))]
    model = jax.tree_util.Partial(_circular_apply, params)
    monitor = Monitor(model, x, groups.p4(8), out_action=actions.trivial(), elements=elements, lie=("rotation",))
    params, opt_state = train_step(params, opt_state)
    monitor(0, f=jax.tree_util.Partial(_circular_apply, params))
    traced = TRACES["count"]
    for step in range(1, 31):
        params, opt_state = train_step(params, opt_state)
        monitor(step, f=jax.tree_util.Partial(_circular_apply, params))
    assert TRACES["count"] == traced, "the apply function was traced again"
    assert monitor.compilations[1:] == [0] * 30
    assert all(v[0] == "equivariant" for v in monitor.verdicts) and monitor.first_failure("r1") == 0
    fresh = equivax.check(
        lambda x: _circular_apply(params, x), x, groups.p4(8), None, actions.trivial(), elements=elements
    )
    np.testing.assert_allclose(monitor.rel_error[-1], fresh.rel_error, rtol=1e-5)
    assert len(set(monitor.errors("r1").tolist())) > 25  # every update was seen


def _closure_monitored_across_an_update():
    x = _images()
    model = CNN(widths=(2,), padding="circular", rngs=nnx.Rngs(4))
    monitor = Monitor(lambda x: model(x), x, groups.p4(8), out_action=actions.trivial(), lie=("rotation",))
    monitor(0)
    model.head.kernel[...] = 3 * model.head.kernel[...] + 1  # changed in place, behind the closure
    monitor(1)
    return monitor, model, x


def test_a_closure_s_lie_derivative_is_read_afresh_at_every_call():
    monitor, model, x = _closure_monitored_across_an_update()
    lie = float(jnp.mean(equivax.lie_error(model, x, "rotation")))
    np.testing.assert_allclose(
        monitor.lie_relative("rotation")[1], lie / float(jnp.sqrt(jnp.mean(model(x) ** 2))), 1e-5
    )
    assert monitor.lie_relative("rotation")[1] != monitor.lie_relative("rotation")[0]


def test_a_closure_s_check_is_read_afresh_at_every_call():
    monitor, model, x = _closure_monitored_across_an_update()
    fresh = equivax.check(model, x, groups.p4(8), None, actions.trivial())
    np.testing.assert_allclose(monitor.rel_error[1], fresh.rel_error, rtol=1e-5)


def test_nan_in_the_model_is_recorded_as_a_failure_never_a_pass():
    x = _images()
    monitor = Monitor(lambda x: jnp.log(x - 2.0), x, groups.translations(8, 8), elements=[np.array((0, 1, 0, 0))])
    monitor(0)
    assert monitor.verdicts == [("nonfinite",)] and monitor.first_failure() == 0


def _scaled_tanh(scale, x):
    return jnp.tanh(scale * x)


def _recorded(name="tanh", lie=("rotation",)):
    model = jax.tree_util.Partial(_scaled_tanh, jnp.ones(()))  # parameters as arrays: compiled once
    monitor = Monitor(model, _images(2), groups.p4(8), elements=[np.array((0, 0, 1, 0))], lie=lie, name=name)
    for step in (0, 5):
        monitor(step)
    return monitor


def test_curves_render_as_png_html_and_json(tmp_path):
    first, second = _recorded("tanh"), _recorded("plain", lie=())
    assert plot([first, second]).startswith(b"\x89PNG")
    page = html([first, second], title="two models")
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert "<h2>tanh under p4(8x8)</h2>" in page and "<td>r1</td>" in page and "<td>never</td>" in page
    data = json.loads(to_json(first))["monitors"][0]
    assert data["steps"] == [0, 5] and data["labels"] == ["r1"] and len(data["lie_errors"]["rotation"]) == 2
    assert data["verdicts"] == [["equivariant"], ["equivariant"]]
    for suffix in (".png", ".html", ".json"):
        assert write(first, tmp_path / f"curves{suffix}").stat().st_size > 100
    assert "steps 0..5" in repr(first) and "compilations after the first call: 0" in repr(first)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda x: Monitor("model", x, groups.p4(8)), TypeError, "f must be a callable model"),
        (lambda x: Monitor(jnp.tanh, x, "p4"), TypeError, "group must be an equivax Group"),
        (lambda x: Monitor(jnp.tanh, x, groups.p4(8), lie="rotation"), TypeError, "write lie=('rotation',)"),
        (lambda x: Monitor(jnp.tanh, x, groups.p4(8), lie=("spin",)), ValueError, "unknown generator 'spin'"),
    ],
)
def test_bad_arguments_are_named_in_one_line(build, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        build(_images(2))
    assert "\n" not in str(caught.value)


def test_bad_steps_labels_and_empty_monitors_are_named():
    monitor = _recorded()
    with pytest.raises(ValueError, match="steps must increase from call to call: got step 5 after 5"):
        monitor(5)
    with pytest.raises(TypeError, match=r"step must be an integer training step, got 6\.0"):
        monitor(6.0)
    with pytest.raises(KeyError, match="no element 'r2' was checked"):
        monitor.errors("r2")
    with pytest.raises(KeyError, match="no Lie derivative recorded for 'scale'"):
        monitor.lie_relative("scale")
    empty = Monitor(jnp.tanh, _images(2), groups.p4(8), name="idle")
    with pytest.raises(ValueError, match="monitor 'idle' has recorded no steps"):
        plot(empty)
    with pytest.raises(ValueError, match=r"name it \.png, \.html or \.json"):
        write(monitor, "curves.pdf")
