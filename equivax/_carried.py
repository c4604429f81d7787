"""The action each checked output carries: declared by its layer, inferred from shapes, or given.

* A layer with a declared ``Contract`` (every ``equivax.nn`` layer) says so itself: image, group
  feature maps (regular) or invariant, and its stride.
* Any other output is inferred from shapes, relative to the output it was computed from: the same
  shape keeps the action (activations, normalisation); ``(N, H, W, C)`` outputs are images,
  ``(N, H, W, K, C)`` outputs with K = 4 or 8 are p4 or p4m feature maps, and the ratio of spatial
  sizes adds to the accumulated stride; anything else is expected to be invariant, and stays so.
* ``layer_actions=`` / ``out_action=`` give an action directly (a custom or field action); what
  follows a custom action must be given too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from equivax import actions as actions_lib
from equivax._layers import Tap
from equivax.groups import POINT_C4, POINT_D4

__all__ = ["Carried", "carried_by", "plan", "spatial"]

_LAYOUTS = {4: ("p4", POINT_C4), 8: ("p4m", POINT_D4)}


# ------------------------------------------------------------------------------------------------
# The actions layer outputs carry
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Carried:
    """The action an intermediate output carries: kind, accumulated stride, orientation layout."""

    kind: str  # "image" | "regular" | "invariant"
    stride: int = 1
    layout: str | None = None
    pixel: bool = False  # one pixel (a global pool with kept axes): every shift acts trivially
    channels_first: bool = False  # an image laid out (N, C, H, W)

    @property
    def label(self) -> str:
        return f"regular({self.layout})" if self.kind == "regular" else self.kind

    def action(self) -> Any:
        if self.kind == "invariant" or (self.kind == "image" and self.pixel):  # a turn of one pixel is one pixel
            return actions_lib.trivial()
        if self.kind == "regular":
            points = POINT_C4 if self.layout == "p4" else POINT_D4
            if self.pixel:
                return OnePixelRegular(points, self.layout)
            return actions_lib.RegularAction(points, self.stride, self.layout)
        return actions_lib.image(self.stride, channels_first=self.channels_first)


@dataclasses.dataclass(frozen=True)
class OnePixelRegular:
    """The regular action on one-pixel group feature maps ``(N, 1, 1, |K|, C)``: every shift acts
    trivially, turns and mirrors permute the orientations."""

    points: tuple[tuple[int, int], ...]
    name: str
    leafwise: ClassVar[bool] = True

    def _regular(self) -> Any:
        return actions_lib.RegularAction(self.points, 1, self.name)

    def __call__(self, g: Any, y: Any) -> Any:
        return self._regular()(g, y)

    def defined(self, g: Any) -> Any:
        return self._regular().defined(jnp.asarray(g).at[:2].set(0))

    def validate(self, group: Any, y: Any, role: str) -> None:
        """One-pixel maps with this orientation axis, under a group whose turns and mirrors it has."""
        shape = tuple(y.shape)
        if len(shape) != 5 or shape[1:4] != (1, 1, len(self.points)):
            raise ValueError(f"{self.name} one-pixel feature maps are (N, 1, 1, {len(self.points)}, C), got {shape}")


def carried_by(action: Any) -> Carried | None:
    """What a built-in action says about an array (``None`` for a custom action)."""
    if isinstance(action, actions_lib.RegularAction):
        layout = {POINT_C4: "p4", POINT_D4: "p4m"}.get(tuple(action.points))
        return None if layout is None else Carried("regular", action.stride, layout)
    if isinstance(action, actions_lib.ImageAction):
        return Carried("image", action.stride, channels_first=action.channels_first)
    if isinstance(action, actions_lib.TrivialAction):
        return Carried("invariant")
    return None


def _ratio(before: tuple[int, int], after: tuple[int, int]) -> int | None:
    """Subsampling factor between two spatial sizes, or None when it is not a whole number."""
    (h0, w0), (h1, w1) = before, after
    if h1 == 0 or w1 == 0 or h0 % h1 or w0 % w1 or h0 // h1 != w0 // w1:
        return None
    return h0 // h1


def _hw(shape: tuple[int, ...], channels_first: bool) -> tuple[int, int] | None:
    """The spatial size of a batch of images laid out NHWC (axes 1, 2) or NCHW (the last two)."""
    if len(shape) < 3:
        return None
    return (shape[-2], shape[-1]) if channels_first else (shape[1], shape[2])


def spatial(carried: Carried, before: tuple[int, ...], after: tuple[int, ...]) -> Carried | None:
    """The action of an array of shape ``after`` computed from one of shape ``before`` carrying
    ``carried``, when its shape says it is spatial (same shape, an image or group feature map at a
    whole-number subsampling, or one pixel); ``None`` otherwise.

    A 4-D ``after`` is read in the layout of ``before`` first, then in the other one: an Equinox
    model vmapped over an NHWC batch transposes each image to ``(C, H, W)``, and its intermediates
    are ``(N, C, H, W)`` images of the same symmetry.
    """
    if carried.kind == "invariant":
        return carried
    if after == before:
        return carried
    size = _hw(before, carried.channels_first)
    if size is None:
        return None
    for channels_first in (carried.channels_first, not carried.channels_first):
        if channels_first and len(after) != 4:
            continue
        found = _read(carried, size, before[0], after, channels_first)
        if found is not None:
            return found
    return None


def _read(
    carried: Carried, size: tuple[int, int], batch: int, after: tuple[int, ...], channels_first: bool
) -> Carried | None:
    hw = _hw(after, channels_first)
    if len(after) not in (4, 5) or hw is None:
        return None
    if hw == (1, 1):  # one pixel: every shift acts trivially
        if len(after) == 4:
            return Carried("image", pixel=True, channels_first=channels_first)
        if after[3] in _LAYOUTS:
            return Carried("regular", 1, _LAYOUTS[after[3]][0], pixel=True)
        return None
    ratio = _ratio(size, hw)
    if ratio is None or after[0] != batch:
        return None
    if len(after) == 4:
        return Carried("image", carried.stride * ratio, channels_first=channels_first)
    if after[3] in _LAYOUTS:
        return Carried("regular", carried.stride * ratio, _LAYOUTS[after[3]][0])
    return None


def _next(carried: Carried, layer: Any, before: tuple[int, ...], after: tuple[int, ...]) -> tuple[Carried, str]:
    """The action of a layer's output from the action of its input: declared, or inferred."""
    declared = getattr(layer, "contract", None)
    if carried.kind == "invariant":
        return carried, "inferred"
    if declared is not None and hasattr(declared, "output") and hasattr(declared, "stride"):
        layout = declared.layout if declared.output == "regular" else None
        return Carried(declared.output, carried.stride * declared.stride, layout), "contract"
    found = spatial(carried, before, after)
    return (Carried("invariant", carried.stride) if found is None else found), "inferred"


@dataclasses.dataclass(frozen=True)
class _Row:
    """One checked output: a layer's output, or one leaf of it."""

    name: str
    output: str
    stride: int
    shape: tuple[int, ...]
    source: str


def _given(layer_actions: Any, names: list[str], index: int, shape: Any) -> Any:
    if layer_actions is None:
        return None
    if isinstance(layer_actions, dict):
        return layer_actions.get(names[index])
    if callable(layer_actions):
        return layer_actions(names[index], shape)
    return layer_actions[index]


def _check_given(layer_actions: Any, names: list[str]) -> None:
    listed = ", ".join(repr(n) for n in names)
    if isinstance(layer_actions, dict):
        unknown = [k for k in layer_actions if k not in names]
        if unknown:
            raise ValueError(
                f"layer_actions names {unknown[0]!r}, which is not a layer of the model; its layers: {listed}"
            )
    elif layer_actions is not None and not callable(layer_actions):
        if isinstance(layer_actions, (str, bytes)) or len(layer_actions) != len(names):
            raise ValueError(
                f"layer_actions must hold one action (or None) per layer, {len(names)} in all ({listed}), "
                f"got {len(layer_actions) if isinstance(layer_actions, Sequence) else layer_actions!r}"
            )


def plan(
    taps: list[Tap], shapes: list[Any], x: jax.Array, in_action: Any, out_action: Any, layer_actions: Any
) -> tuple[list[_Row], Any]:
    """One row per checked output, and the action tree for ``check_outputs``."""
    names = [tap.name for tap in taps]
    _check_given(layer_actions, names)
    start = carried_by(in_action)
    carried: list[dict[Any, tuple[Carried | None, tuple[int, ...]]]] = []  # per tap: leaf path -> (action, shape)
    rows: list[_Row] = []
    tree: list[Any] = []
    missing = []
    for i, (tap, shape) in enumerate(zip(taps, shapes, strict=True)):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(shape)
        given = out_action if (i == len(taps) - 1 and out_action is not None) else None
        given = _given(layer_actions, names, i, shape) if given is None else given
        source = tap.source if tap.source is not None else i - 1
        inputs = {(): (start, tuple(x.shape))} if source < 0 else carried[source]
        if given is not None:
            tree.append(given)
            carried.append({p: (carried_by(given), tuple(s.shape)) for p, s in leaves})
            stride = int(getattr(given, "stride", 1))
            rows += [_Row(_leaf(tap.name, p, len(leaves)), "given", stride, tuple(s.shape), "given") for p, s in leaves]
            continue
        found = []
        for p, s in leaves:
            base, before = _input_of(inputs, p)
            if base is None:
                break
            found.append((_next(base, tap.layer, before, tuple(s.shape)), p, s))
        if len(found) < len(leaves):
            missing.append(tap.name)
            carried.append({p: (None, tuple(s.shape)) for p, s in leaves})
            tree.append(None)
            continue
        carried.append({p: (c, tuple(s.shape)) for (c, _), p, s in found})
        tree.append(jax.tree_util.tree_unflatten(treedef, [c.action() for (c, _), _, _ in found]))
        rows += [
            _Row(_leaf(tap.name, p, len(leaves)), c.label, c.stride, tuple(s.shape), src) for (c, src), p, s in found
        ]
    if missing:
        raise ValueError(
            f"the actions on {', '.join(repr(m) for m in missing)} cannot be inferred: equivax infers layer "
            "actions from image and group-feature-map actions only, and these follow "
            f"{'the in_action ' + type(in_action).__name__ if start is None else 'a layer with a custom action'}; "
            "give them with layer_actions={name: action} (or out_action for the model's output)"
        )
    return rows, actions_lib.tree(tuple(tree))


def _input_of(inputs: dict[Any, tuple[Any, tuple[int, ...]]], path: Any) -> tuple[Any, tuple[int, ...]]:
    """The input leaf an output leaf is compared with: the one at the same path, else the first
    one that is not invariant, else the first."""
    if path in inputs:
        return inputs[path]
    spatial_ones = [found for found in inputs.values() if found[0] is None or found[0].kind != "invariant"]
    return (spatial_ones or list(inputs.values()))[0]


def _leaf(name: str, path: tuple[Any, ...], count: int) -> str:
    return name if count == 1 and not path else f"{name}{jax.tree_util.keystr(path)}"
