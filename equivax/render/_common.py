"""What every renderer shares: number formatting and the per-element and per-layer summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from equivax._report import BREAKS, Report
from equivax.result import VERDICTS

#: Colour of each verdict (terminal styles and HTML).
COLOURS = {"equivariant": "#1a7f37", "approximate": "#9a6700", "broken": "#cf222e", "nonfinite": "#8250df"}


def as_reports(reports: Report | Sequence[Report]) -> list[Report]:
    """One report or several, as a list; a clear error for anything else."""
    found = [reports] if isinstance(reports, Report) else list(reports)
    if not found or not all(isinstance(r, Report) for r in found):
        raise TypeError(f"expected an equivax Report or a sequence of them, got {type(reports).__name__}")
    return found


def fmt(value: Any) -> str:
    """A relative or absolute error in three significant digits; '—' where undefined."""
    if value is None or np.isnan(value):
        return "—"
    return "0" if value == 0 else f"{value:.2e}"


def element_rows(report: Report) -> list[dict[str, str]]:
    """Per element: the output's error and verdict, and where it first breaks."""
    out = report.output
    rows = []
    for i, label in enumerate(report.labels):
        index = report.first_broken_index(label)
        first = None if index is None else report.layers[index].name
        reason = ""
        if index is not None:
            layer = report.layers[index]
            reason = layer.result.reasons[i]
            if layer.result.methods[i] == "stride":
                reason = _undefined(layer.result.elements[i], layer.stride, layer.output)
        layer = None if index is None else report.layers[index]
        rows.append(
            {
                "element": label,
                "rel_error": fmt(out.rel_error[i]),
                "verdict": out.verdicts[i],
                "first_break": first or "none",
                "why": reason,
                "where": where(layer),
                "explain": report.explain(label),
            }
        )
    return rows


def where(layer: Any) -> str:
    """The source line of an operation and the unchecked operations feeding it ('' for a layer)."""
    if layer is None or not layer.where:
        return ""
    return layer.where + (f"; fed by the unchecked {layer.via}" if layer.via else "")


def located(reports: Sequence[Report]) -> bool:
    """Whether any report localises operations (so renderers add a 'where' column)."""
    return any(report.by == "operation" for report in reports)


def summary_rows(reports: Sequence[Report]) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Across models: for every element checked by any of them, each model's output verdict and
    first break, as ``(verdict, first break)`` cells (``("", "not checked")`` where a model did
    not check the element)."""
    labels = list(dict.fromkeys(label for report in reports for label in report.labels))
    table = []
    for label in labels:
        cells = []
        for report in reports:
            if label not in report.labels:
                cells.append(("", "not checked"))
                continue
            verdict = report.output.verdicts[report.labels.index(label)]
            cells.append((verdict, report.first_broken_layer(label) or "never"))
        table.append(cells)
    return labels, table


def _undefined(element: np.ndarray, stride: int, output: str) -> str:
    """Why a layer's output has no action for an element."""
    element = np.asarray(element)
    if element.shape == (4,) and (element[0] % stride or element[1] % stride):
        return (
            f"the output is subsampled by {stride} in all: a shift by ({element[0]}, {element[1]}) pixels moves "
            "the sampling grid off itself (aliasing), so no shift of the output can match"
        )
    return f"the output ({output}) has no action for this turn or mirror: its orientation axis lacks it"


def layer_rows(report: Report) -> list[dict[str, str]]:
    """Per layer: the action checked, the worst element and the verdict counts."""
    rows = []
    for layer in report.layers:
        result = layer.result
        errors = np.nan_to_num(result.rel_error, nan=-1.0)
        worst = int(np.argmax(errors))
        broken = sum(v in BREAKS for v in result.verdicts)
        strided = layer.stride > 1 and "invariant" not in layer.output
        rows.append(
            {
                "layer": layer.name,
                "output": layer.output + (f" /{layer.stride}" if strided else ""),
                "source": layer.source,
                "worst": result.labels[worst],
                "rel_error": fmt(result.rel_error[worst]),
                "counts": ", ".join(f"{n} {v}" for v, n in result.counts().items()),
                "where": layer.where or "",
                "status": "broken" if broken else "approximate" if "approximate" in result.verdicts else "equivariant",
            }
        )
    return rows


def verdict_rank(verdict: str) -> int:
    """0 for the best verdict, increasing toward the worst."""
    return VERDICTS.index(verdict)
