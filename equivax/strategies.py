"""Hypothesis strategies for equivariance tests: structured images, group elements, cases.

Strategies draw *structure*, not megabytes: an image is a family (constant, checkerboard, spikes,
smooth, noise, digits), a couple of parameters and a seed, rendered with NumPy. Hypothesis shrinks
toward earlier families and smaller seeds, so a failure is reported on the simplest input that shows
it. Group elements are drawn by index in order of increasing length (a 1-pixel shift or one quarter
turn first), so a failure shrinks to the nearest non-trivial element that breaks.

Example:

    @given(x=equivax.strategies.images((2, 28, 28, 3)), g=equivax.strategies.elements(group))
    def test_layer_is_p4_equivariant(x, g):
        equivax.assert_equivariant(layer, x, group, out_action=regular, elements=[g])
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from equivax.groups import Group

__all__ = ["FAMILIES", "Case", "cases", "elements", "image", "images", "shapes"]

#: Image families, simplest first (Hypothesis shrinks toward the front of this list).
FAMILIES = ("constant", "checkerboard", "spikes", "smooth", "noise", "digits")

#: A profile for CI: compilation is never mistaken for a slow example, and runs stay bounded.
settings.register_profile(
    "equivax-ci",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not (
        isinstance(shape, (tuple, list)) and len(shape) in (4, 5) and all(isinstance(s, int) and s > 0 for s in shape)
    ):
        raise InvalidArgument(
            f"shape must be a tuple of positive ints, (N, H, W, C) for images or (N, H, W, K, C) for group "
            f"feature maps, got {shape!r}"
        )
    return tuple(shape)


def _check_families(families: Sequence[str] | None) -> tuple[str, ...]:
    if families is None:
        return tuple(f for f in FAMILIES if f != "digits" or _digits_available())
    families = tuple(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise InvalidArgument(f"families must be a non-empty subset of {FAMILIES}, got {families!r}")
    if "digits" in families and not _digits_available():
        raise InvalidArgument("the 'digits' family needs scikit-learn (pip install 'equivax[data]')")
    return tuple(f for f in FAMILIES if f in families)  # keep the simplest-first order


def _digits_available() -> bool:
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _digit_pictures() -> np.ndarray:
    """The 1,797 UCI handwritten digits (8x8, values in [0, 1]), loaded once per process."""
    from sklearn.datasets import load_digits

    pictures = load_digits().images / 16.0
    pictures.setflags(write=False)
    return pictures


def _render(family: str, shape: tuple[int, int, int, int], seed: int, scale: float, dtype: Any) -> np.ndarray:
    n, h, w, c = shape
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    if family == "constant":
        x = np.ones(shape) * (1 + seed % 7)
    elif family == "checkerboard":  # the Nyquist pattern, and its half-frequency cousin
        period = 1 + seed % 2
        x = np.broadcast_to(np.where((rows // period + cols // period) % 2, 1.0, -1.0)[None, ..., None], shape)
    elif family == "spikes":
        x = np.zeros(shape)
        count = 1 + seed % 3
        for b in range(n):
            x[b, rng.integers(0, h, count), rng.integers(0, w, count), rng.integers(0, c, count)] = 1.0
    elif family == "smooth":  # a few periodic low frequencies
        x = np.zeros(shape)
        for _ in range(3):
            fy, fx = rng.integers(0, 3, 2)
            phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, c))
            x += np.cos(2 * np.pi * (fy * rows / h + fx * cols / w)[None, ..., None] + phase)
    elif family == "noise":
        x = rng.standard_normal(shape)
    else:  # digits: real handwritten digits (UCI, from scikit-learn), resized to h x w
        pictures = _digit_pictures()
        chosen = pictures[rng.integers(0, len(pictures), n)]
        iy = np.minimum((np.arange(h) * 8) // h, 7)
        ix = np.minimum((np.arange(w) * 8) // w, 7)
        x = np.repeat(chosen[:, iy][:, :, ix][..., None], c, axis=3)
    return (np.asarray(x) * scale).astype(dtype)


def image(family: str, seed: int, scale: float, shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """The image that ``images()`` draws as ``(family, seed, scale)``: the same arguments give the
    same array, so a failing example printed by Hypothesis can be pasted to rebuild its input.

    Args:
      family: one of ``FAMILIES``.
      seed: a non-negative integer.
      scale: the overall magnitude, a positive number.
      shape: ``(N, H, W, C)``, or ``(N, H, W, K, C)`` for group feature maps.
      dtype: a floating NumPy dtype or its name.

    Examples:
      >>> from equivax.strategies import image
      >>> x = image("checkerboard", seed=0, scale=1.0, shape=(1, 4, 4, 1))
      >>> x[0, :2, :2, 0].tolist()
      [[-1.0, 1.0], [1.0, -1.0]]
    """
    shape = _check_shape(shape)
    if family not in FAMILIES:
        raise InvalidArgument(f"family must be one of {FAMILIES}, got {family!r}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InvalidArgument(f"dtype must be floating, got {np.dtype(dtype)}")
    flat = (*shape[:3], int(np.prod(shape[3:])))  # group feature maps: K·C channels, then split
    return _render(family, flat, int(seed), float(scale), np.dtype(dtype)).reshape(shape)


def images(
    shape: tuple[int, int, int, int],
    *,
    dtype: Any = np.float32,
    families: Sequence[str] | None = None,
    scales: Sequence[float] = (1.0, 1e-3, 1e3),
) -> st.SearchStrategy[np.ndarray]:
    """NHWC images of one ``shape``, drawn as (family, seed, scale) and rendered by ``image``.

    Args:
      shape: ``(N, H, W, C)``, or ``(N, H, W, K, C)`` for group feature maps (drawn as K·C
        channels); one shape per strategy, so a check compiles once.
      dtype: a floating NumPy dtype.
      families: a subset of ``FAMILIES`` (default all available); shrinking moves toward the
        front of ``FAMILIES``.
      scales: overall magnitudes to try, shrinking toward the first.
    """
    shape = _check_shape(shape)
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InvalidArgument(f"dtype must be floating, got {np.dtype(dtype)}")
    families = _check_families(families)
    if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
        raise InvalidArgument(f"scales must be positive finite numbers, got {scales!r}")
    # builds(image, ...) so Hypothesis prints a failing input as the call that rebuilds it
    return st.builds(
        image,
        family=st.sampled_from(families),
        seed=st.integers(0, 2**16),
        scale=st.sampled_from(tuple(float(v) for v in scales)),
        shape=st.just(shape),
        dtype=st.just(np.dtype(dtype).name),
    )


def _length(g: np.ndarray, group: Group) -> tuple[int, ...]:
    """Word length of a planar element (shift steps + quarter turns + mirror), then tie-breaks."""
    dy, dx, k, m = (int(v) for v in g)
    h, w = group.shape or (1, 1)
    sy, sx = min(dy % h, -dy % h), min(dx % w, -dx % w)
    turns = min(k % 4, -k % 4)
    return (sy + sx + turns + m, turns, m, sy, sx)


def _simplest_first(values: set[int], modulus: int) -> list[int]:
    """Shift values ordered 0, 1, -1, 2, -2, ... (as residues), so each coordinate shrinks to 0."""
    return sorted(values, key=lambda v: (min(v % modulus, -v % modulus), v % modulus > modulus // 2))


def _planar_elements(group: Group, table: np.ndarray, include_identity: bool) -> st.SearchStrategy[np.ndarray] | None:
    """Draw each part of a planar element on its own, so every part shrinks to its simplest value;
    ``None`` when the group is not the full product of its parts (then draw by index)."""
    h, w = group.shape or (1, 1)
    parts = [set(table[:, i].tolist()) for i in range(4)]
    if len(table) != np.prod([len(p) for p in parts]):
        return None
    turn_order = [k for k in (0, 1, 3, 2) if k in parts[2]]
    draws = st.builds(
        np.asarray,
        st.tuples(
            st.sampled_from(_simplest_first(parts[0], h)),
            st.sampled_from(_simplest_first(parts[1], w)),
            st.sampled_from(turn_order),
            st.sampled_from(sorted(parts[3])),
        ),
        dtype=st.just(table.dtype.name),
    )  # printed as asarray((0, 1, 0, 0), dtype='int32')
    return draws if include_identity else draws.filter(lambda g: bool(np.any(g != 0)))


def elements(group: Group, *, include_identity: bool = False) -> st.SearchStrategy[np.ndarray]:
    """Elements of ``group``, shrinking toward the simplest non-identity one.

    Planar groups draw the shift, the turn and the mirror separately, each shrinking toward zero
    (shifts through 1, -1, 2, ...; turns through 1, 3, 2), so a failure is reported on a 1-pixel
    shift or one quarter turn when those show it. User groups, and planar groups that are not a full
    product (a list of shifts), draw by index in order of increasing length.
    """
    if not isinstance(group, Group):
        raise InvalidArgument(f"group must be an equivax Group, got {type(group).__name__}")
    table = np.asarray(group.elements)
    identity = group.index(group.identity)
    order = [i for i in range(len(table)) if include_identity or i != identity]
    if not order:
        raise InvalidArgument(f"{group.name} has only the identity: there is nothing to draw")
    if group.point_group is not None:
        structured = _planar_elements(group, table, include_identity)
        if structured is not None:
            return structured
        order.sort(key=lambda i: (_length(table[i], group), i))
    ordered = [tuple(table[i].tolist()) for i in order]
    return st.builds(np.asarray, st.sampled_from(ordered), dtype=st.just(table.dtype.name))


def shapes(
    *,
    batch: Sequence[int] = (1, 2),
    sizes: Sequence[int] = (8, 16),
    channels: Sequence[int] = (1, 3),
) -> st.SearchStrategy[tuple[int, int, int, int]]:
    """Square NHWC shapes from a small bucket, so a test compiles a check once per shape."""
    for name, values in (("batch", batch), ("sizes", sizes), ("channels", channels)):
        if not values or any(not isinstance(v, int) or v < 1 for v in values):
            raise InvalidArgument(f"{name} must be a non-empty list of positive ints, got {values!r}")
    return st.tuples(
        st.sampled_from(tuple(batch)), st.sampled_from(tuple(sizes)), st.sampled_from(tuple(channels))
    ).map(lambda t: (t[0], t[1], t[1], t[2]))


@dataclasses.dataclass(frozen=True)
class Case:
    """One (input, element) pair for a property test."""

    x: np.ndarray
    g: np.ndarray


def cases(group: Group, shape: tuple[int, int, int, int], **image_options: Any) -> st.SearchStrategy[Case]:
    """(input, element) pairs: ``images(shape, **image_options)`` with ``elements(group)``."""
    return st.builds(Case, images(shape, **image_options), elements(group))
