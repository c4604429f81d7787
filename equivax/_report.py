"""Equivariance reports: a model checked end to end and layer by layer.

``report(model, x, group)`` runs the model's layers one after another, checks every intermediate
output under the action it should carry, and names, for each group element, the **first layer
where equivariance breaks**. All layers are checked in one compiled program
(``equivax.check_outputs``), so each gets its own errors, noise floor, verdicts and error maps.

Which action an intermediate output should carry:

* A layer with a declared ``Contract`` (every ``equivax.nn`` layer)
  says so itself: image, group feature maps (regular) or invariant, and its stride.
* Any other layer is inferred from shapes: an output shaped like its input keeps the action
  (activations, normalisation); ``(N, H, W, C)`` outputs are images, ``(N, H, W, K, C)`` outputs
  with K = 4 or 8 are p4 or p4m feature maps, and the ratio of spatial sizes adds to the
  accumulated stride; anything else (a vector after flattening or pooling) is expected to be
  invariant. Once an output is invariant, everything after it stays invariant.
* ``out_action=`` overrides the action of the final output.

Renderers for a report live in ``equivax.render``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from equivax import actions as actions_lib
from equivax._check import check_outputs
from equivax.groups import POINT_C4, POINT_D4, Group
from equivax.result import CheckResult

__all__ = ["SCHEMA_VERSION", "LayerReport", "Report", "report"]

#: Version of the dictionary / JSON layout written by ``Report.to_dict``.
SCHEMA_VERSION = 1

#: Verdicts that count as a break when looking for the first broken layer.
BREAKS = ("broken", "nonfinite")

_LAYOUTS = {4: ("p4", POINT_C4), 8: ("p4m", POINT_D4)}


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One layer's output, checked under the action it should carry.

    Attributes:
      name: position and type of the layer, e.g. ``"4 MaxPool"``.
      output: what the output is taken to be: ``"image"``, ``"regular(p4)"``, ``"invariant"`` or
        ``"given"`` (the user's ``out_action``).
      stride: accumulated stride from the input to this output.
      shape: shape of this output for the checked batch.
      source: where the action came from: ``"contract"`` (declared by the layer), ``"inferred"``
        (from shapes) or ``"given"``.
      result: the check of the output of this layer (the model up to here) under ``group``.
    """

    name: str
    output: str
    stride: int
    shape: tuple[int, ...]
    source: str
    result: CheckResult


@dataclasses.dataclass(frozen=True)
class Report:
    """A model checked layer by layer under one group.

    Attributes:
      model: the model's name.
      group: the group's name.
      input_shape: shape of the input batch.
      labels: the checked elements' labels, in the order of every layer's result.
      layers: one ``LayerReport`` per layer output; the last is the model's output.
      seconds: wall time of the check.
    """

    model: str
    group: str
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    layers: tuple[LayerReport, ...]
    seconds: float = float("nan")

    @property
    def output(self) -> CheckResult:
        """The end-to-end check (the model's output)."""
        return self.layers[-1].result

    @property
    def ok(self) -> bool:
        """True when the model's output passes for every element."""
        return self.output.ok

    def first_broken_layer(self, label: str) -> str | None:
        """Name of the first layer whose output breaks for the element ``label``, or ``None``."""
        index = self.first_broken_index(label)
        return None if index is None else self.layers[index].name

    def first_broken_index(self, label: str) -> int | None:
        """Position in :attr:`layers` of the first layer whose output breaks for ``label``, or ``None``."""
        i = self._element(label)
        for position, layer in enumerate(self.layers):
            if layer.result.verdicts[i] in BREAKS:
                return position
        return None

    @property
    def first_breaks(self) -> dict[str, str | None]:
        """``{element label: first broken layer or None}`` for every checked element."""
        return {label: self.first_broken_layer(label) for label in self.labels}

    def _element(self, label: str) -> int:
        if label not in self.labels:
            raise KeyError(f"{label!r} was not checked; the report has {', '.join(self.labels)}")
        return self.labels.index(label)

    def rows(self) -> list[dict[str, Any]]:
        """One flat record per (layer, element): errors, floor and verdict."""
        return [
            {
                "layer": layer.name,
                "element": label,
                "rel_error": _num(layer.result.rel_error[i]),
                "abs_error": _num(layer.result.abs_error[i]),
                "noise_floor": _num(layer.result.noise_floor[i]),
                "verdict": layer.result.verdicts[i],
            }
            for layer in self.layers
            for i, label in enumerate(self.labels)
        ]

    def summary(self) -> str:
        """A few lines: the verdict of the output and where each broken element first breaks."""
        out = self.output
        lines = [f"{self.model} under {self.group}: {out.summary()}"]
        for label, layer in self.first_breaks.items():
            if layer is not None:
                end = out.verdicts[self.labels.index(label)]
                lines.append(f"  {label}: first breaks at {layer} (output: {end})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Report({self.summary()})"

    # -- plain data ---------------------------------------------------------------------------
    def to_dict(self, *, maps: bool = True) -> dict[str, Any]:
        """Plain JSON-serialisable data, schema ``SCHEMA_VERSION`` (see ``docs/reports.md``).

        Args:
          maps: include the per-element error maps of spatial outputs.
        """
        return {
            "version": SCHEMA_VERSION,
            "model": self.model,
            "group": self.group,
            "input_shape": list(self.input_shape),
            "labels": list(self.labels),
            "seconds": _num(self.seconds),
            "ok": self.ok,
            "first_breaks": self.first_breaks,
            "layers": [
                {
                    "name": layer.name,
                    "output": layer.output,
                    "stride": layer.stride,
                    "shape": list(layer.shape),
                    "source": layer.source,
                    "check": layer.result.to_dict(),
                    "error_maps": (
                        layer.result.error_maps.tolist() if maps and layer.result.error_maps is not None else None
                    ),
                }
                for layer in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from ``to_dict`` output (for instance a JSON file read back)."""
        version = data.get("version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"this is a version-{version} report; equivax reads version {SCHEMA_VERSION}: "
                "regenerate it with this version of equivax"
            )
        layers = tuple(
            LayerReport(
                name=layer["name"],
                output=layer["output"],
                stride=int(layer["stride"]),
                shape=tuple(layer["shape"]),
                source=layer["source"],
                result=CheckResult.from_dict(layer["check"], error_maps=layer.get("error_maps")),
            )
            for layer in data["layers"]
        )
        seconds = data.get("seconds")
        return cls(
            model=data["model"],
            group=data["group"],
            input_shape=tuple(data["input_shape"]),
            labels=tuple(data["labels"]),
            layers=layers,
            seconds=float("nan") if seconds is None else float(seconds),
        )


def _num(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


# ------------------------------------------------------------------------------------------------
# Layers and the actions their outputs carry
# ------------------------------------------------------------------------------------------------


def _layer_name(index: int, layer: Any) -> str:
    if isinstance(layer, _nnx().Module):
        return f"{index} {type(layer).__name__}"
    name = getattr(layer, "__name__", "<lambda>")
    return f"{index} {'function' if name == '<lambda>' else name}"


def _split_layers(model: Any, layers: Sequence[Any] | None) -> list[tuple[str, Callable[..., Any]]]:
    """``(name, layer)`` pairs the model runs one after another."""
    if layers is not None:
        named = []
        for i, layer in enumerate(layers):
            if isinstance(layer, tuple) and len(layer) == 2 and isinstance(layer[0], str):
                named.append(layer)
            elif callable(layer):
                named.append((_layer_name(i, layer), layer))
            else:
                raise TypeError(f"layers[{i}] must be a callable or a (name, callable) pair, got {layer!r}")
        if not named:
            raise ValueError("layers is empty; pass the callables the model applies in order, or None")
        return named
    nnx = _nnx()
    if isinstance(model, nnx.Sequential):
        parts = list(model.layers)
    elif isinstance(getattr(model, "layers", None), nnx.Sequential):
        parts = list(model.layers.layers)
        head = getattr(model, "head", None)
        if head is not None:
            parts.append(head)
    else:  # a custom layer or a model of unknown structure: one step, end to end
        return [(_layer_name(0, model)[2:], model)]
    return [(_layer_name(i, layer), layer) for i, layer in enumerate(parts)]


def _nnx() -> Any:
    """flax.nnx, imported on first use (``import equivax`` stays free of Flax)."""
    return importlib.import_module("flax.nnx")


@functools.cache
def _taps_class() -> type:
    nnx = _nnx()

    class Taps(nnx.Module):
        """Runs the layers in order and returns every intermediate output."""

        def __init__(self, layers: Sequence[Callable[..., Any]]):
            self.steps = nnx.Sequential(*layers)

        def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
            outputs = []
            for layer in self.steps.layers:
                x = layer(x)
                outputs.append(x)
            return tuple(outputs)

    return Taps


def _taps(layers: Sequence[Callable[..., Any]]) -> Any:
    return _taps_class()(layers)


@dataclasses.dataclass(frozen=True)
class _Carried:
    """The action an intermediate output carries: kind, accumulated stride, orientation layout."""

    kind: str  # "image" | "regular" | "invariant"
    stride: int = 1
    layout: str | None = None

    @property
    def label(self) -> str:
        return f"regular({self.layout})" if self.kind == "regular" else self.kind

    def action(self) -> Any:
        if self.kind == "invariant":
            return actions_lib.trivial()
        if self.kind == "regular":
            points = POINT_C4 if self.layout == "p4" else POINT_D4
            return actions_lib.RegularAction(points, self.stride, self.layout)
        return actions_lib.image(self.stride)


def _carried_by_input(in_action: Any) -> _Carried:
    if isinstance(in_action, actions_lib.RegularAction):
        layout = {POINT_C4: "p4", POINT_D4: "p4m"}.get(tuple(in_action.points))
        if layout is None:
            raise ValueError(
                f"the input's regular action has orientations {in_action.points}, neither p4's nor p4m's: pass "
                "out_action, and the model is checked end to end"
            )
        return _Carried("regular", in_action.stride, layout)
    return _Carried("image", getattr(in_action, "stride", 1))


def _compose(layers: Sequence[Callable[..., Any]]) -> Callable[..., Any]:
    if len(layers) == 1:
        return layers[0]
    return _nnx().Sequential(*layers)


def _ratio(before: tuple[int, ...], after: tuple[int, ...]) -> int | None:
    """Subsampling factor between two spatial sizes, or None when it is not a whole number."""
    if len(before) < 3 or len(after) < 3:
        return None
    (h0, w0), (h1, w1) = before[1:3], after[1:3]
    if h1 == 0 or w1 == 0 or h0 % h1 or w0 % w1 or h0 // h1 != w0 // w1:
        return None
    return h0 // h1


def _next(carried: _Carried, layer: Any, before: tuple[int, ...], after: tuple[int, ...]) -> tuple[_Carried, str]:
    """The action of a layer's output from the action of its input: declared, or inferred."""
    declared = getattr(layer, "contract", None)
    if carried.kind == "invariant":
        return carried, "inferred"
    if declared is not None and hasattr(declared, "output") and hasattr(declared, "stride"):
        layout = declared.layout if declared.output == "regular" else None
        return _Carried(declared.output, carried.stride * declared.stride, layout), "contract"
    if after == before:
        return carried, "inferred"
    if len(after) in (4, 5) and tuple(after[1:3]) == (1, 1):  # one pixel: every shift acts trivially
        if len(after) == 4:
            return _Carried("image"), "inferred"
        if after[3] in _LAYOUTS:
            return _Carried("regular", 1, _LAYOUTS[after[3]][0]), "inferred"
    ratio = _ratio(before, after)
    if len(after) == 4 and ratio is not None:
        return _Carried("image", carried.stride * ratio), "inferred"
    if len(after) == 5 and ratio is not None and after[3] in _LAYOUTS:
        return _Carried("regular", carried.stride * ratio, _LAYOUTS[after[3]][0]), "inferred"
    return _Carried("invariant", carried.stride), "inferred"


def _plan(
    named: list[tuple[str, Callable[..., Any]]], x: jax.Array, in_action: Any, out_action: Any
) -> tuple[list[Any], list[str], list[int], list[str], list[tuple[int, ...]]]:
    """Actions, kinds, strides, sources and shapes of every layer output."""
    taps = _taps([layer for _, layer in named])
    try:
        shapes = [tuple(s.shape) for s in jax.eval_shape(lambda x: taps(x), x)]
    except Exception as err:  # any failure of the user's model: say which input
        raise ValueError(f"the model fails on an input of shape {x.shape}: {type(err).__name__}: {err}") from err
    carried = _carried_by_input(in_action)
    found: tuple[list[Any], list[str], list[int], list[str], list[tuple[int, ...]]] = ([], [], [], [], [])
    before = tuple(x.shape)
    for (_, layer), after in zip(named, shapes, strict=True):
        carried, source = _next(carried, layer, before, after)
        for column, value in zip(found, (carried.action(), carried.label, carried.stride, source, after), strict=True):
            column.append(value)
        before = after
    if out_action is not None:
        found[0][-1], found[1][-1], found[3][-1] = out_action, "given", "given"
    return found


def report(
    model: Any,
    x: Any,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    layers: Sequence[Any] | None = None,
    elements: Sequence[Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    name: str | None = None,
    devices: Sequence[Any] | None = None,
) -> Report:
    """Check a model end to end and layer by layer; name where equivariance first breaks.

    Args:
      model: an NNX module (an ``nnx.Sequential``, or a model keeping its layers in an
        ``nnx.Sequential`` attribute ``layers`` with an optional ``head``, like ``equivax.nn``'s
        models), or any callable; one of unknown structure is checked end to end as one layer.
      x: a batch of inputs (NHWC images for planar groups).
      group: the group acting on the input.
      in_action: the action on the input; default the group's image action.
      out_action: the action on the model's output; default: declared or inferred (see the
        module docstring). Pass it for a custom layer whose output is neither.
      layers: the callables the model applies in order (or ``(name, callable)`` pairs), to
        attribute errors inside a model whose structure is not a ``Sequential``.
      elements: check only these elements (default every non-identity element; see
        ``equivax.groups.basic_elements`` for a small representative set of a large group).
      rtol, atol: explicit tolerances, as in ``equivax.check``.
      name: the model's name in the report (default its type).
      devices: the devices to split the elements over, as in ``equivax.check`` (default all).

    Returns:
      A ``Report``.

    Examples:
      >>> import jax, equivax
      >>> from flax import nnx
      >>> model = equivax.nn.CNN(widths=(4,), padding="circular", rngs=nnx.Rngs(0))
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
      >>> group = equivax.groups.translations(8, 8, shifts=[(0, 1), (0, 2)])
      >>> equivax.report(model, x, group).first_breaks
      {'shift(0,1)': '2 MaxPool', 'shift(0,2)': None}
    """
    if not isinstance(group, Group):
        raise TypeError(f"group must be an equivax Group (see equivax.groups), got {type(group).__name__}")
    x = jax.numpy.asarray(x)
    start = time.perf_counter()
    named = _split_layers(model, layers)
    in_action = group.image_action if in_action is None else in_action
    if in_action is None:
        raise ValueError(f"{group.name} has no natural image action; pass in_action=your_action(g, x)")
    if not isinstance(in_action, (actions_lib.ImageAction, actions_lib.RegularAction)):
        if out_action is None:
            raise ValueError(
                "with your own in_action the actions inside the model cannot be inferred: pass out_action, "
                "and the model is checked end to end"
            )
        named = [(name or _layer_name(0, model)[2:], _compose([layer for _, layer in named]))]
    out_actions, kinds, strides, sources, shapes = _plan(named, x, in_action, out_action)
    taps = _taps([layer for _, layer in named])
    results = check_outputs(
        taps, x, group, in_action, tuple(out_actions), elements=elements, rtol=rtol, atol=atol, devices=devices
    )
    layer_reports = tuple(
        LayerReport(layer_name, kind, stride, shape, source, result)
        for (layer_name, _), kind, stride, source, shape, result in zip(
            named, kinds, strides, sources, shapes, results.values(), strict=True
        )
    )
    labels = layer_reports[0].result.labels
    model_name = name or (type(model).__name__ if not inspect.isfunction(model) else model.__name__)
    return Report(model_name, group.name, tuple(x.shape), labels, layer_reports, time.perf_counter() - start)
