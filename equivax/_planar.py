"""The planar symmetries of a pixel grid: the element law ``(dy, dx, k, m)`` and its two exact actions.

An element ``(dy, dx, k, m)`` acts on the spatial axes (1, 2) of an NHWC array as

    g · x = roll(rot90(flip(x, m), k), (dy, dx))

first mirror the width axis if ``m == 1``, then turn ``k`` quarter turns counter-clockwise
(``jnp.rot90(x, k, axes=(1, 2))``), then shift circularly by ``dy`` rows and ``dx`` columns. Its
linear part is ``A^k M^m`` with ``M`` the mirror and ``A`` the quarter turn. Everything that
depends on this encoding lives here, once: the point law (compose, inverse of ``(k, m)``), the
full law with translations modulo an image size, the source pixel of every output pixel, the
orientation permutation of the regular action, labels, and the two array actions built on them
(``ImageAction``, ``RegularAction``, public through ``equivax.actions``) with the NHWC layout
checks they run on their inputs. ``equivax.groups``, ``equivax.actions`` and ``equivax.nn`` import
it; it imports none of them, so a group can carry its natural action without an import cycle.

Every formula accepts Python or NumPy integers (evaluated on the host, e.g. for filter banks) as
well as traced JAX integers (inside a vmapped check).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: The point groups of the planar encoding, as ordered tuples of (k, m). The order fixes the
#: orientation axis of group feature maps: index ``k + 4 m`` for D4, ``k`` for C4.
POINT_TRIVIAL = ((0, 0),)
POINT_C4 = ((0, 0), (1, 0), (2, 0), (3, 0))
POINT_FLIPS = ((0, 0), (0, 1))
POINT_D4 = (*POINT_C4, (0, 1), (1, 1), (2, 1), (3, 1))

#: Point groups by the name of the symmetry a layer is built for.
POINT_GROUPS = {"translations": POINT_TRIVIAL, "p4": POINT_C4, "p4m": POINT_D4}


# ------------------------------------------------------------------------------------------------
# The law
# ------------------------------------------------------------------------------------------------


def point_compose(k1: Any, m1: Any, k2: Any, m2: Any) -> tuple[Any, Any]:
    """``(k1, m1) · (k2, m2)`` in D4: ``A^k1 M^m1 A^k2 M^m2 = A^(k1 + (1 - 2 m1) k2) M^(m1 + m2)``."""
    return (k1 + (1 - 2 * m1) * k2) % 4, (m1 + m2) % 2


def point_inverse(k: Any, m: Any) -> tuple[Any, Any]:
    """``(k, m)⁻¹``: a turn inverts to the opposite turn; a mirror (with its turn) is its own inverse."""
    return ((2 * m - 1) * k) % 4, m


def point_slot(k: Any, m: Any) -> Any:
    """Index ``k + 4 m`` of the point element ``(k, m)`` for any integers (``k`` modulo 4, ``m``
    modulo 2; a bit mask is both, negative integers included)."""
    return (k & 3) + 4 * (m & 1)


def _linear_matrix(k: int, m: int) -> np.ndarray:
    """The integer matrix of ``A^k M^m`` acting on a displacement ``(dy, dx)``."""

    def image(dy: int, dx: int) -> tuple[int, int]:
        dx = -dx if m else dx
        return ((dy, dx), (-dx, dy), (-dy, -dx), (dx, -dy))[k % 4]

    (a, c), (b, d) = image(1, 0), image(0, 1)
    return np.array([[a, b], [c, d]], dtype=np.int32)


#: The linear part ``A^k M^m`` of every point element, and its inverse, at ``point_slot(k, m)``:
#: tables, so that a traced element selects its matrix with one lookup (compiled, a chain of
#: selects per matrix entry costs XLA more than the gather of the pixels itself).
LINEAR = np.stack([_linear_matrix(k, m) for m in (0, 1) for k in range(4)])
INVERSE_LINEAR = np.stack([_linear_matrix(*point_inverse(k, m)) for m in (0, 1) for k in range(4)])


def _times(matrix: Any, v0: Any, v1: Any) -> tuple[Any, Any]:
    return matrix[0, 0] * v0 + matrix[0, 1] * v1, matrix[1, 0] * v0 + matrix[1, 1] * v1


def rotate_vector(k: Any, m: Any, v: Any) -> jax.Array:
    """Apply the linear part ``A^k M^m`` to a displacement ``v = (dy, dx)`` (integers, traceable).

    ``M`` mirrors the width axis, ``(dy, dx) -> (dy, -dx)``; ``A`` is the quarter turn of
    ``jnp.rot90(..., axes=(1, 2))``, which moves a displacement ``(dy, dx)`` to ``(-dx, dy)``.
    ``v`` may carry trailing axes (``v[0]`` and ``v[1]`` are the two components).
    """
    matrix = jnp.asarray(LINEAR)[point_slot(k, m)]
    v0, v1 = jnp.asarray(v[0]), jnp.asarray(v[1])
    dtype = jnp.result_type(v0, v1)
    return jnp.stack(_times(matrix.astype(dtype), v0, v1))


@dataclasses.dataclass(frozen=True)
class PlanarLaw:
    """Composition and inverse of planar elements, translations taken modulo ``shape``
    (``None``: a point group, whose translations are always zero)."""

    shape: tuple[int, int] | None

    def _wrap(self, t: jax.Array) -> jax.Array:
        if self.shape is None:
            return jnp.zeros_like(t)
        return t % jnp.asarray(self.shape, dtype=t.dtype)

    def compose(self, g: Any, h: Any) -> jax.Array:
        g, h = jnp.asarray(g), jnp.asarray(h)
        k, m = point_compose(g[2], g[3], h[2], h[3])
        t = self._wrap(g[:2] + rotate_vector(g[2], g[3], h[:2]))
        return jnp.concatenate([t, jnp.stack([k, m])]).astype(g.dtype)

    def inverse(self, g: Any) -> jax.Array:
        g = jnp.asarray(g)
        k, m = point_inverse(g[2], g[3])
        t = self._wrap(-rotate_vector(k, m, g[:2]))
        return jnp.concatenate([t, jnp.stack([k, m])]).astype(g.dtype)


def source_pixels(g: Any, height: int, width: int, stride: int = 1) -> tuple[jax.Array, jax.Array]:
    """Row and column indices ``q = g⁻¹ · p`` for every output pixel ``p`` (integer arithmetic).

    Shifts are divided by ``stride`` (the action on an output subsampled by it). Positions are
    handled in doubled, centred coordinates ``2p - (n - 1)`` so that the quarter turn about the
    array centre stays integral for both even and odd sizes. Written with few operations, each on
    one axis where it can be: this runs inside every check of an image action, and XLA's compile
    time grows with the number of operations, not with the image.
    """
    g = jnp.asarray(g).astype(jnp.int32)
    dy, dx = (g[0], g[1]) if stride == 1 else (g[0] // stride, g[1] // stride)
    inverse = jnp.asarray(INVERSE_LINEAR)[point_slot(g[2], g[3])]

    def centred(n: int, shift: jax.Array) -> jax.Array:
        # (p - shift) mod n for p = 0..n-1, the remainder taken of a non-negative number.
        moved = lax.rem(jnp.arange(n, dtype=jnp.int32) + (n - shift % n), jnp.int32(n))
        return moved * 2 - (n - 1)

    rows, cols = _times(inverse, centred(height, dy)[:, None], centred(width, dx)[None, :])
    # Back from doubled coordinates: the sums are even and non-negative, so a shift halves them.
    return jnp.right_shift(rows + (height - 1), 1), jnp.right_shift(cols + (width - 1), 1)


def point_index(points: tuple[tuple[int, int], ...]) -> np.ndarray:
    """A ``(4, 2)`` table: the position of ``(k, m)`` in ``points``, or -1 where it is absent."""
    table = np.full((4, 2), -1, dtype=np.int32)
    for i, (k, m) in enumerate(points):
        table[k, m] = i
    return table


def orientation_source(points: tuple[tuple[int, int], ...], k: Any, m: Any) -> Any:
    """For the point element ``g = (k, m)``: entry ``h`` is the index of ``g⁻¹·h`` in ``points``, so
    ``x[..., source, :]`` is the regular action of ``g`` on an orientation axis ordered by ``points``.

    Host integers give a NumPy array (filter banks); traced integers a JAX array (actions), read
    from a table of all eight point elements.
    """
    if isinstance(k, jax.Array) or isinstance(m, jax.Array):
        return jnp.asarray(_orientation_table(tuple(points)))[point_slot(k, m)]
    points_array = np.asarray(points, dtype=np.int32).reshape(-1, 2)
    k_inv, m_inv = point_inverse(k, m)
    k_src, m_src = point_compose(k_inv, m_inv, points_array[:, 0], points_array[:, 1])
    return point_index(points)[k_src, m_src]


@functools.cache
def _orientation_table(points: tuple[tuple[int, int], ...]) -> np.ndarray:
    """``orientation_source`` of every point element, at ``point_slot(k, m)``."""
    return np.stack([orientation_source(points, k, m) for m in (0, 1) for k in range(4)])


# ------------------------------------------------------------------------------------------------
# Labels and names
# ------------------------------------------------------------------------------------------------


def _signed(t: int, n: int) -> int:
    """Shift ``t`` modulo ``n`` written in ``(-n/2, n/2]`` for labels."""
    t = t % n
    return t - n if t > n // 2 else t


def label(g: Any, shape: tuple[int, int] | None) -> str:
    """``"shift(0,1)·r1·m"`` for a concrete element; ``"e"`` for the identity."""
    dy, dx, k, m = (int(v) for v in np.asarray(g).reshape(-1))
    parts = []
    if shape is not None and (dy or dx):
        parts.append(f"shift({_signed(dy, shape[0])},{_signed(dx, shape[1])})")
    if k:
        parts.append(f"r{k}")
    if m:
        parts.append("m")
    return "·".join(parts) or "e"


_NAME = re.compile(r"(translations|p4m?)\((\d+)x(\d+)(?:, stride=([^,]+?))?(, \d+ shifts)?\)")


def constructor_for(group_name: str, height: int, width: int) -> str:
    """The call that builds the group named ``group_name`` for ``height × width`` images,
    e.g. ``p4(32)`` for ``p4(28x28)``: what a size-mismatch message suggests."""
    found = _NAME.fullmatch(group_name)
    kind = found.group(1) if found else "translations"
    size = f"{height}" if height == width else f"{height}, {width}"
    if found and found.group(4):
        size += f", stride={found.group(4)}"
    if found and found.group(5):
        size += ", shifts=[...]"
    return f"groups.{kind}({size})"


# ------------------------------------------------------------------------------------------------
# Layout checks shared by every action on images (also the interpolating ones of continuous.py)
# ------------------------------------------------------------------------------------------------


def _subject(role: str) -> str:
    return "f's output" if role == "out_action" else "x"


def looks_channels_first(shape: tuple[int, ...], size: tuple[int, int] | None) -> bool:
    """Whether a 4-D shape reads more plausibly as ``(N, C, H, W)`` than as ``(N, H, W, C)``."""
    if len(shape) != 4:
        return False
    _, a, b, c = shape
    if size is not None:
        return (a, b) != tuple(size) and (b, c) == tuple(size)
    return a <= 4 < c == b


def check_image_layout(
    shape: tuple[int, ...], role: str, what: str, size: tuple[int, int] | None = None, channels_first: bool = False
) -> None:
    """Refuse, in one line, an array that is not an NHWC batch (NCHW with ``channels_first``): too
    few axes, no batch axis, the other layout.

    ``size`` is the image size the group expects, if any (it sharpens the layout test).
    """
    shape = tuple(int(n) for n in shape)
    subject = _subject(role)
    if len(shape) < 3:
        layout, fix = (
            ("NCHW images (N, C, H, W)", "x[None, None]")
            if channels_first
            else ("NHWC images (N, H, W, C)", "x[None, ..., None]")
        )
        raise ValueError(
            f"{what} acts on {layout}, but {subject} has shape {shape}; add batch and channel axes, e.g. {fix}"
        )
    if channels_first:
        if role == "in_action" and len(shape) == 4 and size is not None:
            _, c, h, w = shape
            if (h, w) != tuple(size) and (c, h) == tuple(size):
                raise ValueError(
                    f"{what} acts on NCHW images, but x of shape {shape} looks NHWC ({w} channels of {c}x{h}): "
                    "pass in_action=actions.image(), or x.transpose(0, 3, 1, 2)"
                )
        return
    if role == "in_action" and len(shape) == 3:
        raise ValueError(
            f"{what} acts on NHWC batches (N, H, W, C), but x has shape {shape}, one image without a batch axis: "
            "add a batch axis (x[None]), or a channel axis (x[..., None]) if axis 0 is the batch"
        )
    if role == "in_action" and looks_channels_first(shape, size):
        _, c, h, w = shape
        raise ValueError(
            f"{what} acts on NHWC images, but x of shape {shape} looks NCHW ({c} channels of {h}x{w}): "
            "pass in_action=actions.image(channels_first=True), or x.transpose(0, 2, 3, 1)"
        )


def _planar_group(group: Any, what: str) -> None:
    points = getattr(group, "point_group", None)
    elements = np.asarray(getattr(group, "elements", np.zeros((0, 0))))
    if points is None or elements.shape[1:] != (4,):
        name = getattr(group, "name", type(group).__name__)
        raise ValueError(
            f"{what} moves pixels by planar elements (dy, dx, k, m), but {name} is not a planar group (elements "
            f"of shape {elements.shape[1:]}): use groups.translations/rotations/flips/dihedral/p4/p4m, or pass an "
            "action written for its elements"
        )


def _check_spatial_fit(group: Any, shape: tuple[int, ...], role: str, stride: int, what: str) -> None:
    """Square images for quarter turns; the group's image size (divided by the stride) when it has one."""
    height, width = int(shape[1]), int(shape[2])
    subject = _subject(role)
    turns = any(k % 2 for k, _ in group.point_group)
    if turns and height != width:
        raise ValueError(
            f"{group.name} rotates images by 90°, which needs square images, but {subject} is {height}x{width}: "
            f"crop or pad {'x' if role == 'in_action' else 'the input'} to square"
        )
    if group.shape is None:
        return
    gh, gw = group.shape
    want = (gh // stride, gw // stride)
    if (height, width) == want and gh % stride == 0 and gw % stride == 0:
        return
    if role == "in_action" and stride == 1:
        raise ValueError(
            f"{group.name} acts on {gh}x{gw} images but x is {height}x{width}; build the group for the input "
            f"size, e.g. {constructor_for(group.name, height, width)}"
        )
    whole = height and width and gh % height == 0 and gw % width == 0 and gh // height == gw // width
    ratio = gh // height if whole else None
    hint = f"out_action=actions.strided({ratio})" if ratio and ratio != stride else "the action that matches it"
    noun = "outputs" if role == "out_action" else "inputs"
    raise ValueError(
        f"a stride-{stride} {what} on {gh}x{gw} inputs expects {want[0]}x{want[1]} {noun}, but {subject} is "
        f"{height}x{width}: use an input size divisible by the total stride {stride}, or {hint}"
    )


def _shape_of(x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    return tuple(int(n) for n in (np.shape(x) if shape is None else shape))


# ------------------------------------------------------------------------------------------------
# The two exact actions
# ------------------------------------------------------------------------------------------------


def take_pixels(x: jax.Array, rows: jax.Array, cols: jax.Array, axis: int) -> jax.Array:
    """``x`` indexed by ``(rows, cols)`` (two ``(H, W)`` integer arrays, in bounds) on the spatial axes
    ``axis, axis + 1``: ``x[:, rows, cols]`` for ``axis = 1``. One ``lax.gather``: JAX's indexing
    adds steps for negative indices and costs more to trace, in every check of an image action."""
    indices = lax.concatenate([lax.expand_dims(rows, (rows.ndim,)), lax.expand_dims(cols, (cols.ndim,))], rows.ndim)
    numbers = lax.GatherDimensionNumbers(
        offset_dims=tuple(d for d in range(x.ndim) if d not in (axis, axis + 1)),
        collapsed_slice_dims=(axis, axis + 1),
        start_index_map=(axis, axis + 1),
    )
    sizes = tuple(1 if d in (axis, axis + 1) else n for d, n in enumerate(x.shape))
    return lax.gather(x, indices, numbers, sizes, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)


@dataclasses.dataclass(frozen=True)
class ImageAction:
    """Shifts, quarter turns and mirrors of the spatial axes (1, 2) of NHWC arrays, or of the last two
    axes with ``channels_first`` (``(N, C, H, W)``, as Equinox and PyTorch-style code lay them out);
    shifts divided by ``stride``.

    Acts leaf by leaf on a pytree; ``defined(g)`` is false for shifts its stride drops.
    """

    stride: int = 1
    channels_first: bool = False
    leafwise: ClassVar[bool] = True

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        if x.ndim < 3:
            layout = "(N, C, H, W)" if self.channels_first else "(N, H, W, C)"
            raise ValueError(
                f"the image action expects an array with a batch axis and two spatial axes {layout}, got shape "
                f"{x.shape}"
            )
        if self.channels_first:
            rows, cols = source_pixels(g, x.shape[-2], x.shape[-1], self.stride)
            return take_pixels(x, rows, cols, x.ndim - 2)
        rows, cols = source_pixels(g, x.shape[1], x.shape[2], self.stride)
        return take_pixels(x, rows, cols, 1)

    def defined(self, g: jax.Array) -> jax.Array:
        g = jnp.asarray(g)
        return (g[0] % self.stride == 0) & (g[1] % self.stride == 0)

    def spatial_last(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` with the spatial axes at positions 1 and 2 (NHWC), as the layout checks read it."""
        if not self.channels_first or len(shape) < 3:
            return tuple(shape)
        return (shape[0], shape[-2], shape[-1], *shape[1:-2])

    def validate(self, group: Any, x: Any, role: str) -> None:
        """Refuse, in one line: a non-planar group, an array that is not an NHWC batch (NCHW with
        ``channels_first``), a size the group does not act on (divided by the stride), a non-square
        image under quarter turns."""
        what = "image()" if self.stride == 1 else f"strided({self.stride})"
        _planar_group(group, what)
        shape = _shape_of(x)
        size = None if group.shape is None else (group.shape[0] // self.stride, group.shape[1] // self.stride)
        if self.channels_first:
            what = "image(" + ("" if self.stride == 1 else f"stride={self.stride}, ") + "channels_first=True)"
        check_image_layout(shape, role, what, size, self.channels_first)
        _check_spatial_fit(group, self.spatial_last(shape), role, self.stride, what)


@dataclasses.dataclass(frozen=True)
class RegularAction:
    """Spatial transform of axes (1, 2) plus the regular permutation of the orientation axis 3."""

    points: tuple[tuple[int, int], ...]
    stride: int = 1
    name: str = "regular"
    leafwise: ClassVar[bool] = True

    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        if x.ndim < 5 or x.shape[3] != len(self.points):
            raise ValueError(
                f"the regular action of {self.name} expects group feature maps (N, H, W, "
                f"{len(self.points)}, C) with the orientation axis at position 3, got shape {x.shape}"
            )
        g = jnp.asarray(g).astype(jnp.int32)
        rows, cols = source_pixels(g, x.shape[1], x.shape[2], self.stride)
        # Orientation h goes to g·h, so output h reads input g⁻¹·h.
        return jnp.take(take_pixels(x, rows, cols, 1), orientation_source(self.points, g[2], g[3]), axis=3)

    def defined(self, g: jax.Array) -> jax.Array:
        g = jnp.asarray(g).astype(jnp.int32)
        has_point = jnp.asarray(point_index(self.points).T.reshape(-1))[point_slot(g[2], g[3])] >= 0
        return ImageAction(self.stride).defined(g) & has_point

    def validate(self, group: Any, x: Any, role: str) -> None:
        """As ``ImageAction.validate``, for 5-D maps ``(N, H, W, |K|, C)``; and every turn or mirror of the
        group must have an orientation on the axis."""
        what = f"the regular action of {self.name}"
        _planar_group(group, what)
        outside = sorted(set(group.point_group) - set(self.points))
        if outside and role == "in_action":  # on outputs, ``defined`` marks those elements instead
            k, m = outside[0]
            raise ValueError(
                f"{role} is the regular action of {self.name} ({len(self.points)} orientations), but {group.name} "
                f"contains r{k}{'·m' if m else ''}, which has no orientation there: use actions.regular(group) with "
                f"the group you check, or a group within {self.name}"
            )
        shape, orientations = _shape_of(x), len(self.points)
        subject = _subject(role)
        if len(shape) == 4 and shape[2] == orientations and role == "in_action":
            raise ValueError(
                f"{what} acts on batches of group feature maps (N, H, W, {orientations}, C), but x has shape "
                f"{shape}, one map without a batch axis: add a batch axis (x[None])"
            )
        if len(shape) != 5 or shape[3] != orientations:
            raise ValueError(
                f"{what} expects group feature maps (N, H, W, {orientations}, C) with the orientation axis at "
                f"position 3, but {subject} has shape {shape}: move the orientation axis to position 3"
            )
        _check_spatial_fit(group, shape, role, self.stride, what)
