"""pytest plugin: a summary table of every equivariance check made during a test session.

Opt in with ``--equivax-summary`` (every test), or mark tests with ``@pytest.mark.equivax``;
``--equivax-json=PATH`` also writes the rows as JSON. Registered through the ``pytest11`` entry
point, so installing equivax is enough. Under pytest-xdist each worker collects its own rows and
hands them to the controller when it finishes (``config.workeroutput``), which merges and prints them.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from equivax.result import VERDICTS, CheckResult

_KEY = pytest.StashKey["_Collector"]()
_WORKER_ROWS = "equivax_rows"


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
    collector.workeroutput = getattr(config, "workeroutput", None)  # set in pytest-xdist's workers only
    config.stash[_KEY] = collector
    config.pluginmanager.register(collector, "equivax-collector")


def _name(f: Any) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


class _Collector:
    def __init__(self, everything: bool):
        self.everything = everything
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.current: pytest.Item | None = None
        self.workeroutput: dict[str, Any] | None = None

    def pytest_sessionfinish(self) -> None:
        if self.workeroutput is not None:  # an xdist worker: send the rows to the controller
            self.workeroutput[_WORKER_ROWS] = json.dumps(list(self.rows.values()))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """The controller of pytest-xdist: merge the rows of a worker that finished."""
        for row in json.loads(getattr(node, "workeroutput", {}).get(_WORKER_ROWS, "[]")):
            self.merge(row)

    def merge(self, row: dict[str, Any]) -> None:
        key = (row["test"], row["layer"], row["group"])
        mine = self.rows.get(key)
        if mine is None:
            self.rows[key] = row
            return
        mine["checks"] += row["checks"]
        mine["elements"] += row["elements"]
        if _severity(row["worst"]) > _severity(mine["worst"]):
            mine["worst"] = row["worst"]

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
        rows = sorted(
            self.rows.values(), key=lambda r: (r["test"], r["layer"], r["group"])
        )  # workers finish in any order
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
