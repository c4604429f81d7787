"""Lie derivatives, the local equivariance error and layer-wise attribution (equivax.lie)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from equivax import continuous, lie, zoo
from equivax.nn import CNN, GlobalPool, GroupPool, LiftingConv


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Gaussian test data from NumPy (JAX's CPU compile of its generator takes seconds per shape)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def smooth_images(key, n: int, size: int) -> jax.Array:
    """Blurred noise under a centred Gaussian window: smooth content well inside the image."""
    freq = np.fft.fftfreq(size)
    transfer = np.exp(-2 * np.pi**2 * 2.0**2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    noise = normal(key, (n, size, size, 1))
    blurred = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(noise, axes=(1, 2)) * transfer[None, :, :, None], axes=(1, 2)))
    u = np.arange(size) - (size - 1) / 2
    window = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * (size / 8) ** 2))
    return (blurred * window[None, :, :, None]).astype(jnp.float32)


def relative(f, x, name):
    """‖L f(x)‖ / ‖f(x)‖ for an image-to-image map f."""
    return float(jnp.linalg.norm(lie.lie_derivative(f, x, name, name)) / jnp.linalg.norm(f(x)))


def test_translations_of_a_circular_conv_vanish_and_others_do_not():
    w = normal(0, (3, 3, 1, 2))
    x = normal(1, (2, 16, 16, 1))
    conv = zoo.circular_conv(w)
    ramp = jnp.linspace(0.5, 1.5, 16)[None, None, :, None]
    assert relative(conv, x, "translate_x") <= 1e-5
    assert relative(zoo.zero_padded_conv(w), x, "translate_x") >= 1e-2
    assert relative(lambda x: conv(x) * ramp, x, "translate_x") >= 1e-2


def test_isotropic_blur_energy_is_far_more_rotation_invariant_than_a_random_filter():
    x = smooth_images(0, 4, 24)
    t = np.arange(-3, 4)
    gauss = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / 2.0)
    blur = zoo.circular_conv(jnp.asarray(gauss / gauss.sum(), jnp.float32)[:, :, None, None])
    random = zoo.circular_conv(normal(3, (7, 7, 1, 1)) / 7)

    def energy(conv):
        return lambda x: jnp.sum(conv(x) ** 2, axis=(1, 2, 3))

    def rotation_error(conv):
        f = energy(conv)
        return np.asarray(lie.lie_error(f, x, "rotation") / jnp.abs(f(x)))

    ratio = np.min(rotation_error(random) / rotation_error(blur))
    assert ratio >= 50, ratio


@pytest.mark.parametrize(
    ("name", "action", "unit"),
    [
        ("rotation", continuous.rotate(), lambda h: [h]),
        ("scale", continuous.scale(), lambda h: [h]),
        ("translate_y", continuous.shift(), lambda h: [h, 0.0]),
        ("translate_x", continuous.shift(), lambda h: [0.0, h]),
    ],
)
def test_generators_are_derivatives_of_the_actions(name, action, unit):
    """Central differences of the interpolated actions converge to the generator at second order."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 9, 8, 1)))
        exact = np.asarray(jax.jit(lie.generator(name))(x))
        steps = jnp.asarray([unit(h) for h in (1e-2, -1e-2, 5e-3, -5e-3)], jnp.float64)
        moved = np.asarray(jax.jit(jax.vmap(action, in_axes=(0, None)))(steps, x))
    errors = [np.linalg.norm((moved[i] - moved[i + 1]) / (2 * h) - exact) for i, h in ((0, 1e-2), (2, 5e-3))]
    order = np.log2(errors[0] / errors[1])
    assert 1.8 < order < 2.2, (errors, order)
    assert errors[1] < 1e-3 * np.linalg.norm(exact)


def test_a_plain_cnn_is_not_rotation_invariant_and_its_layers_add_up():
    model = CNN(widths=(4,), rngs=nnx.Rngs(0))
    x = smooth_images(1, 2, 16)
    errors = lie.layer_lie_errors(model, x, "rotation")
    total = errors.derivative  # lie_derivative(model, x, "rotation"), compared in the next test
    direct = np.sqrt(np.mean(total**2, axis=1))  # lie_error
    assert np.all(direct > 1e-3 * np.sqrt(np.mean(np.asarray(model(x)) ** 2, axis=1)))
    np.testing.assert_allclose(errors.total, direct, rtol=1e-4)
    np.testing.assert_allclose(errors.prefix[-1], direct, rtol=1e-4)
    np.testing.assert_allclose(errors.contribution_vectors.sum(0), total, rtol=1e-3, atol=1e-6)
    assert errors.names == ("Conv", "relu", "MaxPool", "GlobalPool", "Linear")
    assert errors.generators == ("rotation",) * 3 + ("invariant", "invariant")
    assert np.isfinite(errors.contribution).all()
    assert "total" in str(errors)


def test_group_feature_maps_have_no_rotation_generator():
    lift = LiftingConv(1, 2, 3, group="p4", rngs=nnx.Rngs(0))
    stack = nnx.Sequential(lift, nnx.relu, GroupPool("max", group="p4"), GlobalPool("mean"))
    x = smooth_images(2, 1, 8)
    errors = lie.layer_lie_errors(stack, x, "rotation")
    assert errors.generators == ("undefined", "undefined", "rotation", "invariant")
    assert np.isnan(errors.prefix[:2]).all() and np.isnan(errors.contribution[:2]).all()
    total = lie.lie_derivative(stack, x, "rotation")
    np.testing.assert_allclose(errors.contribution_vectors[2:].sum(0), total, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(errors.derivative, total, rtol=1e-5, atol=1e-7)
    shifts = lie.layer_lie_errors([lift], x, "translate_x")
    assert shifts.generators == ("translate_x",)


def test_user_generators_and_clear_errors():
    x = normal(0, (1, 8, 8, 1))
    scaled = lie.lie_derivative(lambda x: 2 * x, x, lambda x: x, lambda y: y)
    np.testing.assert_allclose(scaled, 0 * x, atol=1e-6)
    with pytest.raises(ValueError, match="unknown generator 'shear'"):
        lie.lie_derivative(lambda x: x, x, "shear")
    with pytest.raises(TypeError, match="list of callables"):
        lie.layer_lie_errors(object(), x, "rotation")


def test_a_closure_over_a_changed_module_is_not_answered_from_the_old_program():
    model = CNN(widths=(2,), rngs=nnx.Rngs(0))
    f = lambda x: model(x)  # noqa: E731
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    before = float(lie.lie_error(f, x, "rotation").mean())
    model.head.kernel[...] *= 3
    after = float(lie.lie_error(f, x, "rotation").mean())
    assert after == pytest.approx(3 * before, rel=1e-3)
