"""Command-line interface: ``equivax check`` runs the built-in examples offline.

``equivax check`` checks a handful of reference layers (see :mod:`equivax.zoo`) against the
symmetries they do and do not have, and prints one table per layer. Exit status 0 means every
verdict matched what the layer is known to satisfy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from equivax import actions, groups, zoo
from equivax.check import check
from equivax.result import CheckResult

__all__ = ["EXAMPLES", "main"]


@dataclasses.dataclass(frozen=True)
class Example:
    """A built-in check: a layer, a group, the actions, and whether it should pass."""

    name: str
    description: str
    expected_ok: bool
    run: Callable[[jax.Array], CheckResult]


def _weights(shape: tuple[int, ...], seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape) / jnp.sqrt(jnp.prod(jnp.asarray(shape[:-1])))


def _examples() -> dict[str, Example]:
    w = _weights((3, 3, 3, 8))
    shifts = groups.translations(16, 16)
    c4 = groups.rotations()
    found = [
        Example(
            "circular-conv",
            "3x3 convolution, circular padding, under all 255 circular shifts",
            True,
            lambda x: check(zoo.circular_conv(w), x, shifts),
        ),
        Example(
            "zero-padded-conv",
            "3x3 convolution, zero padding, under all circular shifts (borders break it)",
            False,
            lambda x: check(zoo.zero_padded_conv(w), x, shifts),
        ),
        Example(
            "stride2-maxpool",
            "2x2 max pooling, stride 2, under all shifts with the strided action (odd shifts break it)",
            False,
            lambda x: check(zoo.max_pool(2), x, shifts, out_action=actions.strided(2)),
        ),
        Example(
            "global-mean",
            "global average pooling, invariance under p4m (all shifts, turns and mirrors)",
            True,
            lambda x: check(zoo.global_mean, x, groups.p4m(16), out_action=actions.trivial()),
        ),
        Example(
            "p4-lifting",
            "p4 lifting convolution (four rotated filters) under C4 with the regular action",
            True,
            lambda x: check(zoo.p4_lifting(w), x, c4, out_action=actions.regular(c4)),
        ),
        Example(
            "p4-lifting-wrong-way",
            "p4 lifting with filters turned the wrong way (breaks r1 and r3, keeps r2)",
            False,
            lambda x: check(zoo.p4_lifting(w, clockwise=True), x, c4, out_action=actions.regular(c4)),
        ),
    ]
    return {e.name: e for e in found}


EXAMPLES = tuple(_examples())


def _cmd_check(args: argparse.Namespace) -> int:
    examples = _examples()
    names = args.example or list(examples)
    unknown = [n for n in names if n not in examples]
    if unknown:
        print(f"unknown example {unknown[0]!r}; choose from: {', '.join(examples)}", file=sys.stderr)
        return 2
    x = jax.random.normal(jax.random.key(args.seed), (args.batch, 16, 16, 3))
    records, surprises = [], 0
    for name in names:
        example = examples[name]
        start = time.perf_counter()
        result = example.run(x)
        seconds = time.perf_counter() - start
        as_expected = result.ok == example.expected_ok
        surprises += not as_expected
        records.append({"example": name, "expected_ok": example.expected_ok, **result.to_dict()})
        if not args.json:
            mark = "as expected" if as_expected else "UNEXPECTED"
            print(f"== {name}: {example.description}")
            print(f"   {result.summary()} [{mark}, {seconds:.2f} s]")
            print("   " + result.table(max_rows=args.rows).replace("\n", "\n   "))
            print()
    if args.json:
        json.dump(records, sys.stdout, indent=2, default=str)
        print()
    else:
        print(f"{len(names) - surprises} of {len(names)} examples behaved as expected.")
    return 1 if surprises else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equivax", description="Verify equivariance of JAX functions.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser(
        "check",
        help="check the built-in example layers (offline, seconds)",
        description="Check built-in reference layers against the symmetries they do and do not have.",
    )
    p_check.add_argument("--example", action="append", help=f"run only this example (repeatable): {EXAMPLES}")
    p_check.add_argument("--batch", type=int, default=2, help="examples per batch (default 2)")
    p_check.add_argument("--seed", type=int, default=0, help="random seed of the input (default 0)")
    p_check.add_argument("--rows", type=int, default=4, help="table rows per example (default 4)")
    p_check.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p_check.set_defaults(handler=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``equivax`` console script."""
    args = _parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
