"""Command-line interface: ``equivax demo``, ``equivax report`` and ``equivax check``.

* ``equivax demo`` checks the built-in CNN, MLP and P4CNN under shifts, quarter turns and mirrors,
  prints where each first breaks and writes an HTML report (offline).
* ``equivax report MODULE:FACTORY --group p4 --input-shape 28,28,1`` reports on your own model.
* ``equivax check`` checks a handful of reference layers (see ``equivax.zoo``) against the
  symmetries they do and do not have. Exit status 0 means every verdict matched what the layer
  is known to satisfy.

One concept, the command line, a little past the project's 450-line guide: every subcommand's
arguments, their one-line usage errors, and atomic output writing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from equivax import Report, actions, check, groups, render, report, zoo
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


#: Names of the built-in examples of ``equivax check``.
EXAMPLES = (
    "circular-conv",
    "zero-padded-conv",
    "stride2-maxpool",
    "global-mean",
    "p4-lifting",
    "p4-lifting-wrong-way",
)

#: The command line compiles with XLA's backend optimisation level 0: each program it builds runs
#: once or twice on small inputs, so compile time is nearly all of its time (measured: half the wall
#: time of the layer tests). Set XLA_FLAGS yourself to choose otherwise.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def _prefer_fast_compilation() -> None:
    """Ask XLA for quick compilation unless the user set XLA_FLAGS (no effect once JAX has started)."""
    os.environ.setdefault("XLA_FLAGS", FAST_COMPILE)


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


# ------------------------------------------------------------------------------------------------
# equivax report / equivax demo
# ------------------------------------------------------------------------------------------------

#: Group constructors by name, given the input's height and width.
GROUPS: dict[str, Callable[[int, int], groups.Group]] = {
    "translations": lambda h, w: groups.translations(h, w),
    "rotations": lambda h, w: groups.rotations(),
    "flips": lambda h, w: groups.flips(),
    "dihedral": lambda h, w: groups.dihedral(),
    "p4": lambda h, w: groups.p4(h),
    "p4m": lambda h, w: groups.p4m(h),
}


class UsageError(Exception):
    """A problem with the command line's arguments, reported in one line (exit status 2)."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


#: Report formats by file suffix; any other suffix needs --format.
SUFFIXES = {".html": "html", ".htm": "html", ".json": "json", ".md": "markdown", ".txt": "text"}


def _writable(path: str | None) -> None:
    """Fail before the check, not after it, when the output file cannot be written."""
    if path is None or path == "-":
        return
    target = pathlib.Path(path)
    folder = target.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: the folder {folder} does not exist")
    if target.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder; name a file inside it, like {target / 'report.html'}")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied; choose another -o")


def _format(path: str | None, chosen: str | None) -> str:
    """The report format: --format if given, else from -o's suffix; an unknown suffix is refused."""
    if chosen is not None or path is None or path == "-":
        return chosen or "text"
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(
            f"cannot tell the format of {path!r} from its suffix {suffix or '(none)'!r}: "
            f"name it {', '.join(sorted(set(SUFFIXES) - {'.htm'}))} or pass --format"
        )
    return SUFFIXES[suffix]


def _write_atomically(text: str, path: str) -> pathlib.Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a reader
    never sees half a report, and an interrupted run leaves the old file as it was."""
    target = pathlib.Path(path)
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target.resolve().parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as handle:
            temporary = pathlib.Path(handle.name)
            try:
                handle.write(text)
            except BaseException:
                handle.close()
                temporary.unlink(missing_ok=True)
                raise
        os.replace(temporary, target)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from err
    return target


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--input-shape must be integers separated by commas, like 28,28,1; got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"--input-shape must be height,width,channels (three positive integers), got {text!r}")
    channels, height, width = shape
    if channels <= 4 < height == width:
        raise UsageError(
            f"--input-shape {text} looks channels-first: use {height},{width},{channels} (height,width,channels)"
        )
    return shape


def _group_name(text: str) -> str:
    name = text.lower()
    if name not in GROUPS:
        raise argparse.ArgumentTypeError(f"unknown group {text!r}; choose from {', '.join(sorted(GROUPS))}")
    return name


def _group(name: str, shape: tuple[int, ...]) -> groups.Group:
    height, width = shape[0], shape[1]
    rotates = name in ("rotations", "dihedral", "p4", "p4m")
    if rotates and height != width:
        raise UsageError(
            f"--group {name} turns images by 90°, which needs a square input, got {height}x{width}: "
            "use --input-shape with equal height and width, or --group translations/flips"
        )
    return GROUPS[name](height, width)


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``MODULE:FACTORY`` (``FACTORY`` may be dotted), with errors that say
    what to fix. The current directory is searched first, so a local ``models.py`` is found."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"expected MODULE:FACTORY, like my_models:build or equivax.nn:P4CNN; got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise UsageError(
            f"cannot import module {module_name!r} ({type(err).__name__}: {err}); run from the directory that "
            "contains it, or install its package"
        ) from err
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise UsageError(
                f"module {module_name!r} has no {attribute!r}; its callables are: {', '.join(public) or 'none'}"
            )
        found = getattr(found, part)
    if not callable(found):
        raise UsageError(f"{spec} is a {type(found).__name__}, not a callable that builds the model")
    return found


def _takes_rngs(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` accepts ``rngs``; for a class, whether its ``__init__`` does (Flax NNX
    classes show ``(*args, **kwargs)`` to ``inspect.signature``)."""
    targets = [factory.__init__] if inspect.isclass(factory) else []
    targets.append(factory)
    for target in targets:
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            continue
        if "rngs" in parameters:
            return True
    return False


def build_model(factory: Callable[..., Any], seed: int) -> Any:
    """Call the factory, a function or a class; one that takes ``rngs`` gets ``nnx.Rngs(seed)``."""
    kwargs: dict[str, Any] = {}
    if _takes_rngs(factory):
        from flax import nnx

        kwargs["rngs"] = nnx.Rngs(seed)
    try:
        return factory(**kwargs)
    except Exception as err:
        name = getattr(factory, "__qualname__", repr(factory))
        raise UsageError(
            f"the factory {name}({', '.join(f'{k}=...' for k in kwargs)}) failed: {type(err).__name__}: {err}"
        ) from err


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _output(reports: list[Report], fmt: str, path: str | None) -> None:
    """Print the report, or write it to ``path`` (``-``: standard output) and print its summary."""
    if fmt == "text" and path is None:
        sys.stdout.write(render.terminal(reports, colour=sys.stdout.isatty()))
        return
    text = render.FORMATS[fmt](reports)
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    written = _write_atomically(text, path)
    for found in reports:
        print(found.summary())
    print(f"{fmt} report: {written}")


def _cmd_report(args: argparse.Namespace) -> int:
    _writable(args.output)
    fmt = _format(args.output, args.format)
    shape = _input_shape(args.input_shape)
    group = _group(args.group, shape)
    factory = load_factory(args.factory)
    model = build_model(factory, args.seed)
    x = jax.random.normal(jax.random.key(args.seed), (args.batch, *shape))
    chosen = groups.basic_elements(group) if args.elements == "basic" else None
    count = len(group) - 1 if chosen is None else len(chosen)
    _progress(f"checking {args.factory} under {group.name}: {count} elements, input {x.shape} ...")
    try:
        found = report(model, x, group, elements=chosen, name=args.factory.partition(":")[2], by=args.by)
    except (ValueError, TypeError) as err:
        raise UsageError(f"cannot check {args.factory}: {err}") from err
    _progress(f"done in {found.seconds:.1f} s")
    _output([found], fmt, args.output)
    return 0 if found.ok else 1


def _demo_models() -> tuple[tuple[str, Callable[[int, Any], Any]], ...]:
    from equivax.nn import CNN, MLP, P4CNN

    return (
        ("CNN", lambda size, rngs: CNN(padding="circular", rngs=rngs)),
        ("MLP", lambda size, rngs: MLP(in_features=size * size, rngs=rngs)),
        ("P4CNN", lambda size, rngs: P4CNN(padding="circular", rngs=rngs)),
    )


#: The demo's models as (name, build(size, rngs)); None means the built-in CNN, MLP and P4CNN.
DEMO_MODELS: tuple[tuple[str, Callable[[int, Any], Any]], ...] | None = None


def _demo_table(reports: list[Report]) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Where each model first breaks: output verdict — first broken layer", title_justify="left")
    table.add_column("element")
    for found in reports:
        table.add_column(escape(found.model))
    for i, label in enumerate(reports[0].labels):
        cells = []
        for found in reports:
            first = found.first_broken_layer(label)
            verdict = found.output.verdicts[i]
            colour = render._common.COLOURS.get(verdict, "")
            cells.append(f"[{colour}]{verdict}[/] — {escape(first or 'never')}")
        table.add_row(escape(label), *cells)
    console = Console(width=120, force_terminal=sys.stdout.isatty())
    with console.capture() as captured:
        console.print(table)
    return captured.get()


def _cmd_demo(args: argparse.Namespace) -> int:
    from flax import nnx

    size = args.size
    if size < 4 or size % 4:
        raise UsageError(f"--size must be a multiple of 4 (the CNN subsamples twice by 2), got {size}")
    _writable(args.output)
    models = DEMO_MODELS or _demo_models()
    group = groups.p4m(size)
    chosen = groups.basic_elements(group, shifts=(1, 2, 4))
    x = jax.random.normal(jax.random.key(args.seed), (args.batch, size, size, 1))
    _progress(
        f"equivax demo: {len(models)} models on {args.batch} random {size}x{size} images, {len(chosen)} elements "
        f"of {group.name} (shifts by 1, 2 and 4 pixels, quarter turns, mirrors), every layer checked"
    )
    reports = []
    start = time.perf_counter()
    for i, (name, build) in enumerate(models, 1):
        _progress(f"[{i}/{len(models)}] {name} ...")
        reports.append(report(build(size, nnx.Rngs(args.seed)), x, group, elements=chosen, name=name))
        _progress(f"[{i}/{len(models)}] {name}: {reports[-1].output.summary()} ({reports[-1].seconds:.1f} s)")
    print(_demo_table(reports))
    print(
        "Each cell: the verdict of the model's output for that element, then the first layer whose output "
        "breaks.\nThe CNN and P4CNN use circular padding; the MLP promises nothing. Details per layer: the HTML report."
    )
    if args.output != "-":
        print(f"HTML report: {_write_atomically(render.html(reports), args.output).resolve()}")
    _progress(f"total {time.perf_counter() - start:.1f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equivax", description="Verify equivariance of JAX functions.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser(
        "check",
        help="check the built-in example layers (offline, seconds)",
        description="Check built-in reference layers against the symmetries they do and do not have.",
    )
    p_check.add_argument("--example", action="append", help=f"run only this example (repeatable): {EXAMPLES}")
    p_check.add_argument("--batch", type=_positive, default=2, help="examples per batch (default 2)")
    p_check.add_argument("--seed", type=int, default=0, help="random seed of the input (default 0)")
    p_check.add_argument("--rows", type=int, default=4, help="table rows per example (default 4)")
    p_check.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p_check.set_defaults(handler=_cmd_check)

    p_demo = sub.add_parser(
        "demo",
        help="check the built-in CNN, MLP and P4CNN layer by layer and write an HTML report (offline)",
        description="Check the built-in CNN, MLP and P4CNN under shifts by 1, 2 and 4 pixels, quarter turns and "
        "mirrors, layer by layer; print where each model first breaks and write an HTML report.",
    )
    p_demo.add_argument("-o", "--output", default="equivax-demo.html", help="HTML file to write ('-' for none)")
    p_demo.add_argument("--batch", type=_positive, default=4, help="random images per batch (default 4)")
    p_demo.add_argument("--seed", type=int, default=0, help="seed of the images and the weights (default 0)")
    p_demo.add_argument("--size", type=int, default=28, help="image height and width, a multiple of 4 (default 28)")
    p_demo.set_defaults(handler=_cmd_demo)

    p_report = sub.add_parser(
        "report",
        help="report on your own model: end to end and layer by layer",
        description="Build a model with MODULE:FACTORY (called with rngs=nnx.Rngs(seed) if it takes rngs), "
        "check it layer by layer on random inputs and write the report. Exit status 1 if the output is "
        "not equivariant, 2 for a usage error, 130 if interrupted.",
        epilog=f"example: equivax report {REPORT_EXAMPLE}",
    )
    p_report.add_argument("factory", metavar="MODULE:FACTORY", help="e.g. my_models:build or equivax.nn:P4CNN")
    p_report.add_argument(
        "--group",
        required=True,
        type=_group_name,
        metavar="{" + ",".join(sorted(GROUPS)) + "}",
        help="the group acting on the input (any case)",
    )
    p_report.add_argument("--input-shape", required=True, help="height,width,channels of one input, e.g. 28,28,1")
    p_report.add_argument("--batch", type=_positive, default=4, help="random inputs per batch (default 4)")
    p_report.add_argument("--seed", type=int, default=0, help="seed of the inputs and the weights (default 0)")
    p_report.add_argument(
        "--elements",
        choices=("basic", "all"),
        default="basic",
        help="basic: shifts by 1 and 2 and every turn or mirror (default); all: every element of the group",
    )
    p_report.add_argument(
        "--by",
        choices=("layer", "operation"),
        default="layer",
        help="localise the first break to a layer (default) or to a traced operation and its source line",
    )
    p_report.add_argument("--format", choices=sorted(render.FORMATS), help="default: from -o's suffix, else text")
    p_report.add_argument(
        "-o",
        "--output",
        help="file to write: .html, .json, .md or .txt (or any name with --format); '-' for standard output "
        "(default: print a text report)",
    )
    p_report.set_defaults(handler=_cmd_report)
    return parser


#: The example printed by ``equivax report --help`` (the test suite runs it).
REPORT_EXAMPLE = "equivax.nn:P4CNN --group p4m --input-shape 28,28,1 -o report.html"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``equivax`` console script."""
    args = _parser().parse_args(argv)
    _prefer_fast_compilation()
    try:
        return args.handler(args)
    except UsageError as err:
        print(f"equivax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"equivax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
