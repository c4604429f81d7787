"""Continuous symmetries of images: rotations by any angle, sub-pixel shifts and scalings.

Every action here samples a *band-limited* (trigonometric) interpolant of the image at moved
positions, so it is exact at the grid points and differentiable everywhere:

* ``shift`` treats the ``H × W`` image as one period of a periodic function and multiplies its
  spectrum by a phase ramp (``rfft2`` → ``exp(-2πi k·d/N)`` → ``irfft2``). It is the continuous
  extension of ``jnp.roll`` (equal to it at integer shifts) and a Fourier multiplier, so every
  circular convolution commutes with it exactly, to rounding.
* ``rotate`` and ``scale`` treat the image as zero outside its borders: it is zero-padded
  to ``2H × 2W`` and the trigonometric interpolant of that larger period is evaluated at rotated
  or scaled positions about the image centre ``((H-1)/2, (W-1)/2)``, with separable periodic sinc
  (Dirichlet) weights written as a short cosine series. Content turning in from outside is zero,
  as in ordinary image rotation, instead of a wrapped copy of the opposite corner. At the grid
  points the weights are a Kronecker delta, so a multiple of π/2 reproduces
  ``jnp.rot90(x, k, axes=(1, 2))`` to rounding (odd and even sizes), and the derivative in the
  angle is the exact derivative of the interpolant: the Fourier derivative ``equivax.lie``
  uses, so the generators there are the derivatives of these actions.

Why band-limited and not bilinear or cubic: circular convolutions are exactly equivariant to
sub-pixel shifts, quarter turns are exact, and derivatives are those of a smooth function rather
than the one-sided slopes of a piecewise polynomial at the grid points. The price: frequencies
near Nyquist (the corners of the spectrum, which a rotation moves out of the band) and content
cut off at the border (a jump, which rings) are resampled approximately. Rotations and scalings
are therefore not exact group actions on a pixel grid, and their actions carry a
``resampling_tolerance`` (read with ``equivax.actions.resampling_tolerance``; the sampled families
repeat it on the group for older code); keep the content inside the image, and smooth, to stay
well below it.
Cost: ``O((H·W)² · C)`` multiply-adds per image (two small matrix products), fine at MNIST sizes.

Sign conventions (``docs/conventions.md``): a positive angle turns the image counter-clockwise as
displayed with row 0 at the top, like ``jnp.rot90``; a shift by ``(dy, dx)`` moves content down by
``dy`` rows and right by ``dx`` columns, like ``jnp.roll``; a scale factor above 1 magnifies.

Even sizes: the Nyquist row/column of an even-sized image is a cosine that a sub-pixel shift
multiplies by ``cos(π d)`` (the real, symmetric convention that agrees with ``jnp.roll`` at
integers). Shifts therefore compose exactly on odd sizes and on images without Nyquist content.

One concept (continuous families acting by interpolation: their actions and the sampled groups),
a little past the project's 450-line guide.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from equivax import _planar
from equivax.groups import Group

__all__ = [
    "ROTATION_TOLERANCE",
    "SCALING_TOLERANCE",
    "RotationAction",
    "ScalingAction",
    "ShiftAction",
    "rotate",
    "rotations",
    "scale",
    "scalings",
    "shift",
    "shifts",
]

#: Default ``resampling_tolerance`` of ``rotations``. Measured (float32 and float64) as the
#: relative error of ``rotate`` against the exact rotation of smooth Gaussian blobs
#: (σ 1.5–3 px): about 1.5e-4 when the content vanishes at the border (24×24), up to 8e-3 when it
#: still reaches the border at the 1% level (24–28 px), and 1e-1 when it is cut off by a 16×16
#: border. The equivariance error of a Gaussian blur on smooth, centred 24×24 images is 7e-4 to
#: 9e-4 at every angle (``tests/test_continuous.py``). 1e-2 accepts the resampling of content that
#: stays inside the image and rejects real violations (a random 3×3 filter: 0.3 to 1.1).
ROTATION_TOLERANCE = 1e-2

#: Default ``resampling_tolerance`` of ``scalings``, the same measurement for factors in
#: [0.8, 1.25] on blobs that reach the border at the 1% level: up to 9e-3 at 24–28 px, 2e-3 at 32 px.
SCALING_TOLERANCE = 1e-2


def _spatial(x: jax.Array, name: str) -> tuple[int, int]:
    if x.ndim < 3:
        raise ValueError(f"{name} expects NHWC images (spatial axes 1 and 2), got shape {x.shape}")
    return int(x.shape[1]), int(x.shape[2])


def _float_dtype(x: jax.Array):
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)


def _validate(group: Group, x: Any, role: str, what: str, size: int, example: str, family: str) -> None:
    """Elements of length ``size`` (like ``example``), and an NHWC batch (the planar actions' layout checks)."""
    shape = np.shape(np.asarray(group.elements))[1:]
    if shape != (size,):
        raise ValueError(
            f"{what} acts by elements {example}, but {group.name} has elements of shape {shape}: use "
            f"continuous.{family}(...), or an action written for its elements"
        )
    _planar.check_image_layout(tuple(getattr(x, "shape", np.shape(x))), role, what)


def _element(g, size: int, name: str, example: str) -> jax.Array:
    g = jnp.asarray(g)
    if g.shape != (size,):
        raise ValueError(f"{name} elements are {size}-vectors {example}, got shape {g.shape}; pass e.g. {example}")
    return g


# ------------------------------------------------------------------------------------------------
# The band-limited interpolant: separable periodic sinc weights, and the sub-pixel shift.
# ------------------------------------------------------------------------------------------------


def _axis_weights(positions: jax.Array, n: int, period: int, dtype) -> jax.Array:
    """Weights ``D(s_p - i)`` of the periodic sinc of ``period``: ``(P,)`` positions → ``(P, n)``.

    ``D(t) = (1/T) Σ_k w_k cos(2π k t / T)`` for period ``T``, ``k = 0..⌊T/2⌋``, ``w_0 = 1``,
    ``w_k = 2``, and ``w = 1`` for the Nyquist term of an even ``T``; ``D`` is 1 at multiples of
    ``T`` and 0 at the other integers. Only the first ``n`` samples are read (a period ``T = 2n``
    treats the image as zero-padded to twice its size). The position is split into its nearest
    integer ``m`` and a fraction ``|f| ≤ 1/2``: cosines are taken of ``2π k f / T`` only (accurate
    in float32), and the integer part becomes a circular shift of the weight row, so large
    coordinates lose no digits.
    """
    k = np.arange(period // 2 + 1)
    w = np.where((k == 0) | (2 * k == period), 1.0, 2.0) / period
    q = np.arange(period)
    phase = 2 * np.pi * ((np.outer(q, k) % period) / period)  # exact angles of the grid, in float64
    cos_table = jnp.asarray(np.cos(phase).T * w[:, None], dtype)  # (K, T)
    sin_table = jnp.asarray(np.sin(phase).T * w[:, None], dtype)
    nearest = jnp.floor(positions + 0.5)
    frac = positions - nearest
    angle = frac[:, None] * jnp.asarray(2 * np.pi * k / period, dtype)
    row = jnp.cos(angle) @ cos_table + jnp.sin(angle) @ sin_table  # row[p, q] = D(frac_p - q)
    index = (jnp.arange(n)[None, :] - nearest.astype(jnp.int32)[:, None]) % period
    return jnp.take_along_axis(row, index, axis=1)


def _resample(x: jax.Array, rows: jax.Array, cols: jax.Array, padded: bool = True) -> jax.Array:
    """Evaluate the band-limited interpolant of ``x`` at source positions ``(rows, cols)`` (H, W)."""
    n, h, w = x.shape[:3]
    dtype = _float_dtype(x)
    flat = x.reshape(n, h, w, -1)
    weights_y = _axis_weights(rows.reshape(-1).astype(dtype), h, 2 * h if padded else h, dtype)  # (P, H)
    weights_x = _axis_weights(cols.reshape(-1).astype(dtype), w, 2 * w if padded else w, dtype)  # (P, W)
    along_x = jnp.einsum("pj,nijc->npic", weights_x, flat)
    out = jnp.einsum("pi,npic->npc", weights_y, along_x)
    return out.reshape(x.shape).astype(x.dtype)


def _phase(d: jax.Array, n: int, real_axis: bool, dtype) -> jax.Array:
    """The Fourier multiplier of a shift by ``d`` along an axis of length ``n`` (rfft or fft layout)."""
    k = np.fft.rfftfreq(n, 1 / n) if real_axis else np.fft.fftfreq(n, 1 / n)
    nyquist = (n % 2 == 0) & (np.abs(k) == n // 2)
    angle = -2 * np.pi * jnp.asarray(k / n, dtype) * d
    ramp = jax.lax.complex(jnp.cos(angle), jnp.sin(angle))
    return jnp.where(jnp.asarray(nyquist), jax.lax.complex(jnp.cos(np.pi * d), jnp.zeros_like(d)), ramp)


def _centred_grid(h: int, w: int, dtype) -> tuple[jax.Array, jax.Array]:
    rows, cols = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    return jnp.asarray(rows, dtype), jnp.asarray(cols, dtype)


# ------------------------------------------------------------------------------------------------
# Actions: frozen dataclasses act(g, x), traceable and vmappable in g.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShiftAction:
    """Periodic sub-pixel translation by ``g = (dy, dx)`` pixels, by a phase ramp in the FFT.

    Exact at integer shifts (``jnp.roll``), and a group action on odd sizes or band-limited content;
    ``resampling_tolerance`` is ``None``. Acts leaf by leaf on a pytree.
    """

    resampling_tolerance: ClassVar[None] = None
    leafwise: ClassVar[bool] = True

    def validate(self, group: Group, x: Any, role: str) -> None:
        """Refuse, in one line, groups whose elements are not ``(dy, dx)`` and inputs that are not NHWC."""
        _validate(group, x, role, "shift()", 2, "(dy, dx)", "shifts")

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        h, w = _spatial(x, "shift")
        g = _element(g, 2, "shift", "(dy, dx)")
        dtype = _float_dtype(x)
        g = g.astype(dtype)
        spectrum = jnp.fft.rfft2(x.astype(dtype), axes=(1, 2))
        multiplier = _phase(g[0], h, False, dtype)[:, None] * _phase(g[1], w, True, dtype)[None, :]
        multiplier = multiplier.reshape(1, *multiplier.shape, *(1,) * (x.ndim - 3))
        return jnp.fft.irfft2(spectrum * multiplier, s=(h, w), axes=(1, 2)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class RotationAction:
    """Rotation by ``g = (angle,)`` radians, counter-clockwise, about the image centre.

    Not an exact group action on a pixel grid: a structural error up to ``resampling_tolerance``
    (relative) is resampling, not a broken symmetry. Acts leaf by leaf on a pytree.
    """

    resampling_tolerance: float | None = ROTATION_TOLERANCE
    leafwise: ClassVar[bool] = True

    def validate(self, group: Group, x: Any, role: str) -> None:
        """Refuse, in one line, groups whose elements are not ``(angle,)`` and inputs that are not NHWC."""
        _validate(group, x, role, "rotate()", 1, "(angle,)", "rotations")

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        h, w = _spatial(x, "rotate")
        dtype = _float_dtype(x)
        angle = _element(g, 1, "rotation", "(angle,)")[0].astype(dtype)
        u, v = _centred_grid(h, w, dtype)
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        # Output pixel p reads the input at R(-angle) p; R(π/2) maps a displacement (u, v) to (-v, u).
        rows = u * cos + v * sin + (h - 1) / 2
        cols = -u * sin + v * cos + (w - 1) / 2
        return _resample(x, rows, cols)


@dataclasses.dataclass(frozen=True)
class ScalingAction:
    """Scaling by ``exp(g[0])`` about the image centre (``g = (log_scale,)``; > 0 magnifies).

    Interpolated like ``RotationAction``, with its own ``resampling_tolerance``.
    """

    resampling_tolerance: float | None = SCALING_TOLERANCE
    leafwise: ClassVar[bool] = True

    def validate(self, group: Group, x: Any, role: str) -> None:
        """Refuse, in one line, groups whose elements are not ``(log_scale,)`` and inputs that are not NHWC."""
        _validate(group, x, role, "scale()", 1, "(log_scale,)", "scalings")

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        h, w = _spatial(x, "scale")
        dtype = _float_dtype(x)
        shrink = jnp.exp(-_element(g, 1, "scaling", "(log_scale,)")[0].astype(dtype))
        u, v = _centred_grid(h, w, dtype)
        return _resample(x, u * shrink + (h - 1) / 2, v * shrink + (w - 1) / 2)


def shift() -> ShiftAction:
    """The periodic sub-pixel shift action ``act((dy, dx), x)``, the band-limited extension of ``jnp.roll``.

    Returns:
      An action; ``act(jnp.array([dy, dx]), x)`` shifts NHWC images ``x`` by ``dy`` rows (down) and
      ``dx`` columns (right), circularly.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.sin(jnp.arange(60.0) ** 2).reshape(1, 6, 5, 2)
      >>> y = shift()(jnp.array([2.0, -1.0]), x)
      >>> bool(jnp.allclose(y, jnp.roll(x, (2, -1), axis=(1, 2)), atol=1e-5))
      True
    """
    return ShiftAction()


def _tolerance(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value >= 0:
        raise ValueError(f"resampling_tolerance must be a number ≥ 0 or None, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"resampling_tolerance must be finite, got {value!r}")
    return float(value)


def rotate(resampling_tolerance: float | None = ROTATION_TOLERANCE) -> RotationAction:
    """The rotation action ``act((angle,), x)``: turn NHWC images by ``angle`` radians about their centre.

    Counter-clockwise for positive angles, as ``jnp.rot90(x, 1, axes=(1, 2))`` at ``π/2``, for odd
    and even sizes. Differentiable in the angle.

    Args:
      resampling_tolerance: the relative error up to which a check calls a structural error
        ``"approximate"`` (resampling) rather than ``"broken"``; ``None`` treats the action as exact.

    Returns:
      An action; the element is a length-1 float array ``(angle,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.sin(jnp.arange(36.0) ** 2).reshape(1, 6, 6, 1)
      >>> y = rotate()(jnp.array([jnp.pi / 2]), x)
      >>> bool(jnp.allclose(y, jnp.rot90(x, 1, axes=(1, 2)), atol=1e-5))
      True
    """
    return RotationAction(_tolerance(resampling_tolerance))


def scale(resampling_tolerance: float | None = SCALING_TOLERANCE) -> ScalingAction:
    """The scaling action ``act((log_scale,), x)``: magnify NHWC images by ``exp(log_scale)`` about their centre.

    Args:
      resampling_tolerance: as for ``rotate``.

    Returns:
      An action; the element is a length-1 float array ``(log_scale,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.sin(jnp.arange(36.0) ** 2).reshape(1, 6, 6, 1)
      >>> bool(jnp.allclose(scale()(jnp.array([0.0]), x), x, atol=1e-5))
      True
    """
    return ScalingAction(_tolerance(resampling_tolerance))


# ------------------------------------------------------------------------------------------------
# Sampled families as groups: float elements, identity first, labels for reports.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _AdditiveLaw:
    """Elements compose by addition (angles, log-scales, shift vectors): an abelian group law."""

    def compose(self, g, h):
        return jnp.asarray(g) + jnp.asarray(h)

    def inverse(self, g):
        return -jnp.asarray(g)


def _family(
    name: str, table: np.ndarray, labels: Sequence[str], action, tolerance: float | None, dtype=np.float32
) -> Group:
    law = _AdditiveLaw()
    return Group(
        name=name,
        elements=np.asarray(table, dtype=dtype),
        labels=tuple(labels),
        identity=np.zeros(table.shape[1], dtype=dtype),
        compose_fn=law.compose,
        inverse_fn=law.inverse,
        image_action=action,
        resampling_tolerance=tolerance,
    )


def _with_identity(values: np.ndarray) -> np.ndarray:
    """Put the identity (the zero row) first, drop duplicates, keep the given order otherwise."""
    rows = [tuple(np.zeros(values.shape[1]).tolist())]
    for row in values.tolist():
        if tuple(row) not in rows:
            rows.append(tuple(row))
    return np.asarray(rows, dtype=np.float64)


def _as_values(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a non-empty 1-D list of finite numbers, got {values!r}")
    return array


def _count(n, what: str) -> int:
    if n is None:
        raise ValueError(f"pass {what}=[...] or n=..., the number of elements to sample")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive number of elements, got {n!r}")
    return int(n)


def _either(name: str, values, n, bound, bound_name: str) -> None:
    if values is not None and (n is not None or bound is not None):
        raise ValueError(f"pass either {name} or n/{bound_name}, not both")


def rotations(
    angles: Sequence[float] | None = None,
    *,
    n: int | None = None,
    max_angle: float | None = None,
    tolerance: float | None = ROTATION_TOLERANCE,
) -> Group:
    """A sampled family of rotations (angles in radians) acting on images by band-limited interpolation.

    Args:
      angles: the angles to keep (radians); the identity is added first.
      n: instead of ``angles``: without ``max_angle``, the ``n`` angles ``2πk/n`` (the cyclic group
        ``C_n``, exactly closed under composition modulo 2π); with ``max_angle``, ``n`` angles evenly
        spaced in ``[-max_angle, max_angle]``.
      max_angle: the largest angle of the evenly spaced family (radians).
      tolerance: the ``resampling_tolerance`` of the action (repeated on the group), default
        ``ROTATION_TOLERANCE``.

    Returns:
      A ``Group`` with float32 elements ``(angle,)``, labels like
      ``"rot(7.0°)"``, elements composing by addition of angles and ``image_action`` set to
      ``rotate``.

    Examples:
      >>> g = rotations(n=4)
      >>> g.labels, g.resampling_tolerance
      (('e', 'rot(90.0°)', 'rot(180.0°)', 'rot(270.0°)'), 0.01)
    """
    _either("angles", angles, n, max_angle, "max_angle")
    if angles is not None:
        values = _as_values("angles", angles)
    elif max_angle is None:
        n = _count(n, "angles")
        values = 2 * np.pi * np.arange(n) / n
    else:
        values = np.linspace(-float(max_angle), float(max_angle), _count(n, "angles"))
    table = _with_identity(values[:, None])
    labels = ["e" if a == 0 else f"rot({math.degrees(a):.1f}°)" for a in table[:, 0]]
    tolerance = _tolerance(tolerance)
    return _family(f"rotations({len(table)})", table, labels, rotate(tolerance), tolerance)


def scalings(
    factors: Sequence[float] | None = None,
    *,
    n: int | None = None,
    max_factor: float | None = None,
    tolerance: float | None = SCALING_TOLERANCE,
) -> Group:
    """A sampled family of scalings about the image centre, by band-limited interpolation.

    Args:
      factors: the scale factors to keep (> 0; above 1 magnifies); the identity is added first.
      n: instead of ``factors``: ``n`` factors geometrically spaced in ``[1/max_factor, max_factor]``.
      max_factor: the largest factor of the spaced family (> 1, default 1.25).
      tolerance: the ``resampling_tolerance`` of the action (repeated on the group), default
        ``SCALING_TOLERANCE``.

    Returns:
      A ``Group`` with float32 elements ``(log_scale,)``, labels like
      ``"scale(1.10)"`` and ``image_action`` set to ``scale``.

    Examples:
      >>> scalings([1.1, 0.9]).labels
      ('e', 'scale(1.10)', 'scale(0.90)')
    """
    _either("factors", factors, n, max_factor, "max_factor")
    if factors is not None:
        values = _as_values("factors", factors)
    else:
        top = 1.25 if max_factor is None else float(max_factor)
        if top <= 1:
            raise ValueError(f"max_factor must be above 1, got {max_factor!r}")
        values = np.exp(np.linspace(-np.log(top), np.log(top), _count(n, "factors")))
    if np.any(values <= 0):
        raise ValueError(f"scale factors must be positive, got {values.tolist()}")
    table = _with_identity(np.log(values)[:, None])
    labels = ["e" if s == 0 else f"scale({math.exp(s):.2f})" for s in table[:, 0]]
    tolerance = _tolerance(tolerance)
    return _family(f"scalings({len(table)})", table, labels, scale(tolerance), tolerance)


def shifts(
    offsets: Sequence[Sequence[float]] | None = None,
    *,
    n: int | None = None,
    max_shift: float | None = None,
) -> Group:
    """A sampled family of sub-pixel periodic shifts ``(dy, dx)``, acting by a Fourier phase ramp.

    Fourier shifts compose exactly (on odd sizes, and on even sizes away from the Nyquist
    frequency), so the group's ``resampling_tolerance`` is ``None``: a circular convolution is
    exactly equivariant to them, and any structural error is a real one.

    Args:
      offsets: the ``(dy, dx)`` shifts to keep, in pixels; the identity is added first.
      n: instead of ``offsets``: the ``n × n`` grid of shifts evenly spaced in
        ``[-max_shift, max_shift]`` on both axes.
      max_shift: the largest shift of the grid (pixels, default 0.5).

    Returns:
      A ``Group`` with float32 elements ``(dy, dx)``, labels like
      ``"shift(0.5,0)"`` and ``image_action`` set to ``shift``.

    Examples:
      >>> shifts(n=3).labels[:3]
      ('e', 'shift(-0.5,-0.5)', 'shift(-0.5,0)')
    """
    _either("offsets", offsets, n, max_shift, "max_shift")
    if offsets is not None:
        table = np.asarray(offsets, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != 2 or not np.all(np.isfinite(table)):
            raise ValueError(f"offsets must be a list of (dy, dx) pairs, got {offsets!r}")
    else:
        top = 0.5 if max_shift is None else float(max_shift)
        axis = np.linspace(-top, top, _count(n, "offsets"))
        table = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    table = _with_identity(table)
    labels = ["e" if not (dy or dx) else f"shift({dy:g},{dx:g})" for dy, dx in table]
    return _family(f"shifts({len(table)})", table, labels, shift(), None)
