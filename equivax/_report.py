"""Equivariance reports: a model checked end to end and layer by layer.

``report(model, x, group)`` runs the model once, records the output of every layer it calls (any
framework: Flax NNX, Flax Linen, Equinox, or callables given with ``layers=``; see
``equivax._layers``), checks every one under the action it should carry, and names, for each group
element, the **first layer where equivariance breaks**. All layers are checked in one compiled program
(``equivax.check_outputs``), so each gets its own errors, noise floor, verdicts and error maps.

Which action each output should carry (declared, inferred from shapes, or given with
``layer_actions=``) is decided in ``equivax._carried``.

Renderers for a report live in ``equivax.render``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from equivax import _layers as layers_lib
from equivax._carried import carried_by, plan
from equivax._check import check_outputs
from equivax.groups import Group
from equivax.result import CheckResult

__all__ = ["SCHEMA_VERSION", "LayerReport", "Report", "report"]

#: Version of the dictionary / JSON layout written by ``Report.to_dict`` (2 added ``by``, ``notes``
#: and each layer's ``where``; version-1 data is still read).
SCHEMA_VERSION = 2
_READS = (1, 2)

#: Verdicts that count as a break when looking for the first broken layer.
BREAKS = ("broken", "nonfinite")


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
      where: for an operation, the source line that made it (``"my_model.py:42 (forward)"``).
      via: for an operation, the unchecked operations computed from the input that feed it (a
        ``pad``, whose output no action describes), with their lines.
    """

    name: str
    output: str
    stride: int
    shape: tuple[int, ...]
    source: str
    result: CheckResult
    where: str | None = None
    via: str | None = None


@dataclasses.dataclass(frozen=True)
class Report:
    """A model checked layer by layer under one group.

    Attributes:
      model: the model's name.
      group: the group's name.
      input_shape: shape of the input batch.
      labels: the checked elements' labels, in the order of every layer's result.
      layers: one ``LayerReport`` per layer output (or operation); the last is the model's output.
      seconds: wall time of the check.
      by: ``"layer"``, or ``"operation"`` for a report made by ``equivax.localize``.
      notes: what the report could not do and how to do it (a model checked end to end, say).
    """

    model: str
    group: str
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    layers: tuple[LayerReport, ...]
    seconds: float = float("nan")
    by: str = "layer"
    notes: tuple[str, ...] = ()

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

    def explain(self, label: str) -> str:
        """One sentence: where ``label`` first breaks and what holds before it, or ``"no break"``.

        For instance ``"`pad` at my_model.py:42 (forward) breaks shift(0,1); everything before it
        is exact"``.
        """
        i = self._element(label)
        index = self.first_broken_index(label)
        unit = "operation" if self.by == "operation" else "layer"
        if index is None:
            return f"{label}: no break in {len(self.layers)} {unit}s"
        layer = self.layers[index]
        at = f"`{layer.name}`" + (f" at {layer.where}" if layer.where else "")
        fed = f" (fed by the unchecked {layer.via})" if layer.via else ""
        before = [earlier.result for earlier in self.layers[:index]]
        if not before:
            held = f"it is the first {unit} checked"
        elif all(r.methods[i] == "exact" for r in before):
            held = "everything before it is exact"
        elif all(r.verdicts[i] == "equivariant" for r in before):
            held = "everything before it is equivariant to rounding"
        else:
            held = "earlier ones are approximate only"
        return f"{at} breaks {label}{fed}; {held}"

    def summary(self) -> str:
        """A few lines: the verdict of the output and where each broken element first breaks."""
        out = self.output
        lines = [f"{self.model} under {self.group}: {out.summary()}"]
        breaks = {label: index for label in self.labels if (index := self.first_broken_index(label)) is not None}
        for label in breaks:
            end = out.verdicts[self.labels.index(label)]
            lines.append(f"  {self.explain(label)} (output: {end})")
        if not breaks:
            lines.append(f"  no break: every {'operation' if self.by == 'operation' else 'layer'} holds")
        lines += [f"  note: {note}" for note in self.notes]
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
            "by": self.by,
            "notes": list(self.notes),
            "layers": [
                {
                    "name": layer.name,
                    "output": layer.output,
                    "stride": layer.stride,
                    "shape": list(layer.shape),
                    "source": layer.source,
                    "where": layer.where,
                    "via": layer.via,
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
        if version not in _READS:
            raise ValueError(
                f"this is a version-{version} report; equivax reads versions {', '.join(map(str, _READS))}: "
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
                where=layer.get("where"),
                via=layer.get("via"),
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
            by=data.get("by", "layer"),
            notes=tuple(data.get("notes", ())),
        )


def _num(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def report(
    model: Any,
    x: Any,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    layers: Sequence[Any] | None = None,
    layer_actions: Any = None,
    variables: Any = None,
    vmap: bool = False,
    by: str = "layer",
    elements: Sequence[Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    name: str | None = None,
    devices: Sequence[Any] | None = None,
) -> Report:
    """Check a model end to end and layer by layer; name where equivariance first breaks.

    Args:
      model: a Flax NNX module (any module tree), a Flax Linen module (bound, or with
        ``variables=``), an Equinox module, or any callable with ``layers=`` (see
        ``docs/how-to/report-*.md``). A model that cannot be split is checked end to end and the
        report's ``notes`` say why and how to give its layers.
      x: a batch of inputs (NHWC images for planar groups).
      group: the group acting on the input.
      in_action: the action on the input; default the group's image action.
      out_action: the action on the model's output; default: declared or inferred (see the
        module docstring).
      layers: the callables the model applies in order (or ``(name, callable)`` pairs); each may
        take and return pytrees.
      layer_actions: the action on some layers' outputs, overriding inference: ``{layer name:
        action}``, one action (or ``None``) per layer, or ``fn(name, output shape) -> action or
        None``. Needed for every layer after your own ``in_action`` or custom action.
      variables: a Flax Linen module's variables (``model.init(...)``).
      vmap: the model takes one example at a time (Equinox's habit): it is vmapped over the batch.
      by: ``"layer"``, or ``"operation"`` for ``equivax.localize`` (every traced operation).
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
    if by not in ("layer", "operation"):
        raise ValueError(f"by must be 'layer' or 'operation', got {by!r}")
    model_name = name or (layers_lib.type_name(model) if model is not None else "model")
    if by == "operation":
        if layers is not None or layer_actions is not None:
            raise ValueError("by='operation' finds the operations itself: drop layers= and layer_actions=")
        from equivax._localize import localize

        f = model if variables is None else functools.partial(model.apply, variables)
        return localize(
            jax.vmap(f) if vmap else f, x, group, in_action, out_action,
            elements=elements, rtol=rtol, atol=atol, name=model_name, devices=devices,
        )  # fmt: skip
    x = jax.numpy.asarray(x)
    start = time.perf_counter()
    in_action = group.image_action if in_action is None else in_action
    if in_action is None:
        raise ValueError(f"{group.name} has no natural image action; pass in_action=your_action(g, x)")
    found = layers_lib.split(model, layers, variables=variables, vmap=vmap)
    taps, shapes = layers_lib.trace(found, x)
    if carried_by(in_action) is None and len(taps) == 1 and out_action is None and layer_actions is None:
        raise ValueError(
            "with your own in_action the action on the output cannot be inferred: pass out_action=your_action(g, y)"
        )
    rows, out_actions = plan(taps, shapes, x, in_action, out_action, layer_actions)
    results = check_outputs(
        found.taps, x, group, in_action, out_actions, elements=elements, rtol=rtol, atol=atol, devices=devices
    )
    layer_reports = tuple(
        LayerReport(row.name, row.output, row.stride, row.shape, row.source, result)
        for row, result in zip(rows, results.values(), strict=True)
    )
    labels = layer_reports[0].result.labels
    notes = () if found.note is None else (found.note,)
    if not notes and layers is None and len(taps) == 1 and taps[0].name == "output":
        notes = (
            f"checked end to end as one layer: none of {model_name}'s sub-module calls could be recorded (they run "
            "inside a transformation it applies itself, such as jax.vmap); pass layers=[...], or by='operation'",
        )
    return Report(
        model_name, group.name, tuple(x.shape), labels, layer_reports, time.perf_counter() - start, notes=notes
    )
