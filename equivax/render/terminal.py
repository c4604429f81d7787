"""Reports as rich tables for the terminal."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from equivax._report import Report
from equivax.render._common import COLOURS, as_reports, element_rows, layer_rows


def _element_table(report: Report) -> Table:
    table = Table(title=escape(f"{report.model} under {report.group}: per element"), title_justify="left")
    for column in ("element", "output rel error", "output verdict", "first broken layer"):
        table.add_column(column)
    for row in element_rows(report):
        colour = COLOURS.get(row["verdict"], "")
        verdict = f"[{colour}]{escape(row['verdict'])}[/]"
        table.add_row(escape(row["element"]), row["rel_error"], verdict, escape(row["first_break"]))
    return table


def _layer_table(report: Report) -> Table:
    table = Table(title=escape(f"{report.model}: per layer"), title_justify="left")
    for column in ("layer", "action", "worst element", "rel error", "verdicts"):
        table.add_column(column)
    for row in layer_rows(report):
        colour = COLOURS.get(row["status"], "")
        counts = f"[{colour}]{escape(row['counts'])}[/]"
        table.add_row(escape(row["layer"]), escape(row["output"]), escape(row["worst"]), row["rel_error"], counts)
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
    for report in as_reports(reports):
        console.print(_element_table(report))
        if layers:
            console.print(_layer_table(report))
        verdict = "equivariant" if report.ok else "NOT equivariant"
        console.print(escape(f"{report.model}: output {verdict} ({report.output.summary()}); {report.seconds:.1f} s"))
        console.print()
    return buffer.getvalue()
