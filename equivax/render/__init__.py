"""Renderers for ``equivax.Report``: terminal, Markdown, JSON and a self-contained HTML page.

Every renderer takes one report or a sequence of them (several models in one document):

    equivax.render.terminal(report)      # rich table, as text (print it)
    equivax.render.markdown(report)      # GitHub-flavoured Markdown
    equivax.render.to_json(report)       # versioned JSON; from_json reads it back
    equivax.render.html(report)          # one HTML file, plots embedded, no network needed
    equivax.render.write(report, "report.html")   # format from the suffix
"""

from equivax.render.data import from_json, to_json
from equivax.render.html import html
from equivax.render.markdown import markdown
from equivax.render.terminal import terminal
from equivax.render.write import FORMATS, write

__all__ = ["FORMATS", "from_json", "html", "markdown", "terminal", "to_json", "write"]
