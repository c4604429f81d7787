"""Plots for reports, drawn with matplotlib's object API (no pyplot, no global state) as PNG bytes."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from equivax._report import Report

#: Exact zeros are drawn at this height on the logarithmic error axis.
ZERO_AT = 1e-16
#: At most this many elements get a line in the error plot (the worst; captions say how many).
LINES = 24
#: At most this many error maps are drawn (the worst broken elements; captions say how many).
MAPS = 8
_MARKERS = {"equivariant": "o", "approximate": "s", "broken": "X", "nonfinite": "D"}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _worst_elements(report: Report, limit: int) -> list[int]:
    """Indices of up to ``limit`` elements, the largest output errors first."""
    errors = np.nan_to_num(np.nanmax([layer.result.rel_error for layer in report.layers], axis=0), nan=-1)
    return [int(i) for i in np.argsort(-errors, kind="stable")[:limit]]


def layer_errors(report: Report, limit: int = LINES) -> bytes:
    """Relative error of every layer's output, one line per element (the worst ``limit``; all of
    them when there are no more).

    Markers give the verdict (o equivariant, ■ approximate, X broken); exact zeros sit at
    ``ZERO_AT``; elements a layer's action does not represent (a stride) leave a gap.
    """
    names = [layer.name for layer in report.layers]
    fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 2), 4.2))
    ax = fig.subplots()
    for i in _worst_elements(report, limit):
        errors = np.asarray([layer.result.rel_error[i] for layer in report.layers], dtype=float)
        shown = np.where(errors == 0, ZERO_AT, errors)  # NaN (no action at this stride) stays a gap
        (line,) = ax.plot(range(len(names)), shown, lw=1.2, label=report.labels[i])
        markers = np.asarray([_MARKERS.get(layer.result.verdicts[i], "o") for layer in report.layers])
        for marker in dict.fromkeys(markers):  # one artist per marker shape: matplotlib draws per artist
            at = np.flatnonzero((markers == marker) & ~np.isnan(shown))
            if at.size:
                ms = 6 if marker == "X" else 4
                ax.plot(at, shown[at], linestyle="none", marker=marker, color=line.get_color(), ms=ms)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8 if len(names) < 40 else 5)
    ax.set_ylabel("relative error ‖f(g·x) − g·f(x)‖ / ‖g·f(x)‖")
    ax.set_title(f"{report.model} under {report.group}: error after each layer", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title="element", title_fontsize=8)
    return _png(fig)


def _map_for(report: Report, i: int) -> tuple[str, np.ndarray] | None:
    """The error map at element ``i``'s first broken layer, when that layer has spatial outputs
    and an action for the element there (not an element its stride drops)."""
    index = report.first_broken_index(report.labels[i])
    layer = None if index is None else report.layers[index]
    if layer is None or layer.result.error_maps is None or layer.result.methods[i] == "stride":
        return None
    return layer.name, layer.result.error_maps[i]


def mapped_elements(report: Report) -> list[int]:
    """Indices of the elements that have an error map to draw (broken at a spatial layer), worst first."""
    return [i for i in _worst_elements(report, len(report.labels)) if _map_for(report, i)]


def error_maps(report: Report, limit: int = MAPS) -> bytes | None:
    """Heat maps of where the error sits (largest |f(g·x) − g·f(x)| over examples and channels) at
    the first broken layer of up to ``limit`` elements, the worst first; ``None`` when no element
    breaks at a layer with spatial outputs."""
    panels = [(i, _map_for(report, i)) for i in mapped_elements(report)[:limit]]
    if not panels:
        return None
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(3.1 * columns, 3.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, (i, (layer_name, values)) in zip(axes, panels, strict=False):
        image = ax.imshow(values, cmap="magma", interpolation="nearest")
        ax.set_title(f"{report.labels[i]} @ {layer_name}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    return _png(fig)
