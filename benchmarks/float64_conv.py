"""Float64 convolutions on CPU: XLA's own loop against the matrix product of equivax._patches.

The float64 re-run of a calibrated check widens every convolution to float64, which XLA on CPU
emits as a loop of its own. ``equivax._patches`` writes the ones it takes (``applies``) as one
float64 matrix product. This script prints, side by side in one process:

1. for 3x3 convolutions of ``--examples`` examples of ``--size``² pixels, over a grid of input and
   output channels: the run time of the products over XLA's (medians of 7 runs after a warm-up),
   and ``*`` where ``applies`` takes that convolution;
2. a calibrated check of benchmarks/first_verdict.py's residual network (16 channels, under D4),
   in fresh processes with and without the products (``EQUIVAX_CONV_PATCHES``): the first verdict
   and the median of later checks in the same process.

Usage: python benchmarks/float64_conv.py [--examples 8] [--size 28] [--channels 1,2,4,8,16,32] [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent(
    """
    import json, time
    import jax, jax.numpy as jnp
    import equivax
    from equivax import actions, groups

    def conv(w, x):
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def symmetric(w):
        ws = [jnp.rot90(w, k, axes=(0, 1)) for k in range(4)]
        return sum(ws + [jnp.flip(v, axis=1) for v in ws]) / 8

    def resnet(params, x):
        x = conv(symmetric(params["stem"]), x)
        for a, b in params["blocks"]:
            x = x + conv(symmetric(b), jax.nn.relu(conv(symmetric(a), x)))
        return jnp.mean(x, axis=(1, 2))

    keys = jax.random.split(jax.random.key(0), 7)
    params = {
        "stem": jax.random.normal(keys[0], (3, 3, 1, 16)) / 4,
        "blocks": [
            (jax.random.normal(keys[i], (3, 3, 16, 16)) / 12, jax.random.normal(keys[i + 1], (3, 3, 16, 16)) / 12)
            for i in (1, 3, 5)
        ],
    }
    model = jax.tree_util.Partial(resnet, params)
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    times = []
    for _ in range(12):
        t = time.perf_counter()
        result = equivax.check(model, x, groups.dihedral(), out_action=actions.trivial())
        times.append(time.perf_counter() - t)
    print(json.dumps({"first": times[0], "later": sorted(times[-5:])[2], "verdicts": list(result.verdicts)}))
    """
)


def grid(examples: int, size: int, channels: list[int]) -> None:
    import jax
    import numpy as np
    from jax import lax

    from equivax import _patches

    jax.config.update("jax_enable_x64", True)

    def run_time(fn, *args):
        compiled = jax.jit(fn).lower(*args).compile()
        compiled(*args).block_until_ready()
        times = []
        for _ in range(7):
            t = time.perf_counter()
            compiled(*args).block_until_ready()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    rng = np.random.default_rng(0)
    print(f"products / XLA's float64 convolution, run time, {examples} x {size}x{size}, 3x3, stride 1")
    print("(* where equivax uses the products)")
    print("in \\ out " + "".join(f"{c:>8d}" for c in channels))
    for c_in in channels:
        row = []
        for c_out in channels:
            x, w = rng.normal(size=(examples, size, size, c_in)), rng.normal(size=(3, 3, c_in, c_out))

            def native(a, b):
                return lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

            params = jax.make_jaxpr(native)(x, w).eqns[0].params
            products = functools.partial(_patches.patches_conv, **params)
            ratio = run_time(products, x, w) / run_time(native, x, w)
            mark = "*" if _patches.applies(params, x.shape, w.shape, 8) else " "
            row.append(f"{ratio:7.2f}{mark}")
        print(f"{c_in:>8d} " + "".join(row), flush=True)


def model(runs: int) -> None:
    print(f"\nresidual network (16 channels) under D4, calibrated check, medians of {runs} fresh processes")
    print(f"{'products':<10}{'first':>8}{'later':>8}  verdicts")
    rows = {}
    for flag in ("0", "1"):
        env = {**os.environ, "EQUIVAX_CONV_PATCHES": flag, "EQUIVAX_COMPILATION_CACHE": "0"}
        out = [
            json.loads(subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
            for _ in range(runs)
        ]  # fmt: skip
        rows[flag] = {k: statistics.median(r[k] for r in out) for k in ("first", "later")}
        name = "on" if flag == "1" else "off"
        print(f"{name:<10}{rows[flag]['first']:8.2f}{rows[flag]['later']:8.3f}  {sorted(set(out[0]['verdicts']))}")
    first, later = (rows["1"][k] / rows["0"][k] for k in ("first", "later"))
    print(f"on / off: first {first:.2f}, later {later:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", default="1,2,4,8,16,32")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    grid(args.examples, args.size, [int(c) for c in args.channels.split(",")])
    model(args.runs)


if __name__ == "__main__":
    main()
