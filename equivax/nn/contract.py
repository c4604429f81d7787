"""What a layer promises: the symmetry it is built for and the actions on its input and output.

Every equivax layer carries a ``Contract``, so a check or a report can test any layer against
its own promise without being told the actions: ``check(layer, x, group, *contract(layer).actions())``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from equivax import actions, groups
from equivax._planar import POINT_GROUPS

__all__ = ["POINT_GROUPS", "Contract", "contract"]

_KINDS = ("image", "regular", "invariant")


@dataclasses.dataclass(frozen=True)
class Contract:
    """The promise of a layer.

    Attributes:
      symmetry: the group the layer is built for: ``"translations"``, ``"p4"`` or ``"p4m"``.
      input: ``"image"`` (NHWC) or ``"regular"`` (group feature maps ``(N, H, W, |K|, C)``).
      output: ``"image"``, ``"regular"`` or ``"invariant"`` (unchanged by the group).
      stride: total subsampling from input to output; only shifts divisible by it survive.
      padding: ``"circular"`` (exact on the torus), ``"zeros"`` (shifts hold only away from the
        borders; rotations and mirrors about the centre still hold exactly) or ``"none"``.
    """

    symmetry: str
    input: str
    output: str
    stride: int = 1
    padding: str = "none"
    layout: str | None = None

    def __post_init__(self):
        if self.symmetry not in POINT_GROUPS:
            raise ValueError(f"symmetry must be one of {sorted(POINT_GROUPS)}, got {self.symmetry!r}")
        if self.input not in _KINDS[:2] or self.output not in _KINDS:
            raise ValueError(f"input must be image/regular and output image/regular/invariant, got {self}")
        if "regular" in (self.input, self.output) and self.layout not in ("p4", "p4m"):
            raise ValueError(f"a layer on group feature maps must name their layout, p4 or p4m, got {self.layout!r}")

    @property
    def points(self) -> tuple[tuple[int, int], ...]:
        """The point group indexing the orientation axis of regular feature maps."""
        return POINT_GROUPS[self.layout or "translations"]

    def _action(self, kind: str, stride: int) -> Any:
        if kind == "invariant":
            return actions.trivial()
        if kind == "regular":
            return actions.RegularAction(self.points, stride, self.layout)
        return actions.image(stride)

    def group(self, height: int, width: int) -> Any:
        """The largest built-in group the layer promises exactly on ``height × width`` inputs.

        Shifts are promised modulo the stride, and only with circular (or no) padding; quarter
        turns and mirrors need a square input. ``None`` when nothing beyond the identity is promised.
        """
        shifts = self.padding != "zeros"
        square = height == width and self.symmetry != "translations"
        stride = self.stride if self.stride > 1 else None
        if shifts and square:
            return (groups.p4 if self.symmetry == "p4" else groups.p4m)(height, stride=stride)
        if square:
            return groups.rotations() if self.symmetry == "p4" else groups.dihedral()
        if shifts:
            return groups.translations(height, width, stride=stride)
        return None

    def actions(self) -> tuple[Any, Any]:
        """``(in_action, out_action)`` for ``equivax.check``."""
        return self._action(self.input, 1), self._action(self.output, self.stride)

    @property
    def exact_for(self) -> str:
        """In words: which transformations the layer satisfies exactly."""
        point = {"translations": "", "p4": "quarter turns", "p4m": "quarter turns and mirrors"}[self.symmetry]
        shifts = {"circular": "circular shifts", "zeros": "shifts away from the borders only", "none": "shifts"}
        shift = shifts[self.padding]
        if self.stride > 1:
            shift += f" by multiples of {self.stride}"
        return f"{shift}{', ' + point if point else ''}"

    def then(self, other: Contract) -> Contract:
        """The contract of this layer followed by ``other``."""
        if self.output == "invariant" or other.input != self.output:
            raise ValueError(f"cannot chain a layer with {self.output} output into one with {other.input} input")
        order = list(POINT_GROUPS)
        symmetry = min(self.symmetry, other.symmetry, key=order.index)
        paddings = (self.padding, other.padding)
        padding = "zeros" if "zeros" in paddings else "circular" if "circular" in paddings else "none"
        layout = self.layout if self.input == "regular" else other.layout if other.output == "regular" else None
        return Contract(symmetry, self.input, other.output, self.stride * other.stride, padding, layout)


def contract(layer: Any) -> Contract:
    """The contract a layer declares, or a ``TypeError`` naming what to pass instead."""
    found = getattr(layer, "contract", None)
    if not isinstance(found, Contract):
        raise TypeError(
            f"{type(layer).__name__} declares no equivariance contract; pass in_action and out_action "
            "to equivax.check yourself"
        )
    return found
