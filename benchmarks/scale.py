"""Scale: check cost against the forward-pass floor as |G| grows, compile counts of a property run,
memory with and without chunks, and sharding over (virtual) devices.

Prints, each measured side by side in one run:

1. check / floor for |G| = 4, 8, 64 circular shifts of a 4-layer circular CNN, for the P4CNN under
   C4 and for a larger p4m model (P4MCNN, 56×56) under D4. ``floor`` is one jitted forward pass over
   the (|G| + 1)·N batch a check must evaluate; ``tol`` is ``check(..., rtol=1e-4)``, ``cal`` the
   default calibrated check (with its float64 re-run where needed). Target: tol/floor ≤ 1.15 at |G| = 8.
2. A 200-example Hypothesis property run: traces of f, programs compiled, wall time.
3. Memory at |G| = 256: XLA's temporary buffers for the compiled check without chunks and with
   chunks of 16 and 64 (``equivax.compiled_memory``), and the peak resident memory of a process
   running each check.
4. The same check on 1 and on 4 devices (a subprocess with 4 virtual CPU devices): wall time.

Usage: python benchmarks/scale.py [--repeats 15] [--skip-subprocesses]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
from check_vs_forward import median_seconds, model
from flax import nnx
from hypothesis import given, settings

import equivax
from equivax import actions, groups, strategies
from equivax.nn import P4CNN, P4MCNN
from equivax.precision import retyped


def ratio_row(name, f, x, group, out_action, repeats):
    n = len(group) - 1
    forward = jax.jit(f)
    big = jnp.concatenate([x] * (n + 1))
    floor = median_seconds(lambda: jax.block_until_ready(forward(big)), repeats)
    tol = median_seconds(lambda: equivax.check(f, x, group, out_action=out_action, rtol=1e-4), repeats)
    cal = median_seconds(lambda: equivax.check(f, x, group, out_action=out_action), repeats)
    closed = jax.make_jaxpr(f)(big)  # the float64 re-run cannot be cheaper than f over the batch in float64
    with jax.enable_x64(True):
        forward64 = jax.jit(retyped(closed, jnp.float64))
        big64 = np.asarray(big, np.float64)
        floor64 = median_seconds(lambda: jax.block_until_ready(forward64(big64)), repeats)
    result = equivax.check(f, x, group, out_action=out_action)
    by = ",".join(sorted(set(result.methods)))
    summary = result.summary().split(": ")[1]
    print(
        f"{name:44} {n:5d} {floor:9.4f} {tol / floor:9.2f} {cal / floor:9.2f} {floor64 / floor:9.2f}  {summary} [{by}]"
    )


def ratios(repeats: int) -> None:
    print("\n1. check / floor (medians of", repeats, "runs, compilation excluded)")
    print(f"{'case':44} {'|G|':>5} {'floor s':>9} {'tol/floor':>9} {'cal/floor':>9} {'f64/floor':>9}  verdicts")
    x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    for n in (4, 8, 64):
        f, _ = model(16, readout=True)
        shifts = [(i // 8 + 1, i % 8) for i in range(n)]
        group = groups.translations(32, 32, shifts=shifts)
        ratio_row("circular CNN w=16, N=8, 32x32, shifts, invariant", f, x, group, actions.trivial(), repeats)
    mnist = jax.random.normal(jax.random.key(2), (8, 28, 28, 1))
    ratio_row(
        "P4CNN, N=8, 28x28, C4, invariant",
        P4CNN(rngs=nnx.Rngs(0)),
        mnist,
        groups.rotations(),
        actions.trivial(),
        repeats,
    )
    large = jax.random.normal(jax.random.key(3), (4, 56, 56, 1))
    ratio_row(
        "P4MCNN, N=4, 56x56, D4, invariant",
        P4MCNN(rngs=nnx.Rngs(0)),
        large,
        groups.dihedral(),
        actions.trivial(),
        repeats,
    )


def property_run() -> None:
    print("\n2. a 200-example Hypothesis run: a circular conv, one drawn shift of 16x16 images per example")
    traces = []
    weights = jax.random.normal(jax.random.key(0), (3, 3, 1, 4)) / 3

    def layer(x):
        traces.append(1)
        return equivax.zoo.circular_conv(weights)(x)

    group = groups.translations(16, 16)
    before = equivax.cache_info()

    @settings(max_examples=200, deadline=None, database=None)
    @given(strategies.cases(group, (2, 16, 16, 1)))
    def prop(case):
        equivax.assert_equivariant(layer, case.x, group, elements=[case.g])

    start = time.perf_counter()
    prop()
    seconds = time.perf_counter() - start
    after = equivax.cache_info()
    programs = after.programs - before.programs
    print(
        f"   200 examples in {seconds:.1f} s; f traced {len(traces)} times; {programs} check program(s) compiled, "
        f"{after.hits - before.hits} re-used"
    )


MEMORY_CHILD = textwrap.dedent(
    """
    import resource, sys, jax, jax.numpy as jnp, equivax
    from equivax import groups, zoo
    chunk = None if sys.argv[1] == "none" else int(sys.argv[1])
    w = jax.random.normal(jax.random.key(0), (3, 3, 16, 16)) / 12
    f = lambda x: jnp.tanh(zoo.circular_conv(w)(zoo.circular_conv(w)(x)))
    x = jax.random.normal(jax.random.key(1), (8, 64, 64, 16))
    group = groups.translations(64, 64, shifts=[(i // 64, i % 64) for i in range(1, 257)])
    equivax.check(f, x, group, chunk_size=chunk if chunk else 256, rtol=1e-3)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """
)


def memory(subprocesses: bool) -> None:
    print("\n3. memory at |G| = 256 (8 x 64x64x16 inputs, two circular 3x3 convs with 16 channels)")
    w = jax.random.normal(jax.random.key(0), (3, 3, 16, 16)) / 12
    f = lambda x: jnp.tanh(equivax.zoo.circular_conv(w)(equivax.zoo.circular_conv(w)(x)))  # noqa: E731
    x = jax.random.normal(jax.random.key(1), (8, 64, 64, 16))
    for n in (64, 256):
        group = groups.translations(64, 64, shifts=[(i // 64, i % 64) for i in range(1, n + 1)])
        row = []
        for chunk in (n, 64, 16):
            row.append(f"chunk {chunk:3d}: {equivax.compiled_memory(f, x, group, chunk_size=chunk) / 2**20:7.1f} MiB")
        print(f"   |G| = {n:3d}  XLA temporaries  " + "   ".join(row))
    if subprocesses:
        for chunk in ("none", "16"):
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_CHILD, chunk], capture_output=True, text=True, check=True
            )
            label = "all 256 at once" if chunk == "none" else f"chunks of {chunk}"
            print(f"   |G| = 256, {label:16} peak resident memory of the process: {float(out.stdout):7.0f} MiB")


SHARD_CHILD = textwrap.dedent(
    """
    import statistics, time, jax, jax.numpy as jnp, equivax
    from equivax import groups, zoo
    w = jax.random.normal(jax.random.key(0), (3, 3, 8, 8)) / 8
    f = lambda x: jnp.tanh(zoo.circular_conv(w)(x))
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 8))
    group = groups.translations(32, 32, shifts=[(i // 32, i % 32) for i in range(1, 65)])
    for devices in (jax.devices()[:1], jax.devices()):
        run = lambda: equivax.check(f, x, group, rtol=1e-3, devices=devices)
        result = run()
        times = []
        for _ in range(7):
            start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
        print(f"   {len(devices)} device(s): {statistics.median(times):.4f} s (result on {result.devices} device(s))")
    """
)


def sharding() -> None:
    print("\n4. |G| = 64 shifts on 1 and on 4 virtual CPU devices (XLA_FLAGS host device count 4)")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, "-c", SHARD_CHILD], capture_output=True, text=True, env=env, check=True)
    print(out.stdout.rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-subprocesses", action="store_true")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"machine: {device.device_kind} ({jax.default_backend()}), {os.cpu_count()} cores, jax {jax.__version__}")
    ratios(args.repeats)
    property_run()
    memory(not args.skip_subprocesses)
    if not args.skip_subprocesses:
        sharding()


if __name__ == "__main__":
    main()
