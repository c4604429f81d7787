"""How much does a Lie derivative cost compared with one forward pass?

Prints, measured side by side in one run on the same model and batch of 28×28 inputs, the median
time of ``equivax.lie.lie_derivative`` (one jitted ``jax.jvp`` plus the Fourier generator) divided
by the median time of one jitted forward pass, for the equivax CNN and P4CNN and each generator.
Both are timed through the same path (the module split into graph and state once per call), after
a warm-up call that compiles them. Target: Lie derivative / forward ≤ 3.

Usage: python benchmarks/lie_vs_forward.py [--repeats 15] [--batch 32]
"""

from __future__ import annotations

import argparse
import functools

import jax
import numpy as np
from check_vs_forward import median_seconds
from flax import nnx

from equivax import lie
from equivax.nn import CNN, P4CNN


def timings(model: nnx.Module, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds of one forward pass and of the Lie derivative for each generator."""
    graphdef, _ = nnx.split(model)
    run = jax.jit(lambda state, z: nnx.merge(graphdef, state)(z))
    out = {"forward": median_seconds(lambda: run(nnx.split(model)[1], x).block_until_ready(), repeats)}
    for generator in ("translate_x", "rotation"):
        lie_call = functools.partial(lie.lie_derivative, model, x, generator)
        out[generator] = median_seconds(lambda call=lie_call: call().block_until_ready(), repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    print(f"machine: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"batch {args.batch} x 28x28x1, medians of {args.repeats} runs after a warm-up")
    header = f"{'model':8} {'generator':12} {'forward s':>10} {'lie s':>10} {'lie/forward':>12}"
    print(header)
    print("-" * len(header))
    x = np.random.default_rng(0).standard_normal((args.batch, 28, 28, 1)).astype(np.float32)
    worst = 0.0
    for name, model in [("CNN", CNN(rngs=nnx.Rngs(0))), ("P4CNN", P4CNN(rngs=nnx.Rngs(0)))]:
        t = timings(model, x, args.repeats)
        for generator in ("translate_x", "rotation"):
            ratio = t[generator] / t["forward"]
            worst = max(worst, ratio)
            print(f"{name:8} {generator:12} {t['forward']:10.4f} {t[generator]:10.4f} {ratio:12.2f}")
    print(f"target: lie/forward <= 3 (worst here {worst:.2f})")


if __name__ == "__main__":
    main()
