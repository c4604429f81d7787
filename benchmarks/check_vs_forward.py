"""How much does a check cost compared with the forward passes it cannot avoid?

Prints, measured side by side in one run on the same model and input:

* check / floor: wall time of ``equivax.check`` over |G| = 8 elements divided by the time of one
  jitted forward pass over the (|G| + 1)·N batch it has to evaluate anyway. Reported with an
  explicit tolerance (no second precision) and in the default calibrated mode (float64 re-run).
* the speed-up over checking one element at a time: a hand-written Python loop of jitted
  per-element errors (``loop/tol``), and ``equivax.check(elements=[g])`` called per element, as a
  property test draws them (``1-by-1/cal``).
* the number of traces on a second call with the same shapes (must be 0), read from
  ``equivax.cache_info()``: f reads nothing that changed, so its fingerprint spares the trace.

Two models (equivariant feature maps; an invariant spatial-mean readout, whose float32 error is
rounding that only the float64 re-run can explain) at two sizes (a unit-test-sized one, where
dispatch overhead dominates, and a larger one, where compute does).

Usage: python benchmarks/check_vs_forward.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import equivax
from equivax import actions, groups, zoo


def model(width: int, readout: bool, depth: int = 4, seed: int = 0):
    """A stack of circular convolutions (shift-equivariant), optionally with a spatial mean."""
    keys = jax.random.split(jax.random.key(seed), depth)
    convs = [
        zoo.circular_conv(jax.random.normal(k, (3, 3, 3 if i == 0 else width, width)) / (3 * width**0.5))
        for i, k in enumerate(keys)
    ]

    def f(x):
        for conv in convs:
            x = jax.nn.relu(conv(x))
        return jnp.mean(x, axis=(1, 2)) if readout else x

    return f


def median_seconds(fn, repeats: int) -> float:
    fn()  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


SHIFTS = [(0, 1), (1, 0), (1, 1), (2, 3), (0, 5), (7, 0), (4, 4), (9, 2)]


def scenario(batch: int, size: int, width: int, readout: bool, repeats: int, chunk: int | None) -> dict[str, float]:
    f = model(width, readout)
    x = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
    group = groups.translations(size, size, shifts=SHIFTS)
    n_elements = len(group) - 1
    out_action = actions.trivial() if readout else actions.image()

    forward = jax.jit(f)
    big = jnp.concatenate([x] * (n_elements + 1))
    t_floor = median_seconds(lambda: forward(big).block_until_ready(), repeats)
    kw = {"out_action": out_action, "chunk_size": chunk}
    t_tol = median_seconds(lambda: equivax.check(f, x, group, rtol=1e-4, **kw), repeats)
    calibrated = equivax.check(f, x, group, **kw)
    t_cal = median_seconds(lambda: equivax.check(f, x, group, **kw), repeats)

    element_error = jax.jit(lambda g, x, y: jnp.max(jnp.abs(f(actions.image()(g, x)) - out_action(g, y))))

    def loop():
        y = forward(x)
        return [float(element_error(g, x, y)) for g in group.non_identity()]

    t_loop = median_seconds(loop, repeats)

    def check_loop():  # the checker itself, one element per call (as a property test draws them)
        return [equivax.check(f, x, group, elements=[g], **kw) for g in group.non_identity()]

    t_check_loop = median_seconds(check_loop, max(3, repeats // 3))
    before = equivax.cache_info().traces
    equivax.check(f, x, group, **kw)
    return {
        "floor": t_floor,
        "tol": t_tol,
        "cal": t_cal,
        "loop": t_loop,
        "check_loop": t_check_loop,
        "retraces": equivax.cache_info().traces - before,
        "methods": ",".join(sorted(set(calibrated.methods))),
        "ok": calibrated.ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    print(f"machine: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"|G| = {len(SHIFTS)} shifts; model: 4 circular 3x3 convs + ReLU; medians of {args.repeats} runs")
    header = (
        f"{'case':42} {'floor s':>8} {'tol/floor':>9} {'cal/floor':>9} {'loop/tol':>8} {'1-by-1/cal':>10}"
        f" {'retraces':>8}  decided by"
    )
    print(header)
    print("-" * len(header))
    worst_retraces = 0
    cases = [(2, 16, 8, None), (8, 32, 32, None), (8, 32, 32, 2)]
    for batch, size, width, chunk in cases:
        for readout in (False, True):
            r = scenario(batch, size, width, readout, args.repeats, chunk)
            name = f"N={batch} {size}x{size} w={width} {'invariant' if readout else 'equivariant'}"
            name += f" chunk={chunk}" if chunk else ""
            print(
                f"{name:42} {r['floor']:8.4f} {r['tol'] / r['floor']:9.2f} {r['cal'] / r['floor']:9.2f} "
                f"{r['loop'] / r['tol']:8.2f} {r['check_loop'] / r['cal']:10.2f} {r['retraces']:8d}  {r['methods']}"
            )
            assert r["ok"], "an exact model was flagged"
            worst_retraces = max(worst_retraces, r["retraces"])
    print("targets: tol/floor <= 1.3; cal/floor <= 3; speed-up over one-at-a-time >= 3; retraces 0")
    print("loop = a hand-written loop of jitted per-element errors; 1-by-1 = equivax.check(elements=[g]) per element")
    np.testing.assert_equal(worst_retraces, 0)


if __name__ == "__main__":
    main()
