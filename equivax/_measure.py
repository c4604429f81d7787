"""Run every program a verdict needs and collect what they measured, per output part.

1. The compiled check in f's own precision: per element and example, the relative error.
2. Only for elements that are measurable and not bit-exact: the same program in the other
   precision (float64, or float32 for a float64 program), which gives each example's rounding.
3. Where float32 rounding has saturated, or f jumps at thresholds (integers, floor, argmax): the
   float64 program on x nudged by 4 float64 ulps (the program's own float64 sensitivity, measured).
4. Only for elements with evidence of structure, and only when the program stores values below
   float64 (parameters, closed-over arrays, floating group elements): two float64 runs with those
   values moved by half an ulp of their own precision, which measure the resolution; not when
   every such element's error is beyond what the probe could read (``verdicts.beyond_resolution``).

Nothing here decides: ``equivax.verdicts.decide`` does, from the ``Measurements`` returned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equivax import verdicts
from equivax._kernel import batch_size
from equivax._program import Program, eps, other_precision
from equivax._statistics import batched, relative_rows
from equivax.precision import RetypeError

__all__ = ["SATURATED_ROUNDING", "measure"]

#: Above this measured float32 rounding, float32 has lost most digits and no longer tells how much
#: the program amplifies rounding; float64's own sensitivity is then measured directly.
SATURATED_ROUNDING = 1e-3

_EPS64 = eps(np.float64)


def _parts(y: Any, each_output: bool) -> list[Any]:
    return jax.tree.leaves(y) if each_output else [y]


def _nudged(x: Any) -> Any:
    rng = np.random.default_rng(0)

    def nudge(leaf: Any) -> Any:
        leaf = np.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            return leaf
        wide = np.complex128 if np.iscomplexobj(leaf) else np.float64
        return leaf.astype(wide) * (1 + 4 * _EPS64 * rng.choice([-1.0, 1.0], size=leaf.shape))

    return jax.tree.map(nudge, x)


def _scatter(rows: np.ndarray, index: np.ndarray, total: int, fill: Any) -> np.ndarray:
    out = np.full((total, *rows.shape[1:]), fill, dtype=rows.dtype)
    out[index] = rows
    return out


@dataclasses.dataclass
class Measured:
    """f(x) in its own precision, the raw statistics, and one ``Measurements`` per output part."""

    y: Any
    stats: dict[str, Any]
    parts: list[verdicts.Measurements]


def measure(
    program: Program,
    consts: list[Any],
    args: tuple[Any, ...],
    *,
    tolerance: bool,
    resampling_tolerance: float | None = None,
) -> Measured:
    f64 = program.coarsest_eps <= _EPS64
    other = np.float32 if f64 else np.float64
    if not tolerance:
        program.prepare(other)  # compiled on another core while the first run compiles and runs
    return _measure(program, consts, args, other, tolerance, resampling_tolerance)


def _measure(
    program: Program,
    consts: list[Any],
    args: tuple[Any, ...],
    other: Any,
    tolerance: bool,
    resampling_tolerance: float | None,
) -> Measured:
    params, x, elements = args
    f64 = other == np.float32
    y, stats = program(consts, *args)
    if not stats["x_finite"]:
        raise ValueError("x contains NaN or inf; check equivariance on finite inputs")
    n = batch_size(x)
    x_leaves = jax.tree.leaves(x)
    floats = [leaf.dtype for leaf in x_leaves if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    # The precision x is given in; for integer inputs (token ids, indices), the program's own.
    dtype = str(floats[0] if floats else np.dtype(jnp.finfo(np.float64 if f64 else np.float32).dtype))
    size = int(sum(np.prod(np.shape(leaf)[1:]) for leaf in x_leaves))
    y_parts = _parts(y, program.kernel.each_output)
    base = []
    for p, part in enumerate(stats["parts"]):
        base.append(
            verdicts.Measurements(
                rel=np.asarray(part["rel"], np.float64).reshape(len(elements), -1),
                abs_error=2 * np.asarray(part["abs_half"], np.float64),
                finite=np.asarray(part["finite"], bool),
                defined=np.asarray(part["defined"], bool),
                y_finite=bool(np.asarray(stats["y_finite"])[p]),
                eps=program.coarsest_eps,
                dtype=dtype,
                size=size,
                f64=f64,
                resampling_tolerance=resampling_tolerance,
            )
        )
    if tolerance:
        return Measured(y, stats, base)
    todo = np.zeros(len(elements), bool)
    for m in base:
        todo |= m.defined & m.finite & m.y_finite & (m.abs_error > 0)
    if not todo.any():  # nothing for a second precision to explain: skip the re-run
        return Measured(y, stats, base)

    subset = np.flatnonzero(todo)
    chosen = np.asarray(elements)[subset]
    other_name = np.dtype(other).name
    try:
        with other_precision():
            y_other, stats_other = program.run_in(other, consts, params, x, chosen)
            y_other = jax.tree.map(np.asarray, y_other)
    except RetypeError as err:
        return Measured(y, stats, [dataclasses.replace(m, unavailable=f"no {other_name} re-run: {err}") for m in base])
    except Exception as err:  # noqa: BLE001 - a backend without float64, a compile failure
        why = f"the {other_name} re-run failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        return Measured(y, stats, [dataclasses.replace(m, unavailable=why) for m in base])

    other_parts = _parts(y_other, program.kernel.each_output)
    hi_parts = y_parts if f64 else other_parts
    measured = []
    for p, m in enumerate(base):
        part_other = stats_other["parts"][p]
        is_batched = batched(jax.tree.leaves(y_parts[p]), n)
        lo, hi = (other_parts[p], y_parts[p]) if f64 else (y_parts[p], other_parts[p])
        rounding = relative_rows(lo, hi, is_batched)
        rel_other = _scatter(
            np.asarray(part_other["rel"], np.float64).reshape(len(subset), -1), subset, len(elements), np.nan
        )
        other_finite = _scatter(np.asarray(part_other["finite"], bool), subset, len(elements), True)
        measured.append(dataclasses.replace(m, rel_other=rel_other, other_finite=other_finite, rounding=rounding))

    saturated = any(np.nanmax(np.append(m.rounding, 0)) > SATURATED_ROUNDING for m in measured)
    # Integer outputs and steps (bins, one-hots, class ids) jump at thresholds: data on a threshold
    # (distances on a grid of bin edges) flips under any rounding, in float64 as in float32, and
    # only a nudge of x shows it.
    stepped = program.steps or any(not jnp.issubdtype(np.asarray(v).dtype, jnp.inexact) for v in jax.tree.leaves(y))
    if saturated or stepped:
        with other_precision():
            y_nudged, _ = program.run_in(np.float64, consts, params, _nudged(x), chosen)
            nudged_parts = _parts(jax.tree.map(np.asarray, y_nudged), program.kernel.each_output)
        measured = [
            dataclasses.replace(
                m, sensitivity=relative_rows(nudged_parts[p], hi_parts[p], batched(jax.tree.leaves(y_parts[p]), n))
            )
            for p, m in enumerate(measured)
        ]

    stored_eps = program.stored_eps(consts, params, np.asarray(elements))
    if stored_eps <= _EPS64:
        return Measured(y, stats, measured)
    suspects = np.zeros(len(elements), bool)
    beyond = [verdicts.beyond_resolution(m, stored_eps) for m in measured]
    for m, far in zip(measured, beyond, strict=True):
        suspects |= verdicts.candidates(m) & ~far
    if suspects.any():
        measured = _resolution(program, consts, args, measured, subset)
    # An error too large for any probe to excuse is judged without one, whether or not it ran.
    measured = [
        dataclasses.replace(m, resolution=np.where(far[:, None], np.nan, m.resolution))
        if m.resolution is not None and far.any()
        else m
        for m, far in zip(measured, beyond, strict=True)
    ]
    return Measured(y, stats, measured)


def _resolution(program: Program, consts: list[Any], args: tuple[Any, ...], measured: list[Any], index: np.ndarray):
    """How far the float64 error moves when the stored values move by half an ulp of their own
    precision. Run on the same elements as the re-run, so its compiled program serves again.

    The two runs move every stored value by the same half ulp in opposite directions. The error
    vector moves by ``±p`` (to first order), so ``r₊² + r₋² − 2 r₀² = 2‖p‖²`` whatever the angle
    between ``p`` and the error: the difference ``|r₊ − r₀|`` alone reads ``‖p‖²/2r₀`` when ``p``
    is orthogonal to a larger error, as random perturbations nearly always are.
    """
    params, x, elements = args
    chosen = np.asarray(elements)[index]
    moved = []
    with other_precision():
        for flip in (False, True):
            _, stats_p = program.run_in(np.float64, consts, params, x, chosen, seed=1, flip=flip)
            moved.append([np.asarray(part["rel"], np.float64).reshape(len(index), -1) for part in stats_p["parts"]])
    out = []
    for p, m in enumerate(measured):
        hi = (m.rel if m.f64 else m.rel_other)[index]
        plus, minus = moved[0][p], moved[1][p]
        spread = np.sqrt(np.maximum((plus**2 + minus**2) / 2 - hi**2, 0))
        shift = np.maximum(spread, np.maximum(np.abs(plus - hi), np.abs(minus - hi)))
        out.append(dataclasses.replace(m, resolution=_scatter(shift, index, len(elements), np.nan)))
    return out
