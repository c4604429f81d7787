"""Write a report to a file, the format chosen by name or by the file's suffix."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence

from equivax._report import Report
from equivax.render.data import to_json
from equivax.render.html import html
from equivax.render.markdown import markdown
from equivax.render.terminal import terminal

#: Renderer by format name.
FORMATS: dict[str, Callable[..., str]] = {"html": html, "json": to_json, "markdown": markdown, "text": terminal}
_SUFFIXES = {".html": "html", ".htm": "html", ".json": "json", ".md": "markdown", ".txt": "text"}


def write(reports: Report | Sequence[Report], path: str | pathlib.Path, format: str | None = None) -> pathlib.Path:
    """Render the report(s) and write them to ``path``; returns the path.

    Args:
      reports: one report or several.
      path: the file to write.
      format: ``"html"``, ``"json"``, ``"markdown"`` or ``"text"``; default from the suffix.
    """
    path = pathlib.Path(path)
    if format is None:
        format = _SUFFIXES.get(path.suffix.lower())
        if format is None:
            raise ValueError(
                f"cannot tell the format of {path.name!r} from its suffix; name it .html, .json, .md or .txt, "
                "or pass format="
            )
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    path.write_text(FORMATS[format](reports), encoding="utf-8")
    return path
