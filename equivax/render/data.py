"""Reports as versioned JSON (schema in ``docs/reports.md``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from equivax._report import SCHEMA_VERSION, Report
from equivax.render._common import as_reports

#: File versions this equivax reads (version 1 files lack the localisation fields).
READS = (1, 2)


def to_json(reports: Report | Sequence[Report], *, maps: bool = True, indent: int | None = 1) -> str:
    """JSON text: ``{"version": 2, "reports": [Report.to_dict(), ...]}``.

    Args:
      reports: one report or several.
      maps: include the error maps (the bulk of the file for large feature maps).
      indent: passed to ``json.dumps``.
    """
    found = as_reports(reports)
    return json.dumps({"version": SCHEMA_VERSION, "reports": [r.to_dict(maps=maps) for r in found]}, indent=indent)


def from_json(text: str) -> list[Report]:
    """The reports in JSON written by ``to_json`` (a clear error for another version)."""
    data = json.loads(text)
    if not isinstance(data, dict) or "reports" not in data:
        raise ValueError("not an equivax report file: expected a JSON object with 'version' and 'reports'")
    version = data.get("version")
    if version not in READS:
        raise ValueError(
            f"this report file has version {version}; equivax reads versions {', '.join(map(str, READS))}: "
            "regenerate it with this version of equivax"
        )
    return [Report.from_dict({**entry, "version": version}) for entry in data["reports"]]
