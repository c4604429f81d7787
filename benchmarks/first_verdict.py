"""What users wait for: the first verdict in a fresh process, against the first jitted forward.

Each case runs in its own fresh Python process (so JAX's in-memory caches are empty) and prints:
import time, the first call of ``jax.jit(model)`` on the same batch (compile included), the first
verdict of the default (calibrated) check, and the first verdict of a tolerance check (no second
precision) in another fresh process; then where those seconds go: JAX tracing, lowering, XLA
compiling (``jax.monitoring`` events) and the rest (running, Python), the difference between the
default and the tolerance check being the cost of the second precision. The ratio *first verdict /
first jitted forward* is the figure of merit. The cases:

(a) a 4-layer circular CNN under 8 shifts;
(b) the P4CNN (equivax.nn) under C4, invariant logits;
(c) ``equivax.report`` on the P4CNN under p4m's basic elements;
(d) a 200-example Hypothesis property test of a circular conv (one drawn shift per example);
(e) an Equinox-style residual network (a callable pytree, ``jax.tree_util.Partial``) under D4.

Each is measured cold (persistent compilation cache off) and warm (the cache filled by an earlier
process), medians over ``--runs`` fresh processes.

Usage: python benchmarks/first_verdict.py [--runs 5] [--cases abcde]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import jax, jax.numpy as jnp, numpy as np
    import equivax
    from equivax import actions, groups, zoo
    imported = time.perf_counter() - start
    case, mode = sys.argv[1], sys.argv[2]
    rtol = 1e-3 if mode == "tolerance" else None

    PHASES = {
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
        "/jax/core/compile/backend_compile_duration": "compile",
    }
    spent = {}
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, seconds, **kw: spent.__setitem__(PHASES[name], spent.get(PHASES[name], 0.0) + seconds)
        if name in PHASES else None
    )
    phases = {}

    def timed(fn, what):
        spent.clear()
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(jax.tree.leaves(out) if not hasattr(out, "ok") else 0)
        seconds = time.perf_counter() - t
        phases[what] = {**{k: spent.get(k, 0.0) for k in ("trace", "lower", "compile")}}
        phases[what]["rest"] = seconds - sum(phases[what].values())
        return seconds, out

    if case == "a":
        keys = jax.random.split(jax.random.key(0), 4)
        convs = [zoo.circular_conv(jax.random.normal(k, (3, 3, 1 if i == 0 else 8, 8)) / 8) for i, k in enumerate(keys)]
        def model(x):
            for conv in convs:
                x = jax.nn.relu(conv(x))
            return x
        x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
        group = groups.translations(28, shifts=[(0, i) for i in range(1, 9)])
        forward, _ = timed(lambda: jax.jit(model)(x), "forward")
        verdict, result = timed(lambda: equivax.check(model, x, group, rtol=rtol), "verdict")
    elif case in ("b", "c"):
        from flax import nnx
        from equivax.nn import P4CNN
        model = P4CNN(rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
        graphdef, state = nnx.split(model)
        forward, _ = timed(lambda: jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x), "forward")
        if case == "b":
            verdict, result = timed(
                lambda: equivax.check(model, x, groups.rotations(), out_action=actions.trivial(), rtol=rtol), "verdict"
            )
        else:
            group = groups.p4m(28)
            verdict, result = timed(
                lambda: equivax.report(model, x, group, elements=groups.basic_elements(group), rtol=rtol), "verdict"
            )
    elif case == "d":
        from hypothesis import given, settings
        from equivax import strategies
        w = jax.random.normal(jax.random.key(0), (3, 3, 1, 4)) / 3
        layer = zoo.circular_conv(w)
        group = groups.translations(16, 16)
        x0 = jnp.zeros((2, 16, 16, 1))
        forward, _ = timed(lambda: jax.jit(layer)(x0), "forward")

        @settings(max_examples=200, deadline=None, database=None)
        @given(strategies.cases(group, (2, 16, 16, 1)))
        def prop(case):
            equivax.assert_equivariant(layer, case.x, group, elements=[case.g], rtol=rtol)

        verdict, result = timed(prop, "verdict")
    else:  # an Equinox-style residual network: parameters in a pytree, the model a callable pytree
        def conv(w, x):
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
            return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

        def symmetric(w):  # D4-symmetric filters
            ws = [jnp.rot90(w, k, axes=(0, 1)) for k in range(4)]
            ws += [jnp.flip(v, axis=1) for v in ws]
            return sum(ws) / 8

        def resnet(params, x):
            x = conv(symmetric(params["stem"]), x)
            for block in params["blocks"]:
                x = x + conv(symmetric(block[1]), jax.nn.relu(conv(symmetric(block[0]), x)))
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
        forward, _ = timed(lambda: jax.jit(resnet)(params, x), "forward")
        d4 = groups.dihedral()
        verdict, result = timed(lambda: equivax.check(model, x, d4, out_action=actions.trivial(), rtol=rtol), "verdict")
    t = time.perf_counter()
    equivax.block_until_compiled()  # a compilation started ahead that the verdict did not need
    settled = verdict + time.perf_counter() - t
    row = {"import": imported, "forward": forward, "verdict": verdict, "settled": settled, "phases": phases}
    print(json.dumps(row))
    """
)

NAMES = {
    "a": "4-layer CNN, 8 shifts",
    "b": "P4CNN, C4",
    "c": "report P4CNN, p4m basic",
    "d": "200-example property test",
    "e": "residual net (pytree), D4",
}


def run(case: str, mode: str, cache_dir: str | None, ahead: bool = False) -> dict[str, float]:
    env = {**os.environ}
    env.pop("EQUIVAX_PARALLEL_COMPILE", None)  # the default for this machine's core count
    if ahead:
        env["EQUIVAX_PARALLEL_COMPILE"] = "1"
    if cache_dir is None:
        env["EQUIVAX_COMPILATION_CACHE"] = "0"
    else:
        env.pop("EQUIVAX_COMPILATION_CACHE", None)
        env["XDG_CACHE_HOME"] = cache_dir
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, mode], env=env, capture_output=True, text=True, timeout=1200
    )
    if done.returncode != 0:
        raise RuntimeError(f"case {case} ({mode}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default="abcde")
    args = parser.parse_args()
    print(f"medians of {args.runs} fresh processes; seconds")
    header = (
        f"{'case':28} {'import':>7} {'jit fwd':>8} {'verdict':>8} {'ratio':>6} {'settled':>8} {'ahead':>7} "
        f"{'tol':>7} {'warm':>7}"
    )
    print(header)
    print("-" * len(header))
    phase_rows = {}
    for case in args.cases:
        cold = [run(case, "calibrated", None) for _ in range(args.runs)]
        ahead = [run(case, "calibrated", None, ahead=True) for _ in range(args.runs)]
        tol = [run(case, "tolerance", None) for _ in range(args.runs)]
        with tempfile.TemporaryDirectory() as cache:
            run(case, "calibrated", cache)  # fill the persistent cache
            warm = [run(case, "calibrated", cache) for _ in range(args.runs)]

        def med(rows, key):
            return statistics.median(r[key] for r in rows)

        def phase(rows, what):
            keys = ("trace", "lower", "compile", "rest")
            return {k: statistics.median(r["phases"][what][k] for r in rows) for k in keys}

        calibrated, tolerance = phase(cold, "verdict"), phase(tol, "verdict")
        phase_rows[case] = [
            ("first jitted forward", phase(cold, "forward")),
            ("verdict, rtol (f32 only)", tolerance),
            ("verdict, default", calibrated),
            ("default - rtol (2nd prec.)", {k: calibrated[k] - tolerance[k] for k in calibrated}),
        ]

        forward, verdict = med(cold, "forward"), med(cold, "verdict")
        print(
            f"{NAMES[case]:28} {med(cold, 'import'):7.2f} {forward:8.2f} {verdict:8.2f} {verdict / forward:6.2f} "
            f"{med(cold, 'settled'):8.2f} {med(ahead, 'verdict'):7.2f} {med(tol, 'verdict'):7.2f} "
            f"{med(warm, 'verdict'):7.2f}",
            flush=True,
        )
    print()
    print("where the cold seconds go (medians): JAX tracing, lowering to MLIR, XLA compiling, the rest (run, Python)")
    phase_header = f"{'case':28} {'run':26} {'trace':>6} {'lower':>6} {'compile':>8} {'rest':>6} {'total':>6}"
    print(phase_header)
    print("-" * len(phase_header))
    for case, rows in phase_rows.items():
        for label, parts in rows:
            total = sum(parts.values())
            print(
                f"{NAMES[case]:28} {label:26} {parts['trace']:6.2f} {parts['lower']:6.2f} {parts['compile']:8.2f} "
                f"{parts['rest']:6.2f} {total:6.2f}"
            )
    print()
    print("ratio: first verdict / first jitted forward (cold); settled: until no compilation started ahead is left;")
    print("ahead: first verdict with EQUIVAX_PARALLEL_COMPILE=1 (the other precision compiled on a second thread);")
    print("tol: first verdict with rtol (no float64 run);")
    print("warm: first verdict with the persistent compilation cache filled by an earlier process")


if __name__ == "__main__":
    main()
