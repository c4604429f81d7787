"""Reports as rich tables for the terminal."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from equivax._report import Report
from equivax.render._common import COLOURS, as_reports, element_rows, layer_rows, summary_rows


def _unit(report: Report) -> str:
    return "operation" if report.by == "operation" else "layer"


def _element_table(report: Report) -> Table:
    table = Table(title=escape(f"{report.model} under {report.group}: per element"), title_justify="left")
    columns = ["element", "output rel error", "output verdict", f"first broken {_unit(report)}"]
    for column in columns + (["where"] if report.by == "operation" else []):
        table.add_column(column)
    for row in element_rows(report):
        colour = COLOURS.get(row["verdict"], "")
        verdict = f"[{colour}]{escape(row['verdict'])}[/]"
        cells = [escape(row["element"]), row["rel_error"], verdict, escape(row["first_break"])]
        table.add_row(*cells, *([escape(row["where"])] if report.by == "operation" else []))
    return table


def _layer_table(report: Report) -> Table:
    table = Table(title=escape(f"{report.model}: per {_unit(report)}"), title_justify="left")
    columns = [_unit(report), "action", "worst element", "rel error", "verdicts"]
    for column in columns + (["where"] if report.by == "operation" else []):
        table.add_column(column)
    for row in layer_rows(report):
        colour = COLOURS.get(row["status"], "")
        counts = f"[{colour}]{escape(row['counts'])}[/]"
        cells = [escape(row["layer"]), escape(row["output"]), escape(row["worst"]), row["rel_error"], counts]
        table.add_row(*cells, *([escape(row["where"])] if report.by == "operation" else []))
    return table


def _summary_table(reports: list[Report]) -> Table:
    table = Table(title="Where each model first breaks: output verdict — first break", title_justify="left")
    table.add_column("element")
    for report in reports:
        table.add_column(escape(report.model))
    labels, cells = summary_rows(reports)
    for label, row in zip(labels, cells, strict=True):
        shown = [f"[{COLOURS.get(v, '')}]{escape(v)}[/] — {escape(first)}" if v else escape(first) for v, first in row]
        table.add_row(escape(label), *shown)
    return table


def terminal(reports: Report | Sequence[Report], *, width: int = 110, colour: bool = False, layers: bool = True) -> str:
    """The report(s) as text tables: per element (output verdict, first broken layer) and per layer.

    Args:
      reports: one report or several.
      width: console width in characters.
      colour: keep ANSI colour codes (for printing to a terminal).
      layers: include the per-layer table.
    """
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=colour, color_system="standard" if colour else None)
    found = as_reports(reports)
    if len(found) > 1:
        console.print(_summary_table(found))
        console.print()
    for report in found:
        console.print(_element_table(report))
        if layers:
            console.print(_layer_table(report))
        verdict = "equivariant" if report.ok else "NOT equivariant"
        console.print(escape(f"{report.model}: output {verdict} ({report.output.summary()}); {report.seconds:.1f} s"))
        for row in element_rows(report):
            if report.by == "operation" and row["first_break"] != "none":
                console.print(escape(row["explain"]))
        for note in report.notes:
            console.print(escape(f"note: {note}"))
        console.print()
    return buffer.getvalue()
