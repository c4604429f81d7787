"""The verdict rule: a pure, vectorised function of measurements (see ``docs/verdicts.md``).

Every program is run first (f's precision, the other precision, any probes) and what they
measured is collected in one ``Measurements`` record per output part; ``decide`` then turns it
into one verdict per element without running anything, so the whole rule is unit-tested on
synthetic numbers.

The rule, per element ``e`` and example ``b`` (hi: the float64 run, lo: the lower precision):

1. ``exact`` when ``f(g·x)`` and ``g·f(x)`` agree bit for bit; ``stride`` when the element is
   outside what a strided action keeps; ``nonfinite`` on NaN or inf.
2. With ``rtol``/``atol``: within either passes; ``broken`` otherwise.
3. Otherwise each example gets its own floor, ``margin · (predicted_b + eps64)``, where
   ``predicted_b = max(rounding_b · eps64 / eps_lo, sensitivity_b)`` is the float64 rounding this
   example's computation is measured to amplify. An example whose floor reaches 1 is
   *uninformative* (its output is rounding: a blank frame through a normalisation) and is set
   aside, never widening the others' floors. Each element's floor is raised to its own
   lower-precision error scaled to float64 (``margin · rel_lo · eps64 / eps_lo``) where that is
   higher: rounding scales with the precision, structure does not.
4. Evidence of structure is ``rel_hi[e, b] > floor_b`` on an informative example. Evidence the
   lower precision does not echo (``rel_hi ≫ rel_lo + rounding``) means the two runs took
   different paths (a precision-dependent branch): it is not used to call an element broken.
5. Structure within the measured *resolution* (how far the float64 error moves when the stored
   low-precision values are moved by half an ulp of their own precision) or within an
   interpolating action's resampling tolerance is ``approximate``; above both, ``broken``.
6. ``undecided`` (never a pass) when no second precision could run, when it was not finite, or
   when every example is uninformative: the reason says why and how to decide (``rtol``/``atol``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from equivax.actions import OUTSIDE_STRIDE

__all__ = [
    "DIVERGENCE",
    "MARGIN64",
    "PASSING",
    "PROBE_REACH",
    "RESOLUTION_MARGIN",
    "SAFETY",
    "VERDICTS",
    "Decision",
    "Measurements",
    "beyond_resolution",
    "candidates",
    "decide",
    "is_passing",
    "rounding_bound",
]

#: Verdicts from best to worst. ``equivariant``: the error is floating-point rounding;
#: ``approximate``: structural but within the user's tolerance, the measured resolution of the
#: stored values, or an interpolating action's resampling; ``undecided``: equivax could not tell
#: (never a pass); ``broken``: structural; ``nonfinite``: NaN or inf in an output (never a pass).
VERDICTS = ("equivariant", "approximate", "undecided", "broken", "nonfinite")
#: The verdicts that pass a check.
PASSING = frozenset(("equivariant", "approximate"))

#: Margin between the predicted float64 rounding and the floor when f runs below float64 (2¹⁰).
#: Rounding and structure sit about 2²⁹ apart after the re-run, so it costs nothing in sensitivity.
SAFETY = 2.0**10
#: The margin when f runs in float64 itself: its own float64 error is compared with its own
#: predicted float64 rounding, so a structural error 10× above that rounding must still show.
MARGIN64 = 8.0
#: A float64 error more than this many times the lower precision's error plus its rounding is
#: not echoed by the lower precision: the runs diverged.
DIVERGENCE = 16.0
#: Structure up to this multiple of the measured resolution is called approximate. The probe moves
#: stored values by half an ulp; values *computed* in float32 (a filter bank expanded from a
#: sampled basis, as escnn exports it) are off by a few ulps each: a C4 regular-field CNN whose
#: orientations agree to ±3 ulps measured 2.3 times its probe; ±8 ulps, 5 times.
RESOLUTION_MARGIN = 4.0
#: How far, at most, moving the stored values by half an ulp can move the float64 error, in units
#: of f(x)'s own float32 rounding scaled to the stored values' precision: float32 rounding already
#: perturbs every product of a stored value, so the probe's move is of that order (1000 for margin).
#: An error above ``RESOLUTION_MARGIN`` times this is broken without running the probe.
PROBE_REACH = 1000.0
#: An example whose floor reaches this relative error cannot resolve anything: uninformative.
UNINFORMATIVE_FLOOR = 1.0

_EPS64 = float(np.finfo(np.float64).eps)


def is_passing(verdict: str) -> bool:
    """Whether a verdict passes a check (``assert_equivariant`` fails on anything else)."""
    return verdict in PASSING


def rounding_bound(dtype: Any, size: int) -> float:
    """A rough bound on relative rounding error: ``64 · eps(dtype) · √size``.

    ``size`` is the number of input values per example, a proxy for the length of the longest
    reduction. Used only to tell ``equivariant`` from ``approximate`` among elements that pass a
    user's explicit tolerance; it is a heuristic, not a guarantee.
    """
    return 64.0 * float(np.finfo(np.dtype(dtype)).eps) * math.sqrt(max(int(size), 1))


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What the programs measured for one output part: ``E`` elements, ``B`` examples (rows).

    ``rel``/``abs_error``/``finite``/``defined`` come from f's own precision; ``rel_other``,
    ``other_finite``, ``rounding``, ``sensitivity`` and ``resolution`` from the run in the other
    precision (``None`` when none was made; NaN rows for elements it did not cover).
    """

    rel: np.ndarray  # (E, B) relative error per element and example, in f's precision
    abs_error: np.ndarray  # (E,) largest absolute difference
    finite: np.ndarray  # (E,) both sides finite
    defined: np.ndarray  # (E,) the actions define the element (not outside a stride)
    y_finite: bool  # f(x) finite
    eps: float  # epsilon of the coarsest precision in the program
    dtype: str = "float32"  # f's input dtype (for the tolerance bound)
    size: int = 1  # values per input example (for the tolerance bound)
    f64: bool = False  # f runs in float64 throughout: the other run is float32
    unavailable: str | None = None  # why no other precision could run
    rel_other: np.ndarray | None = None  # (E, B) relative error in the other precision
    other_finite: np.ndarray | None = None  # (E,)
    rounding: np.ndarray | None = None  # (B,) distance between f(x) in the two precisions
    sensitivity: np.ndarray | None = None  # (B,) float64 change under a 4-ulp nudge of x
    resolution: np.ndarray | None = None  # (E, B) measured resolution of the stored values
    resampling_tolerance: float | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """One verdict per element, with the numbers it rests on."""

    verdicts: tuple[str, ...]
    reasons: tuple[str, ...]
    methods: tuple[str, ...]
    rel_error: np.ndarray  # (E,) worst over examples, f's precision (NaN outside a stride)
    abs_error: np.ndarray  # (E,)
    rel_error64: np.ndarray  # (E,) worst float64 error over informative examples
    noise_floor: np.ndarray  # (E,) the floor of the decisive example
    rounding: float | None  # worst measured rounding over informative examples
    uninformative: tuple[int, ...]  # examples set aside
    notes: tuple[str, ...]


def _max(a: np.ndarray, mask: np.ndarray | None = None) -> float:
    a = np.asarray(a, dtype=np.float64)
    if mask is not None:
        a = a[mask]
    a = a[~np.isnan(a)]
    return float(a.max()) if a.size else float("nan")


def _tolerance(m: Measurements, rel: np.ndarray, rtol: float | None, atol: float | None, i: int) -> tuple[str, str]:
    bound = rounding_bound(m.dtype, m.size)
    if np.isnan(rel[i]):
        return "broken", "the relative error is undefined (NaN): not within any tolerance"
    within = (rtol is not None and rel[i] <= rtol) or (atol is not None and m.abs_error[i] <= atol)
    if not within:
        return "broken", f"error exceeds the tolerance (rtol={rtol}, atol={atol})"
    if rel[i] <= bound:
        return "equivariant", f"within tolerance and the rounding bound {bound:.1e}"
    return "approximate", f"above the rounding bound {bound:.1e}, within tolerance"


def _floors(m: Measurements) -> tuple[np.ndarray, np.ndarray]:
    """Each example's floor (the float64 rounding its computation is measured to amplify, with the
    margin) and whether it is informative (its floor is below ``UNINFORMATIVE_FLOOR``)."""
    rounding = np.asarray(m.rounding, dtype=np.float64)
    eps_lo = float(np.finfo(np.float32).eps) if m.f64 else m.eps
    sensitivity = np.zeros_like(rounding) if m.sensitivity is None else np.asarray(m.sensitivity, np.float64)
    predicted = np.maximum(rounding * _EPS64 / eps_lo, sensitivity)
    floors = (MARGIN64 if m.f64 else SAFETY) * (predicted + _EPS64)
    return floors, np.isfinite(floors) & (floors < UNINFORMATIVE_FLOOR)


def _own_floors(m: Measurements, lo: np.ndarray) -> np.ndarray:
    """An element's own floors: its lower-precision error scaled to float64, with the margin. Rounding
    scales with the precision and structure does not, so a float64 error at the lower precision's
    error times ``eps64 / eps_lo`` is that element's rounding, whatever f(x)'s rounding predicted: an
    input on which f computes exactly (integer coordinates, a grid) has no rounding to measure,
    while its rotations do. Structure is lost only below ``margin · eps64 / eps_lo`` (2e-6 for float32)
    of the element's own lower-precision error. An example the lower precision got bit-exact by
    chance (integer coordinates) takes the element's largest error over the informative examples."""
    eps_lo = float(np.finfo(np.float32).eps) if m.f64 else m.eps
    lo = np.asarray(lo, np.float64)
    own = (MARGIN64 if m.f64 else SAFETY) * lo * _EPS64 / eps_lo
    # An infinite error (a row of zeros against a non-zero one) scales nothing.
    return np.where(np.isfinite(lo), own, np.nan)


def decide(m: Measurements, rtol: float | None = None, atol: float | None = None) -> Decision:
    """Verdicts for every element of one output part, from measurements alone."""
    n_el = len(m.abs_error)
    rel_rows = np.asarray(m.rel, dtype=np.float64).reshape(n_el, -1)
    rel = rel_rows.max(axis=1) if rel_rows.shape[1] else np.zeros(n_el)
    abs_error = np.asarray(m.abs_error, dtype=np.float64).copy()
    verdicts, reasons, methods = ["broken"] * n_el, [""] * n_el, [""] * n_el
    rel64, floor_out = np.full(n_el, np.nan), np.full(n_el, np.nan)
    measurable = np.asarray(m.defined) & np.asarray(m.finite) & bool(m.y_finite)
    exact = measurable & (abs_error == 0)
    tolerance = rtol is not None or atol is not None
    notes: list[str] = []

    floors = informative = rel_hi = rel_lo = None
    uninformative: tuple[int, ...] = ()
    rounding_out = None
    if not tolerance and m.unavailable is None and m.rounding is not None:
        rounding = np.asarray(m.rounding, dtype=np.float64)
        floors, informative = _floors(m)
        uninformative = tuple(int(b) for b in np.flatnonzero(~informative))
        if informative.any():
            rounding_out = float(rounding[informative].max())
        other = np.asarray(m.rel_other, dtype=np.float64).reshape(n_el, -1)
        rel_hi, rel_lo = (rel_rows, other) if m.f64 else (other, rel_rows)
        if uninformative and informative.any():
            notes.append(
                f"{len(uninformative)} of {len(informative)} examples are uninformative (their output is at "
                "rounding level, e.g. a blank frame through a normalisation) and were set aside: "
                f"{list(uninformative)[:8]}"
            )

    for i in range(n_el):
        if not m.defined[i]:
            verdicts[i], methods[i], reasons[i] = "broken", "stride", OUTSIDE_STRIDE
            rel[i] = abs_error[i] = np.nan
            continue
        if not (m.y_finite and m.finite[i]):
            verdicts[i], methods[i] = "nonfinite", "nonfinite"
            reasons[i] = "f(x) has NaN or inf" if not m.y_finite else "f(g·x) has NaN or inf"
            continue
        if exact[i]:
            verdicts[i], methods[i], reasons[i] = "equivariant", "exact", "f(g·x) equals g·f(x) bit for bit"
            continue
        if tolerance:
            methods[i] = "tolerance"
            verdicts[i], reasons[i] = _tolerance(m, rel, rtol, atol, i)
            floor_out[i] = rounding_bound(m.dtype, m.size)
            continue
        if abs_error[i] > 0 and (np.isnan(rel[i]) or rel[i] == 0):
            verdicts[i], methods[i] = "undecided", "undecided"
            reasons[i] = "the relative error underflowed or is undefined; decide with atol"
            continue
        other_name = "float32" if m.f64 else "float64"
        if m.unavailable is not None or floors is None:
            verdicts[i], methods[i] = "undecided", "undecided"
            why = m.unavailable or "no second precision was run"
            reasons[i] = f"{why}; give rtol or atol to decide by tolerance"
            continue
        if m.other_finite is not None and not m.other_finite[i]:
            verdicts[i], methods[i] = "undecided", "undecided"
            reasons[i] = f"the {other_name} re-run of this element is not finite; give rtol or atol to decide"
            continue
        methods[i] = "float64"
        if not informative.any():
            verdicts[i], methods[i] = "undecided", "undecided"
            reasons[i] = (
                "every example's output is at rounding level (uninformative), so no error can be resolved; "
                "check other inputs, or give rtol or atol"
            )
            continue
        hi, lo = rel_hi[i], rel_lo[i]
        rel64[i] = _max(hi, informative)
        own = _own_floors(m, np.where(lo == 0, _max(lo, informative), lo))  # bit-exact in float32: no scale
        floors_i = np.fmax(floors, own)  # an input f(x) rounds exactly (integers) says little about g·x
        evidence = informative & (hi > floors_i)
        diverged = np.zeros_like(evidence)
        if not m.f64:
            diverged = evidence & (hi > DIVERGENCE * (lo + np.asarray(m.rounding) + m.eps))
        clean = evidence & ~diverged
        ratio = np.where(informative, hi / floors_i, -np.inf)
        decisive = int(np.argmax(np.where(clean, ratio, -np.inf))) if clean.any() else int(np.argmax(ratio))
        floor_out[i] = floors_i[decisive]
        if clean.any():
            value = float(hi[decisive])
            resolution = 0.0
            if m.resolution is not None:
                resolution = _max(np.asarray(m.resolution, np.float64).reshape(n_el, -1)[i], clean)
                resolution = 0.0 if np.isnan(resolution) else RESOLUTION_MARGIN * resolution
            tol = m.resampling_tolerance
            if resolution > 0 and value <= resolution:
                verdicts[i] = "approximate"
                reasons[i] = (
                    f"structural float64 error {value:.1e} is within the measured resolution {resolution:.1e} of "
                    "the stored values (parameters, constants or group elements rounded to their precision)"
                )
            elif tol is not None and value <= tol:
                verdicts[i] = "approximate"
                reasons[i] = (
                    f"structural error {value:.1e} within the resampling tolerance {tol:.1e} "
                    "(interpolation is not an exact group action on a pixel grid)"
                )
            else:
                reasons[i] = f"structural: float64 error {value:.1e} stays above the floor {floors_i[decisive]:.1e}"
                if resolution > 0:
                    reasons[i] += f" and the resolution {resolution:.1e}"
            continue
        if diverged.any():
            worst_lo = _max(lo, diverged)
            level = DIVERGENCE * (_max(np.asarray(m.rounding), diverged) + m.eps)
            if worst_lo <= level:
                verdicts[i] = "equivariant"
                reasons[i] = (
                    f"the float64 run diverged from f's own (a precision-dependent branch); f's own error "
                    f"{worst_lo:.1e} is at its rounding level {level:.1e}"
                )
            else:
                verdicts[i], methods[i] = "undecided", "undecided"
                reasons[i] = (
                    f"the float64 run diverged from f's own (a precision-dependent branch) and f's own error "
                    f"{worst_lo:.1e} is above its rounding level {level:.1e}; give rtol or atol to decide"
                )
            continue
        verdicts[i] = "equivariant"
        reasons[i] = f"rounding: {other_name} error {rel64[i]:.1e} is below the floor on every informative example"
        if m.f64:
            reasons[i] = f"rounding: float64 error {rel64[i]:.1e} is below the floor on every informative example"
    return Decision(
        verdicts=tuple(verdicts),
        reasons=tuple(reasons),
        methods=tuple(methods),
        rel_error=rel,
        abs_error=abs_error,
        rel_error64=rel64,
        noise_floor=floor_out,
        rounding=rounding_out,
        uninformative=uninformative,
        notes=tuple(notes),
    )


def beyond_resolution(m: Measurements, stored_eps: float) -> np.ndarray:
    """Elements whose float64 error no resolution probe could excuse: above ``RESOLUTION_MARGIN ·
    PROBE_REACH`` times f(x)'s rounding (at least one ulp), scaled from the program's precision to
    that of the stored values (``stored_eps``), on some informative example (an uninformative one,
    whose output is rounding, decides nothing). The probe is not run for them."""
    n_el = len(m.abs_error)
    if m.rounding is None or m.rel_other is None:
        return np.zeros(n_el, dtype=bool)
    eps_lo = float(np.finfo(np.float32).eps) if m.f64 else m.eps
    _, informative = _floors(m)
    rounding = np.asarray(m.rounding, np.float64)[informative]
    rounding = float(np.max(rounding, initial=0.0))
    reach = RESOLUTION_MARGIN * PROBE_REACH * max(rounding, eps_lo) * stored_eps / eps_lo
    hi = np.asarray(m.rel if m.f64 else m.rel_other, np.float64).reshape(n_el, -1)[:, informative]
    worst = np.max(np.where(np.isnan(hi), -np.inf, hi), axis=1, initial=-np.inf)
    return worst > reach


def candidates(m: Measurements) -> np.ndarray:
    """Elements with evidence of structure (before resolution): those worth a resolution probe."""
    if m.rounding is None or m.rel_other is None or m.unavailable is not None:
        return np.zeros(len(m.abs_error), dtype=bool)
    decision = decide(dataclasses.replace(m, resolution=None, resampling_tolerance=None))
    return np.asarray(
        [v == "broken" and meth == "float64" for v, meth in zip(decision.verdicts, decision.methods, strict=True)]
    )
