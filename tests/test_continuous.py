"""Interpolated actions and sampled continuous families (equivax.continuous)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import equivax
from equivax import actions, continuous, groups, zoo


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Gaussian test data from NumPy (JAX's CPU compile of its generator takes seconds per shape)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def smooth_images(key, n: int, size: int, channels: int = 1) -> jax.Array:
    """Band-limited content well inside the image: blurred noise under a centred Gaussian window."""
    freq = np.fft.fftfreq(size)
    transfer = np.exp(-2 * np.pi**2 * 2.0**2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    noise = normal(key, (n, size, size, channels))
    blurred = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(noise, axes=(1, 2)) * transfer[None, :, :, None], axes=(1, 2)))
    u = np.arange(size) - (size - 1) / 2
    window = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * (size / 8) ** 2))
    return (blurred * window[None, :, :, None]).astype(jnp.float32)


def gaussian_filter(sigma: float, radius: int) -> jax.Array:
    t = np.arange(-radius, radius + 1)
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    return jnp.asarray(g / g.sum(), jnp.float32)[:, :, None, None]


@pytest.mark.parametrize("size", [7, 8])
def test_quarter_turns_match_rot90(size):
    x = normal(size, (2, size, size, 3))
    rotate = jax.jit(continuous.rotate())
    for k in (1, 2, 3):
        turned = rotate(jnp.array([k * np.pi / 2]), x)
        np.testing.assert_allclose(turned, jnp.rot90(x, k, axes=(1, 2)), atol=1e-5)


def test_integer_shifts_match_roll_and_subpixel_shifts_compose():
    x = normal(0, (2, 7, 8, 2))
    act = jax.jit(continuous.shift())
    for d in [(1, 2), (-3, 5), (6, -1)]:
        np.testing.assert_allclose(act(jnp.array(d, jnp.float32), x), jnp.roll(x, d, axis=(1, 2)), atol=1e-5)
    odd = normal(1, (1, 7, 9, 1))
    a, b = jnp.array([0.3, -0.45]), jnp.array([0.25, 0.7])
    np.testing.assert_allclose(act(a, act(b, odd)), act(a + b, odd), atol=1e-5)


def test_identity_elements_and_vmap_over_elements():
    x = normal(0, (2, 6, 6, 1))
    for act in (continuous.rotate(), continuous.scale(), continuous.shift()):
        group = {continuous.RotationAction: continuous.rotations, continuous.ScalingAction: continuous.scalings}.get(
            type(act), continuous.shifts
        )(n=3)
        moved = jax.jit(jax.vmap(act, in_axes=(0, None)))(jnp.asarray(group.elements), x)
        assert moved.shape == (len(group), *x.shape)
        np.testing.assert_allclose(moved[0], x, atol=1e-5)  # row 0 is the identity


def test_actions_are_differentiable_in_the_element():
    x = smooth_images(0, 1, 12)

    @jax.jit
    def turned(angle):
        return jnp.sum(continuous.rotate()(jnp.array([angle]), x) * x)

    h = 1e-2
    grad = jax.jit(jax.grad(turned))(0.3)
    central = (turned(0.3 + h) - turned(0.3 - h)) / (2 * h)
    np.testing.assert_allclose(grad, central, rtol=1e-3, atol=1e-4)


def test_rotation_resampling_error_on_smooth_images_is_below_the_tolerance():
    """The resampler against an exact rotation of smooth, centred Gaussian blobs (the
    measurement behind ROTATION_TOLERANCE)."""
    size = 24
    u = np.arange(size) - (size - 1) / 2
    rows, cols = np.meshgrid(u, u, indexing="ij")

    def blob(angle):  # an anisotropic blob, turned by `angle`
        a = rows * np.cos(angle) + cols * np.sin(angle)
        b = -rows * np.sin(angle) + cols * np.cos(angle)
        return np.exp(-((a - 2) ** 2) / (2 * 2.5**2) - (b + 1) ** 2 / (2 * 1.5**2))[None, :, :, None]

    x = jnp.asarray(blob(0.0), jnp.float32)
    rotate = jax.jit(continuous.rotate())
    for angle in np.linspace(0.1, 2 * np.pi, 7):
        turned = np.asarray(rotate(jnp.array([angle], jnp.float32), x))
        error = np.linalg.norm(turned - blob(angle)) / np.linalg.norm(blob(angle))
        assert error < continuous.ROTATION_TOLERANCE / 10, (angle, error)


def test_families_are_groups_with_labels():
    rot = continuous.rotations(n=4)
    assert rot.labels == ("e", "rot(90.0°)", "rot(180.0°)", "rot(270.0°)")
    assert rot.elements.dtype == np.float32 and rot.index(rot.identity) == 0
    assert continuous.rotations([np.radians(7.0)]).labels == ("e", "rot(7.0°)")
    assert len(continuous.rotations(n=5, max_angle=0.2)) == 5
    shifts = continuous.shifts([(0.5, 0.0)])
    assert shifts.labels == ("e", "shift(0.5,0)") and shifts.resampling_tolerance is None
    scalings = continuous.scalings([1.1])
    assert scalings.labels == ("e", "scale(1.10)")
    assert scalings.resampling_tolerance == continuous.SCALING_TOLERANCE
    g, h = rot.elements[1], rot.elements[2]
    np.testing.assert_allclose(rot.compose(g, rot.inverse(g)), rot.identity)
    np.testing.assert_allclose(rot.compose(g, h), g + h)


def test_family_arguments_are_validated():
    with pytest.raises(ValueError, match="either angles or n"):
        continuous.rotations([0.1], n=3)
    with pytest.raises(ValueError, match="positive number"):
        continuous.rotations(n=0)
    with pytest.raises(ValueError, match="max_factor must be above 1"):
        continuous.scalings(n=3, max_factor=0.5)
    with pytest.raises(ValueError, match="positive"):
        continuous.scalings([-1.0])
    with pytest.raises(ValueError, match=r"\(dy, dx\) pairs"):
        continuous.shifts([0.5, 0.5])
    with pytest.raises(ValueError, match="elements are 1-vectors"):
        continuous.rotate()(jnp.zeros(2), jnp.zeros((1, 4, 4, 1)))


def test_circular_conv_is_equivariant_to_subpixel_shifts():
    w = normal(0, (3, 3, 2, 3))
    x = normal(1, (2, 9, 8, 2))
    result = equivax.check(zoo.circular_conv(w), x, continuous.shifts([(0.5, 0.0), (0.25, -0.7)]))
    assert result.verdicts == ("equivariant", "equivariant"), result.reasons
    assert np.max(result.rel_error) < 1e-5


def test_isotropic_blur_under_rotations():
    """A Gaussian blur is rotation-equivariant up to resampling ("approximate", within the family's
    resampling_tolerance); a random filter is not ("broken").

    Measured (24x24, angles 0.3, π/4, 2.0): blur 7e-4 to 9e-4, random filter 0.3 to 1.1.
    """
    x = smooth_images(0, 2, 24)
    group = continuous.rotations([0.3, np.pi / 4, 2.0])
    blur = equivax.check(zoo.circular_conv(gaussian_filter(1.0, 3)), x, group)
    assert np.max(blur.rel_error) < group.resampling_tolerance / 5
    assert set(blur.verdicts) == {"approximate"}, blur.reasons
    random_filter = normal(2, (3, 3, 1, 1))
    random = equivax.check(zoo.circular_conv(random_filter), x, group, rtol=group.resampling_tolerance)
    assert np.min(random.rel_error) > 10 * group.resampling_tolerance
    assert set(random.verdicts) == {"broken"}


@given(dy=st.integers(-9, 9), dx=st.integers(-9, 9), ey=st.integers(-9, 9), ex=st.integers(-9, 9))
def test_shift_is_a_homomorphism_at_integer_shifts(dy, dx, ey, ex):
    """ρ(g + h) = ρ(g) ρ(h) at integer shifts, on even and odd sizes (Nyquist content included)."""
    act = continuous.shift()
    x = normal(0, (1, 6, 5, 2))
    g, h = jnp.array([dy, dx], jnp.float32), jnp.array([ey, ex], jnp.float32)
    np.testing.assert_allclose(act(g + h, x), act(g, act(h, x)), atol=1e-5)
    np.testing.assert_allclose(act(g + h, x), jnp.roll(x, (dy + ey, dx + ex), axis=(1, 2)), atol=1e-5)


def test_resampling_tolerance_belongs_to_the_action():
    group = continuous.rotations([0.3], tolerance=0.05)
    assert actions.resampling_tolerance(group.image_action) == 0.05 == group.resampling_tolerance
    assert actions.resampling_tolerance(continuous.rotate()) == continuous.ROTATION_TOLERANCE
    assert actions.resampling_tolerance(continuous.scale()) == continuous.SCALING_TOLERANCE
    assert actions.resampling_tolerance(continuous.shift()) is None
    assert actions.resampling_tolerance(continuous.rotate(None)) is None
    assert continuous.rotate(0.05) == group.image_action and continuous.rotate() != group.image_action
    with pytest.raises(ValueError, match="resampling_tolerance"):
        continuous.rotate(-1.0)
    with pytest.raises(ValueError, match="resampling_tolerance"):
        continuous.rotations(n=4, tolerance=float("nan"))


def test_continuous_actions_validate_groups_and_layouts():
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    for action, group in [
        (continuous.shift(), continuous.shifts([(0.5, 0.0)])),
        (continuous.rotate(), continuous.rotations([0.3])),
        (continuous.scale(), continuous.scalings([1.1])),
    ]:
        assert actions.acts_leafwise(action)
        actions.validate(action, group, x, "in_action")
        with pytest.raises(ValueError, match="looks NCHW"):
            actions.validate(action, group, jax.ShapeDtypeStruct((2, 1, 8, 8), jnp.float32), "in_action")
        with pytest.raises(ValueError, match=r"add a batch axis"):
            actions.validate(action, group, jax.ShapeDtypeStruct((8, 8, 1), jnp.float32), "in_action")
    with pytest.raises(ValueError, match=r"elements \(angle,\).*continuous\.rotations"):
        actions.validate(continuous.rotate(), groups.p4(8), x, "in_action")
    with pytest.raises(ValueError, match=r"elements \(dy, dx\)"):
        actions.validate(continuous.shift(), continuous.rotations([0.3]), x, "in_action")


def test_probe_tests_only_the_identity_law_of_interpolating_actions():
    """Rotating noise by a then b is not rotating it by a + b (corners leave the image): only
    act(e, x) = x is a law an interpolating action keeps exactly."""
    group = continuous.rotations([0.3, 0.7, 1.1])
    actions.probe(continuous.rotate(), group, normal(0, (1, 8, 8, 1)))
    with pytest.raises(ValueError, match="not a group action"):
        actions.probe(continuous.rotate(None), group, normal(0, (1, 8, 8, 1)))
