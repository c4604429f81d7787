"""pytest plugin: a summary table of every equivariance check made during a test session.

Opt in with ``--equivax-summary`` (every test), or mark tests with ``@pytest.mark.equivax``;
``--equivax-json=PATH`` also writes the rows as JSON. Registered through the ``pytest11`` entry
point, so installing equivax is enough. Under pytest-xdist each worker collects its own rows and
the controller has none to print: run with ``-n 0`` (or ``-p no:xdist``) for the summary.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from equivax.result import VERDICTS, CheckResult

_KEY = pytest.StashKey["_Collector"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equivax", "equivariance checks")
    group.addoption(
        "--equivax-summary",
        action="store_true",
        help="print a table of every equivariance check made during the session",
    )
    group.addoption("--equivax-json", metavar="PATH", help="also write the summary rows as JSON to PATH")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "equivax: include this test's equivariance checks in the equivax summary")
    collector = _Collector(everything=bool(config.getoption("equivax_summary") or config.getoption("equivax_json")))
    config.stash[_KEY] = collector
    config.pluginmanager.register(collector, "equivax-collector")


def _name(f: Any) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


class _Collector:
    def __init__(self, everything: bool):
        self.everything = everything
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.current: pytest.Item | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        from equivax._observers import observing

        self.current = item
        try:
            with observing(self.observe):
                return (yield)
        finally:
            self.current = None

    def observe(self, f: Any, result: CheckResult) -> None:
        item = self.current
        if item is None or not (self.everything or item.get_closest_marker("equivax")):
            return
        key = (item.nodeid, _name(f), result.group)
        worst = result.worst
        row = self.rows.setdefault(
            key, {"test": key[0], "layer": key[1], "group": key[2], "checks": 0, "elements": 0, "worst": None}
        )
        row["checks"] += 1
        row["elements"] += len(result.verdicts)
        error = float(result.rel_error[worst])
        candidate = {
            "element": result.labels[worst],
            "rel_error": None if np.isnan(error) else error,
            "verdict": result.verdicts[worst],
        }
        if row["worst"] is None or _severity(candidate) > _severity(row["worst"]):
            row["worst"] = candidate

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if not (self.everything or self.rows):
            return
        rows = list(self.rows.values())
        terminalreporter.write_sep("=", "equivax summary")
        if not rows:
            terminalreporter.write_line("no equivariance checks were made")
        header = ("test", "layer", "group", "checks", "worst element", "rel error", "verdict")
        table = [header] + [
            (
                r["test"],
                r["layer"],
                r["group"],
                str(r["checks"]),
                r["worst"]["element"],
                "—" if r["worst"]["rel_error"] is None else f"{r['worst']['rel_error']:.2e}",
                r["worst"]["verdict"],
            )
            for r in rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for line in table:
            terminalreporter.write_line("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        path = config.getoption("equivax_json")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"version": 1, "rows": rows}, handle, indent=2)
            terminalreporter.write_line(f"equivax summary written to {path}")


def _severity(worst: dict[str, Any]) -> tuple[int, float]:
    error = worst["rel_error"]
    return VERDICTS.index(worst["verdict"]), float("inf") if error is None else error
