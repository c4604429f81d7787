"""Field actions: a spatial transform of the pixels combined with a representation ρ(g) on the channels.

A *field* is an image whose pixels carry more than scalars: 2-D vectors (a flow, a gradient),
pseudovectors, tensors, or the orientation channels of a regular field. A planar element
``g = (dy, dx, k, m)`` moves the pixels as ``equivax.actions.image()`` does (mirror the width axis
if ``m``, turn ``k`` quarter turns counter-clockwise with ``jnp.rot90(x, k, axes=(1, 2))``, roll by
``(dy, dx)``) and multiplies the channel vector of every pixel by ``ρ(g)``:

    (g·x)[n, p, :] = ρ(g) x[n, g⁻¹p, :]

Representations (``Representation``) are small frozen objects ``rep(g) -> (dim, dim)``,
traceable in ``g``, that know which groups they fit (``rep.validate(group)``). The same object
serves planar groups (elements ``(dy, dx, k, m)``), groups of ``d × d`` matrices (point clouds,
``equivax.matrix_groups``) and, for a user table or function, any group.

Vector convention. Components are stored in the order of the array axes, ``(row, col)``: a
vector ``(1, 0)`` points down the rows, ``(0, 1)`` to the right. In that basis the quarter turn
of ``jnp.rot90`` (counter-clockwise as displayed, row 0 on top) maps a displacement
``(dy, dx)`` to ``(-dx, dy)``, and the mirror of the width axis maps it to ``(dy, -dx)``; so for
``g = r^k m^m``

    ρ_vector(g) = A^k M^m,   A = [[0, -1], [1, 0]],   M = [[1, 0], [0, -1]].

The gradient ``(∂x/∂row, ∂x/∂col)`` of a scalar image is such a vector field: the gradient of a
turned image is the turned gradient field (``tests/test_fields.py`` checks it). Convert fields
stored as ``(x right, y up)`` with ``(row, col) = (-y, x)``.

Examples:
  >>> import jax.numpy as jnp, equivax
  >>> from equivax import fields
  >>> act = fields.field(fields.vector())           # one 2-D vector per pixel
  >>> v = jnp.zeros((1, 3, 3, 2)).at[0, 1, 1].set(jnp.array([0.0, 1.0]))  # centre pixel points right
  >>> turned = act(jnp.array([0, 0, 1, 0]), v)      # a quarter turn counter-clockwise
  >>> turned[0, 1, 1].tolist()                      # now it points up (row -1)
  [-1.0, 0.0]
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from equivax import actions
from equivax._representations import Representation as Representation
from equivax._representations import direct_sum as direct_sum
from equivax._representations import function as function
from equivax._representations import group_kind, is_planar
from equivax._representations import homomorphism_error as homomorphism_error
from equivax._representations import irreps as irreps
from equivax._representations import pseudovector as pseudovector
from equivax._representations import regular as regular
from equivax._representations import sign as sign
from equivax._representations import table as table
from equivax._representations import tensor as tensor
from equivax._representations import trivial as trivial
from equivax._representations import vector as vector
from equivax._representations import wigner_d as wigner_d
from equivax.groups import Group

__all__ = [
    "ChannelAction",
    "FieldAction",
    "Representation",
    "channels",
    "direct_sum",
    "field",
    "function",
    "homomorphism_error",
    "irreps",
    "pseudovector",
    "regular",
    "sign",
    "table",
    "tensor",
    "trivial",
    "vector",
    "wigner_d",
]

Element = Any

# ------------------------------------------------------------------------------------------------
# Actions
# ------------------------------------------------------------------------------------------------


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(getattr(x, "shape", np.shape(x)))


def _apply(rep: Representation, g: Element, x: jax.Array) -> jax.Array:
    matrix = rep(g)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.result_type(float)
    return jnp.einsum("...j,ij->...i", x, matrix.astype(dtype))


def _check_channels(rep: Representation, shape: tuple[int, ...], role: str, what: str) -> None:
    if not shape or shape[-1] != rep.dim:
        subject = {"out_action": "f's output", "in_action": "x"}.get(role.partition("[")[0], "the array")
        raise ValueError(
            f"{role}: the {what} representation {rep.name} has {rep.dim} components, but the last axis of "
            f"{subject} has {shape[-1] if shape else 'no'} channels (shape {shape}): make them equal"
        )


def _each_leaf(x: Any) -> list[tuple[str, Any]]:
    """``(path, leaf)`` for every array of a pytree (``""`` for a single array)."""
    flat = jax.tree_util.tree_flatten_with_path(x)[0]
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


@dataclasses.dataclass(frozen=True)
class ChannelAction:
    """``ρ(g)`` on the last axis of an array (of each array of a pytree); nothing else moves."""

    rep: Representation
    leafwise: ClassVar[bool] = True

    def __call__(self, g: Element, x: Any) -> Any:
        return jax.tree.map(lambda leaf: self._act(g, jnp.asarray(leaf)), x)

    def _act(self, g: Element, x: jax.Array) -> jax.Array:
        _check_channels(self.rep, x.shape, "channels", "channel")
        return _apply(self.rep, g, x)

    def validate(self, group: Group, x: Any, role: str) -> None:
        """Raise a one-line ``ValueError`` when this action cannot act on ``x`` (or a leaf of it) under ``group``."""
        try:
            self.rep.validate(group)
        except ValueError as err:
            raise ValueError(f"{role}: {err}") from None
        for path, leaf in _each_leaf(x):
            _check_channels(self.rep, _shape(leaf), role + path, "channel")


@dataclasses.dataclass(frozen=True)
class FieldAction:
    """Pixels moved by a planar element (``actions.image``), channels multiplied by ``ρ(g)``."""

    rep: Representation
    stride: int = 1
    leafwise: ClassVar[bool] = True

    def __call__(self, g: Element, x: Any) -> Any:
        return jax.tree.map(lambda leaf: self._act(g, jnp.asarray(leaf)), x)

    def _act(self, g: Element, x: jax.Array) -> jax.Array:
        if x.ndim < 4:
            raise ValueError(f"a field action expects (N, H, W, C) fields, got shape {x.shape}")
        _check_channels(self.rep, x.shape, "field", "field")
        moved = actions.image(self.stride)(g, x)
        return _apply(self.rep, g, moved)

    def defined(self, g: Element) -> jax.Array:
        return actions.image(self.stride).defined(g)

    def validate(self, group: Group, x: Any, role: str) -> None:
        """Raise a one-line ``ValueError`` when this action cannot act on ``x`` (or a leaf of it) under ``group``."""
        if not is_planar(group):
            raise ValueError(
                f"{role}: a field action moves pixels by planar elements (dy, dx, k, m), but {group_kind(group)}; "
                "use fields.channels(rep) to act on channels only"
            )
        try:
            self.rep.validate(group)
        except ValueError as err:
            raise ValueError(f"{role}: {err}") from None
        for path, leaf in _each_leaf(x):
            self._validate_leaf(group, _shape(leaf), role + path)

    def _validate_leaf(self, group: Group, shape: tuple[int, ...], role: str) -> None:
        if len(shape) < 4:
            raise ValueError(f"{role}: a field action expects (N, H, W, C) fields, got shape {shape}; add axes")
        height, width = shape[1] * self.stride, shape[2] * self.stride
        if group.has_rotations and height != width:
            raise ValueError(f"{role}: {group.name} turns fields by 90°, which needs square ones, got {shape[1:3]}")
        if group.shape is not None and (height, width) != tuple(group.shape):
            raise ValueError(
                f"{role}: {group.name} acts on {group.shape[0]}x{group.shape[1]} images but x is "
                f"{shape[1]}x{shape[2]} (stride {self.stride}); build the group for the field's size"
            )
        _check_channels(self.rep, shape, role, "field")


def field(*reps: Representation, stride: int = 1) -> FieldAction:
    """The action of a planar group on a field whose channels carry ``ρ = rep_1 ⊕ rep_2 ⊕ …``.

    Args:
      reps: one representation per block of channels, in channel order (``direct_sum`` of them).
      stride: as for ``actions.image``: the field is subsampled by ``stride``.

    Returns:
      An action on ``(N, H, W, C)`` arrays, ``C = Σ dim``.

    Examples:
      >>> import jax.numpy as jnp, equivax
      >>> act = field(trivial(), vector())     # a scalar and a vector per pixel: C = 3
      >>> y = act(jnp.array([0, 0, 0, 1]), jnp.ones((1, 4, 4, 3)))   # the mirror flips the column component
      >>> y[0, 0, 0].tolist()
      [1.0, 1.0, -1.0]
    """
    return FieldAction(direct_sum(*reps), actions.image(stride).stride)


def channels(*reps: Representation) -> ChannelAction:
    """The action ``x -> x ρ(g)ᵀ`` on the last axis only, ``ρ = rep_1 ⊕ rep_2 ⊕ …``, for any group.

    Examples:
      >>> import numpy as np
      >>> turn = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
      >>> channels(vector(3))(turn, np.array([[1.0, 0, 0]])).tolist()   # x goes to y
      [[0.0, 1.0, 0.0]]
    """
    return ChannelAction(direct_sum(*reps))
