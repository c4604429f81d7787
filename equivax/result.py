"""The result of an equivariance check: per-element errors, verdicts and how they were decided."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from equivax.verdicts import VERDICTS, is_passing

__all__ = ["VERDICTS", "CheckResult", "worst_index"]


def worst_index(verdicts: Any, rel_error: Any) -> int:
    """The one definition of the worst element: worst verdict first, then largest relative error
    (an undefined error counts as largest)."""
    severity = [VERDICTS.index(v) for v in verdicts]
    errors = np.nan_to_num(np.asarray(rel_error, dtype=float), nan=np.inf)
    return int(max(range(len(severity)), key=lambda i: (severity[i], errors[i])))


def _fmt(value: float) -> str:
    return "—" if value is None or np.isnan(value) else f"{value:.2e}"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Per-element outcome of ``equivax.check``.

    Attributes:
      group: name of the group checked.
      labels: label of each checked element.
      elements: ``(n, d)`` array of the checked elements.
      rel_error: ``‖f(g·x) − g·f(x)‖₂ / ‖g·f(x)‖₂``, max over the batch, in the precision f ran in.
      abs_error: max absolute difference over the whole output.
      verdicts: one of ``"equivariant"``, ``"approximate"``, ``"undecided"``, ``"broken"``,
        ``"nonfinite"`` each (``equivax.verdicts.VERDICTS``); only the first two pass.
      reasons: one sentence per element saying why.
      methods: what decided each verdict: ``"exact"`` (f(g·x) and g·f(x) are equal bit for bit,
        nothing to explain), ``"float64"`` (re-run in the other precision and compared with each
        example's rounding floor), ``"tolerance"`` (the user's rtol/atol), ``"undecided"`` (no
        second precision could decide; the reason says why), ``"stride"`` (outside the subgroup a
        strided action keeps) or ``"nonfinite"``.
      rel_error64: the relative error in float64 (of the re-run, or of f itself when f runs in
        float64), worst over the informative examples (NaN where none was measured).
      noise_floor: the floor each verdict compared against: for ``"float64"`` the float64
        rounding floor of the decisive example (compare with ``rel_error64``); for
        ``"tolerance"`` the rounding bound in f's own precision (compare with ``rel_error``).
      rounding: measured relative rounding error of f at x in the lower precision (the distance
        between its float32 and float64 outputs), worst over the informative examples, or
        ``None`` when not measured.
      locations: where the largest absolute difference sits, per element: ``(leaf, index)``.
      dtype: dtype of the input.
      rtol: the user's relative tolerance, if any.
      atol: the user's absolute tolerance, if any.
      error_maps: ``(n, H, W)``: the largest ``|f(g·x) − g·f(x)|`` at each output position (over
        examples and channels), per element, for spatial outputs checked with
        ``equivax.check_outputs``; ``None`` otherwise. Where in the map the error sits tells
        borders from aliasing grids.
      devices: how many devices computed the elements, read from the sharding of the computed
        statistics (1 unless the check was sharded).
      notes: sentences a user should read beside the verdicts (a module checked in eval mode,
        examples set aside as uninformative).
      uninformative: indices of the examples whose output is at rounding level, set aside.
      chunk_size: how many elements the compiled program evaluated at a time (``None``: all
        at once), the user's choice or the automatic one.
    """

    group: str
    labels: tuple[str, ...]
    elements: np.ndarray
    rel_error: np.ndarray
    abs_error: np.ndarray
    verdicts: tuple[str, ...]
    reasons: tuple[str, ...]
    methods: tuple[str, ...]
    rel_error64: np.ndarray
    noise_floor: np.ndarray
    rounding: float | None
    locations: tuple[tuple[str, tuple[int, ...]], ...]
    dtype: str
    rtol: float | None = None
    atol: float | None = None
    error_maps: np.ndarray | None = dataclasses.field(default=None, repr=False)
    devices: int = 1
    notes: tuple[str, ...] = ()
    uninformative: tuple[int, ...] = ()
    chunk_size: int | None = None

    @property
    def ok(self) -> bool:
        """True when every element passes (equivariant or approximate); undecided never passes."""
        return all(is_passing(v) for v in self.verdicts)

    @property
    def worst(self) -> int:
        """Index of the worst element: worst verdict first, then largest relative error."""
        return worst_index(self.verdicts, self.rel_error)

    def counts(self) -> dict[str, int]:
        """Number of elements per verdict."""
        return {v: self.verdicts.count(v) for v in VERDICTS if v in self.verdicts}

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (JSON-serialisable): summary plus one record per element."""
        rows = [
            {
                "label": self.labels[i],
                "element": np.asarray(self.elements[i]).tolist(),
                "rel_error": _num(self.rel_error[i]),
                "abs_error": _num(self.abs_error[i]),
                "rel_error64": _num(self.rel_error64[i]),
                "noise_floor": _num(self.noise_floor[i]),
                "verdict": self.verdicts[i],
                "method": self.methods[i],
                "reason": self.reasons[i],
                "location": {"leaf": self.locations[i][0], "index": list(self.locations[i][1])},
            }
            for i in range(len(self.labels))
        ]
        return {
            "group": self.group,
            "ok": self.ok,
            "dtype": self.dtype,
            "rtol": self.rtol,
            "atol": self.atol,
            "rounding": self.rounding,
            "devices": self.devices,
            "notes": list(self.notes),
            "uninformative": list(self.uninformative),
            "counts": self.counts(),
            "elements": rows,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], error_maps: Any = None) -> CheckResult:
        """Rebuild a result from ``to_dict`` output (``error_maps`` as nested lists or an array)."""
        rows = data["elements"]

        def column(key: str) -> np.ndarray:
            return np.asarray([np.nan if row[key] is None else row[key] for row in rows], dtype=np.float64)

        return cls(
            group=data["group"],
            labels=tuple(row["label"] for row in rows),
            elements=np.asarray([row["element"] for row in rows]),
            rel_error=column("rel_error"),
            abs_error=column("abs_error"),
            verdicts=tuple(row["verdict"] for row in rows),
            reasons=tuple(row["reason"] for row in rows),
            methods=tuple(row["method"] for row in rows),
            rel_error64=column("rel_error64"),
            noise_floor=column("noise_floor"),
            rounding=data["rounding"],
            locations=tuple((row["location"]["leaf"], tuple(row["location"]["index"])) for row in rows),
            dtype=data["dtype"],
            rtol=data["rtol"],
            atol=data["atol"],
            error_maps=None if error_maps is None else np.asarray(error_maps, dtype=np.float64),
            devices=int(data.get("devices", 1)),
            notes=tuple(data.get("notes", ())),
            uninformative=tuple(data.get("uninformative", ())),
        )

    def table(self, max_rows: int = 12) -> str:
        """A plain-text table of the elements, worst first, at most ``max_rows`` rows."""
        order = sorted(
            range(len(self.labels)),
            key=lambda i: (-VERDICTS.index(self.verdicts[i]), -np.nan_to_num(self.rel_error[i], nan=np.inf)),
        )
        header = ("element", "rel error", "abs error", "rel err f64", "floor", "verdict", "by")
        rows = [
            (
                self.labels[i],
                *(  # the finite part's errors (often 0) would read as a pass
                    ("NaN/inf", "NaN/inf")
                    if self.verdicts[i] == "nonfinite"
                    else (_fmt(self.rel_error[i]), _fmt(self.abs_error[i]))
                ),
                _fmt(self.rel_error64[i]),
                _fmt(self.noise_floor[i]),
                self.verdicts[i],
                self.methods[i],
            )
            for i in order[:max_rows]
        ]
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
        if len(order) > max_rows:
            lines.append(f"... {len(order) - max_rows} more elements")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: group, size, verdict counts."""
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items())
        status = "ok" if self.ok else ("UNDECIDED" if "undecided" in self.verdicts else "NOT equivariant")
        return f"{self.group}: {len(self.labels)} elements, {counts} ({status}; {self.dtype})"

    def __repr__(self) -> str:
        notes = "".join(f"\nnote: {note}" for note in self.notes)
        return f"CheckResult({self.summary()})\n{self.table()}{notes}"


def _num(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value
