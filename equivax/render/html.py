"""Reports as one self-contained HTML page: inline CSS, plots embedded as PNG data, no scripts,
nothing fetched at view time."""

from __future__ import annotations

import base64
import html as html_lib
from collections.abc import Sequence

from equivax._report import Report
from equivax.render import plots
from equivax.render._common import COLOURS, as_reports, element_rows, fmt, layer_rows, summary_rows

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1f2328; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; }
th { background: #f6f8fa; } td.num { text-align: right; font-family: ui-monospace, monospace; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: white; font-weight: 600; }
.verdict { font-weight: 600; } img { max-width: 100%; } .caption { color: #59636e; font-size: 12px; }
details { margin: 1em 0; } summary { cursor: pointer; font-weight: 600; }
"""


def _e(text: object) -> str:
    return html_lib.escape(str(text))


def _verdict(verdict: str) -> str:
    return f'<span class="verdict" style="color:{COLOURS.get(verdict, "#000")}">{_e(verdict)}</span>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if c in numeric else ''}>{cell}</td>" for c, cell in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _shown(count: int, total: int, what: str) -> str:
    if count >= total:
        return f"All {total} {what} are shown."
    return f"The {count} worst of {total} {what} are shown; the tables list every one."


def _summary(reports: list[Report]) -> str:
    labels, cells = summary_rows(reports)
    rows = [
        [_e(label), *(f"{_verdict(v)} — {_e(first)}" if v else _e(first) for v, first in row)]
        for label, row in zip(labels, cells, strict=True)
    ]
    return "\n".join(
        [
            '<h2 id="summary">Where each model first breaks</h2>',
            _table(["element", *(r.model for r in reports)], rows),
            '<p class="caption">Each cell: the output\'s verdict — the first broken layer (or operation).</p>',
        ]
    )


def _section(report: Report) -> str:
    unit = "operation" if report.by == "operation" else "layer"
    ops = report.by == "operation"
    ok = report.ok
    badge = f'<span class="badge" style="background:{COLOURS["equivariant" if ok else "broken"]}">'
    badge += f"{'equivariant' if ok else 'not equivariant'}</span>"
    parts = [
        f"<h2>{_e(report.model)} under {_e(report.group)} {badge}</h2>",
        f"<p>Input {_e(tuple(report.input_shape))}, {_e(report.output.dtype)}, {len(report.labels)} elements, "
        f"{len(report.layers)} {unit}s, checked in {report.seconds:.1f} s. Output: {_e(report.output.summary())}</p>",
        *(f'<p class="caption">Note: {_e(note)}</p>' for note in report.notes),
        "<h3>Per element</h3>",
        _table(
            [
                "element",
                "output rel error",
                "output verdict",
                f"first broken {unit}",
                "why",
                *(["where"] if ops else []),
            ],
            [
                [_e(r["element"]), r["rel_error"], _verdict(r["verdict"]), _e(r["first_break"]), _e(r["why"])]
                + ([_e(r["where"])] if ops else [])
                for r in element_rows(report)
            ],
            numeric=(1,),
        ),
        *(["<ul>", *(f"<li>{_e(r['explain'])}</li>" for r in element_rows(report)), "</ul>"] if ops else []),
        f"<h3>Error after each {unit}</h3>",
        _image(plots.layer_errors(report), f"relative error per {unit} of {report.model}"),
        f'<p class="caption">{_shown(plots.LINES, len(report.labels), "elements")} Markers: o equivariant, '
        f"■ approximate, X broken; exact zeros are drawn at {plots.ZERO_AT:g}; a gap marks an element the "
        f"{unit}'s action does not represent (a stride).</p>",
    ]
    maps = plots.error_maps(report)
    if maps is not None:
        mapped = len(plots.mapped_elements(report))
        parts += [
            "<h3>Where the error sits</h3>",
            _image(maps, f"error maps of {report.model}"),
            f'<p class="caption">{_shown(plots.MAPS, mapped, "elements that break at a spatial output")} '
            "Largest |f(g·x) − g·f(x)| at each position over examples and channels, at the "
            f"first broken {unit} of each element. Errors along the borders point to padding; a regular grid "
            "points to aliasing by a stride; errors everywhere to a layer that does not commute with the "
            "transformation at all.</p>",
        ]
    parts += [
        f"<h3>Per {unit}</h3>",
        _table(
            [unit, "action", "from", "worst element", "rel error", "verdicts", *(["where"] if ops else [])],
            [
                [_e(r[key]) if key != "rel_error" else r[key] for key in _LAYER_KEYS]
                + ([_e(r["where"])] if ops else [])
                for r in layer_rows(report)
            ],
            numeric=(4,),
        ),
        "<details><summary>Every layer and element</summary>",
        _table(
            ["layer", "element", "rel error", "abs error", "noise floor", "verdict"],
            [
                [
                    _e(r["layer"]),
                    _e(r["element"]),
                    fmt(r["rel_error"]),
                    fmt(r["abs_error"]),
                    fmt(r["noise_floor"]),
                    _verdict(r["verdict"]),
                ]
                for r in report.rows()
            ],
            numeric=(2, 3, 4),
        ),
        "</details>",
    ]
    return "\n".join(parts)


_LAYER_KEYS = ("layer", "output", "source", "worst", "rel_error", "counts")


def html(reports: Report | Sequence[Report], *, title: str = "Equivariance report") -> str:
    """The report(s) as one HTML document that needs nothing else to display (plots inlined).

    Several reports get a summary across models first (each element's verdict and first break
    per model), then one section each.
    """
    found = as_reports(reports)
    sections = "\n".join([*([_summary(found)] if len(found) > 1 else []), *(_section(r) for r in found)])
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body><h1>{_e(title)}</h1>\n{sections}\n"
        '<p class="caption">Made by equivax. Relative error: ‖f(g·x) − g·f(x)‖₂ / ‖g·f(x)‖₂, the largest over the '
        "batch; verdicts separate rounding from structure by re-running in float64 (see the documentation).</p>"
        "\n</body></html>\n"
    )
