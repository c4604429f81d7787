"""What does localising the first break cost, next to checking the output alone?

Prints, for the P4CNN (``equivax.nn.P4CNN``, circular padding) on a batch of 28x28 inputs under p4
with ``groups.basic_elements`` (shifts by 1 and 2, every quarter turn):

* check: the first call of ``equivax.check`` on the model's logits (trace, compile, run, float64
  re-run): what a user pays to learn *whether* the model is invariant;
* layers: the first call of ``equivax.report`` (every layer's output checked in one program);
* operations: the first call of ``equivax.report(..., by="operation")`` (every traced operation
  whose output carries the symmetry, in one program);

each in a fresh process (so nothing is cached between them), the median of ``--repeats`` runs,
and the ratios to check. Only the call itself is timed, not Python's start or the imports.

Usage: python benchmarks/localize.py [--repeats 3] [--size 28] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODES = ("check", "layers", "operations")


def worker(mode: str, size: int, batch: int) -> dict[str, float]:
    """One first call in this process; returns its seconds and what was checked."""
    import jax
    from flax import nnx

    import equivax
    from equivax import actions, groups

    model = equivax.nn.P4CNN(padding="circular", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 1))
    group = groups.p4(size)
    elements = groups.basic_elements(group)
    start = time.perf_counter()
    if mode == "check":
        result = equivax.check(model, x, group, out_action=actions.trivial(), elements=elements)
        outputs, ok = 1, result.ok
    else:
        by = "operation" if mode == "operations" else "layer"
        found = equivax.report(model, x, group, elements=elements, by=by)
        outputs, ok = len(found.layers), found.ok
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "outputs": outputs, "ok": ok, "elements": len(elements)}


def measure(mode: str, size: int, batch: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", mode, "--size", str(size), "--batch", str(batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.batch)))
        return
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every mode alike
        for mode in MODES:
            runs[mode].append(measure(mode, args.size, args.batch))
    base = statistics.median(run["seconds"] for run in runs["check"])
    first = runs["check"][0]
    print(
        f"P4CNN (circular), input ({args.batch}, {args.size}, {args.size}, 1), p4, {first['elements']} elements; "
        f"first call in a fresh process, median of {args.repeats}"
    )
    print(f"{'':12} {'outputs checked':>16} {'seconds':>9} {'/ check':>8}")
    for mode in MODES:
        seconds = statistics.median(run["seconds"] for run in runs[mode])
        outputs = runs[mode][0]["outputs"]
        print(f"{mode:12} {outputs:>16} {seconds:>9.2f} {seconds / base:>8.2f}")


if __name__ == "__main__":
    main()
