"""Reports as GitHub-flavoured Markdown: summary, per-element and per-layer tables, every row."""

from __future__ import annotations

from collections.abc import Sequence

from equivax._report import Report
from equivax.render._common import as_reports, element_rows, fmt, layer_rows, summary_rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]


def _one(report: Report) -> list[str]:
    out = report.output
    status = "**equivariant**" if report.ok else "**not equivariant**"
    lines = [
        f"## {report.model} under {report.group}",
        "",
        f"Input {tuple(report.input_shape)}, {out.dtype}, {len(report.labels)} elements, "
        f"{len(report.layers)} layers, {report.seconds:.1f} s. Output: {status} ({out.summary()}).",
        "",
        "### Per element",
        "",
    ]
    rows = element_rows(report)
    ops = report.by == "operation"
    unit = "operation" if ops else "layer"
    lines += _table(
        ["element", "output rel error", "output verdict", f"first broken {unit}", "why", *(["where"] if ops else [])],
        [
            [r["element"], r["rel_error"], r["verdict"], r["first_break"], r["why"], *([r["where"]] if ops else [])]
            for r in rows
        ],
    )
    if ops:
        lines += ["", *(f"- {r['explain']}" for r in rows)]
    lines += [*([""] if report.notes else []), *(f"> Note: {note}" for note in report.notes)]
    lines += ["", f"### Per {unit}", ""]
    lines += _table(
        [unit, "action", "from", "worst element", "rel error", "verdicts", *(["where"] if ops else [])],
        [
            [
                r["layer"],
                r["output"],
                r["source"],
                r["worst"],
                r["rel_error"],
                r["counts"],
                *([r["where"]] if ops else []),
            ]
            for r in layer_rows(report)
        ],
    )
    lines += ["", "### Every layer and element", ""]
    lines += _table(
        ["layer", "element", "rel error", "abs error", "noise floor", "verdict"],
        [
            [r["layer"], r["element"], fmt(r["rel_error"]), fmt(r["abs_error"]), fmt(r["noise_floor"]), r["verdict"]]
            for r in report.rows()
        ],
    )
    return lines


def markdown(reports: Report | Sequence[Report]) -> str:
    """The report(s) as Markdown: one section per model, with every (layer, element) row."""
    lines = ["# Equivariance report", ""]
    found = as_reports(reports)
    if len(found) > 1:
        labels, cells = summary_rows(found)
        lines += ["## Where each model first breaks", ""]
        lines += _table(
            ["element", *(r.model for r in found)],
            [
                [label, *(f"{v} — {first}" if v else first for v, first in row)]
                for label, row in zip(labels, cells, strict=True)
            ],
        )
        lines.append("")
    for report in found:
        lines += [*_one(report), ""]
    return "\n".join(lines)
