"""The claims commonly made about CNNs, measured: weight sharing, parameter savings, translation
equivariance, and "independence" of rotation and scale.

Trains an MLP, three CNNs (zero padding; circular padding; circular padding with BlurPool) and a
P4CNN with optax on real handwritten digits, and measures every claim on the models at random
initialisation and after training, so a reader sees what the architecture guarantees and what is
learned. Writes Markdown tables to stdout and to ``docs/claims/results.md`` (the claims page of the
documentation includes that file).

    python examples/claims.py                  # offline: UCI digits from scikit-learn, 28x28
    python examples/claims.py --data mnist     # MNIST via tensorflow-datasets (prepared beforehand)
    python examples/claims.py --epochs 2 --out - --models cnn,mlp   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import statistics
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import equivax
from equivax import data, groups
from equivax.nn import CNN, MLP, P4CNN, Conv, GroupConv, LiftingConv, count_parameters

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: The models of the study: name -> (description, build(rngs), training epochs, Adam learning rate).
#: The P4CNN costs about 15 times a CNN per epoch on a CPU and reaches its accuracy in fewer epochs;
#: at the CNNs' learning rate (1e-2) its ReLUs die within the first epoch.
MODELS = {
    "mlp": ("MLP 784-24-10", lambda rngs: MLP(rngs=rngs), 30, 1e-2),
    "cnn-tiny": (
        "CNN 4-8, zero padding (a few hundred parameters)",
        lambda rngs: CNN(widths=(4, 8), rngs=rngs),
        30,
        1e-2,
    ),
    "cnn": ("CNN, zero padding, max pool", lambda rngs: CNN(rngs=rngs), 30, 1e-2),
    "cnn-circular": ("CNN, circular padding, max pool", lambda rngs: CNN(padding="circular", rngs=rngs), 30, 1e-2),
    "cnn-blur": (
        "CNN, circular padding, BlurPool",
        lambda rngs: CNN(padding="circular", pool="blur", rngs=rngs),
        30,
        1e-2,
    ),
    "p4cnn": ("P4CNN, circular padding", lambda rngs: P4CNN(padding="circular", rngs=rngs), 10, 3e-3),
}

# Shifts by 4k survive the CNNs' two stride-2 pools; by 2 (mod 4) only the P4CNN's one; odd ones none.
SHIFT_CLASSES = {
    "by 4": [(0, 4), (4, 0), (4, 4)],
    "by 2": [(0, 2), (2, 0), (2, 2)],
    "odd": [(0, 1), (1, 0), (1, 1)],
}


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def train(model: nnx.Module, train_set: data.Dataset, *, epochs: int, seed: int, learning_rate: float) -> float:
    """Adam on the cross-entropy; returns the wall time in seconds."""
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, images, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    start = time.perf_counter()
    for epoch in range(epochs):
        for images, labels in data.batches(train_set, 64, seed=seed + epoch, drop_last=True):
            step(model, optimizer, jnp.asarray(images), jnp.asarray(labels))
    return time.perf_counter() - start


def accuracy(model: nnx.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct predictions, in batches of 150."""

    @nnx.jit
    def predict(model, x):
        return jnp.argmax(model(x), axis=-1)

    hits = sum(
        int(jnp.sum(predict(model, jnp.asarray(images[i : i + 150])) == labels[i : i + 150]))
        for i in range(0, len(images), 150)
    )
    return hits / len(images)


def moved(images: np.ndarray, g: tuple[int, int, int, int]) -> np.ndarray:
    """Test images moved by a planar group element ``(dy, dx, k, m)`` (the image action)."""
    return np.asarray(equivax.actions.image()(jnp.asarray(g), jnp.asarray(images)))


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Measured:
    """Everything measured on one model at one stage (random init or trained)."""

    report: equivax.Report
    lie: dict[str, float]
    accuracy: dict[str, float]


def _median_error(report: equivax.Report, labels: list[str]) -> float:
    out = report.output
    values = [out.rel_error[out.labels.index(label)] for label in labels]
    return statistics.median(values)


def _verdicts(report: equivax.Report, labels: list[str]) -> str:
    out = report.output
    found = [out.verdicts[out.labels.index(label)] for label in labels]
    counts = {v: found.count(v) for v in equivax.VERDICTS if v in found}
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def _first_break(report: equivax.Report, labels: list[str]) -> str:
    names = {report.first_broken_layer(label) for label in labels}
    names.discard(None)
    return ", ".join(sorted(names)) if names else "none"


def measure(model: nnx.Module, probe: np.ndarray, test_set: data.Dataset, group: equivax.Group, elements) -> Measured:
    """Report under shifts, turns and mirrors; Lie derivatives; accuracy under transformations."""
    x = jnp.asarray(probe)
    report = equivax.report(model, x, group, elements=elements)
    scale = float(jnp.sqrt(jnp.mean(jnp.square(model(x)))))  # RMS of the logits: errors relative to it
    lie = {gen: float(jnp.mean(equivax.lie_error(model, x, gen))) / scale for gen in ("rotation", "scale")}
    images, labels = test_set.images, test_set.labels
    acc = {
        "test": accuracy(model, images, labels),
        "shift 1": accuracy(model, moved(images, (0, 1, 0, 0)), labels),
        "shift 4": accuracy(model, moved(images, (0, 4, 0, 0)), labels),
        "turn 90°": accuracy(model, moved(images, (0, 0, 1, 0)), labels),
        "mirror": accuracy(model, moved(images, (0, 0, 0, 1)), labels),
    }
    return Measured(report, lie, acc)


def sharing_rows(model: nnx.Module, size: int) -> list[list[str]]:
    """Per convolution: parameters with weight sharing, without (a locally connected layer with
    its own filter at every output position) and as a dense layer between the same feature maps."""
    rows = []
    x = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    for layer in model.layers.layers:
        out = jax.eval_shape(layer, x)
        if isinstance(layer, (Conv, LiftingConv, GroupConv)):
            kernel = int(np.prod(layer.kernel.shape))
            positions = int(np.prod(out.shape[1:3]))
            bias = 0 if layer.bias is None else int(layer.bias.size)
            dense = int(np.prod(x.shape[1:])) * int(np.prod(out.shape[1:])) + int(np.prod(out.shape[1:]))
            rows.append(
                [
                    type(layer).__name__,
                    f"{tuple(x.shape[1:])} → {tuple(out.shape[1:])}",
                    f"{kernel + bias:,}",
                    f"{positions * kernel + bias:,}",
                    f"{dense:,}",
                ]
            )
        x = out
    return rows


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    args, dataset_note: str, results: dict, seconds: dict, counts: dict, epochs: dict, rates: dict, sharing: list, out
) -> str:
    stages = ("init", "trained")
    parts = [
        "<!-- generated by examples/claims.py: do not edit; rerun the script -->",
        f"**Data**: {dataset_note}. **Seeds**: weights {args.seed}, batches {args.seed}+epoch, probe images the "
        f"first {args.probe} test images. **Training**: Adam, batch 64, epochs and learning rate per model below. "
        f"**Machine**: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{jax.devices()[0].device_kind} backend; jax {jax.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}, equivax {equivax.__version__}; "
        f"{datetime.date.today().isoformat()}; the whole study took {seconds['total']:.0f} s.",
        "",
        "### Claims 1 and 2: weight sharing and parameter counts",
        "",
        table(
            ["model", "parameters", "test accuracy (trained)", "epochs", "learning rate", "training time"],
            [
                [
                    MODELS[name][0],
                    f"{counts[name]:,}",
                    f"{results[name]['trained'].accuracy['test']:.3f}",
                    str(epochs[name]),
                    f"{rates[name]:g}",
                    f"{seconds[name]:.0f} s",
                ]
                for name in results
            ],
        ),
        "",
        "Weight sharing in the CNN's convolutions: the parameters each would need without sharing (its own "
        "filter at every output position) and as a dense layer between the same feature maps.",
        "",
        table(["layer", "feature maps", "shared", "one filter per position", "dense"], sharing),
        "",
        "### Claim 3: translation equivariance (invariance of the logits to circular shifts)",
        "",
        "Output verdicts and median relative error of the logits over three shifts of each kind, the first "
        "layer whose output breaks, and the test accuracy on shifted digits.",
        "",
    ]
    rows = []
    for name in results:
        for stage in stages:
            m = results[name][stage]
            cells = [MODELS[name][0], stage]
            for labels in SHIFT_CLASSES.values():
                labels = [f"shift({dy},{dx})" for dy, dx in labels]
                cells.append(f"{_verdicts(m.report, labels)}; {_median_error(m.report, labels):.1e}")
            odd = [f"shift({dy},{dx})" for dy, dx in SHIFT_CLASSES["odd"]]
            cells += [_first_break(m.report, odd), f"{m.accuracy['shift 1']:.3f}", f"{m.accuracy['shift 4']:.3f}"]
            rows.append(cells)
    parts += [
        table(
            [
                "model",
                "stage",
                "shift by 4",
                "shift by 2",
                "odd shift",
                "first break (odd)",
                "acc. shift 1",
                "acc. shift 4",
            ],
            rows,
        ),
        "",
        "### Claim 4: rotations, mirrors and scale",
        "",
        "Quarter turns and mirrors are checked exactly (verdicts; median relative error of the logits). Small "
        "rotations and scalings are measured by the Lie derivative of the logits (Gruver et al., 2023), mean "
        "over the probe images, relative to the RMS of the logits (per radian, per unit of log-scale).",
        "",
    ]
    rows = []
    turns, mirrors = ["r1", "r2", "r3"], ["m", "r1·m", "r2·m", "r3·m"]
    for name in results:
        for stage in stages:
            m = results[name][stage]
            rows.append(
                [
                    MODELS[name][0],
                    stage,
                    f"{_verdicts(m.report, turns)}; {_median_error(m.report, turns):.1e}",
                    f"{_verdicts(m.report, mirrors)}; {_median_error(m.report, mirrors):.1e}",
                    f"{m.lie['rotation']:.1e}",
                    f"{m.lie['scale']:.1e}",
                    f"{m.accuracy['turn 90°']:.3f}",
                    f"{m.accuracy['mirror']:.3f}",
                ]
            )
    parts += [
        table(
            [
                "model",
                "stage",
                "quarter turns",
                "mirrors",
                "Lie rotation",
                "Lie scale",
                "acc. turned 90°",
                "acc. mirrored",
            ],
            rows,
        ),
        "",
    ]
    text = "\n".join(parts)
    if out != "-":
        path = pathlib.Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory (for --data mnist)")
    parser.add_argument("--epochs", type=int, default=None, help="for every model (default: 30, P4CNN 10)")
    parser.add_argument("--learning-rate", type=float, default=None, help="for every model (default: per model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", type=int, default=8, help="test images the equivariance checks use")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many training images")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--out", default=str(ROOT / "docs" / "claims" / "results.md"), help="'-' for stdout only")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")

    start = time.perf_counter()
    train_set = data.load(args.data, "train", data_dir=args.data_dir, limit=args.limit, seed=args.seed)
    test_set = data.load(args.data, "test", data_dir=args.data_dir, seed=args.seed)
    dataset_note = f"{train_set.source.rstrip('.')}; {len(train_set):,} training and {len(test_set):,} test images"
    print(f"data: {dataset_note}", file=sys.stderr)
    size = train_set.images.shape[1]
    group = groups.p4m(size)
    shifts = [s for labels in SHIFT_CLASSES.values() for s in labels]
    elements = [np.asarray((dy, dx, 0, 0)) for dy, dx in shifts]
    elements += [np.asarray((0, 0, k, m)) for k, m in groups.POINT_D4[1:]]
    probe = test_set.images[: args.probe]

    results, seconds, counts = {}, {}, {}
    epochs = {name: args.epochs or MODELS[name][2] for name in names}
    rates = {name: args.learning_rate or MODELS[name][3] for name in names}
    sharing = []
    for name in names:
        model = MODELS[name][1](nnx.Rngs(args.seed))
        counts[name] = count_parameters(model)
        if name == "cnn":
            sharing = sharing_rows(model, size)
        print(f"[{name}] {counts[name]:,} parameters; measuring at initialisation ...", file=sys.stderr)
        results[name] = {"init": measure(model, probe, test_set, group, elements)}
        seconds[name] = train(model, train_set, epochs=epochs[name], seed=args.seed, learning_rate=rates[name])
        print(f"[{name}] trained in {seconds[name]:.0f} s; measuring ...", file=sys.stderr)
        results[name]["trained"] = measure(model, probe, test_set, group, elements)
        print(f"[{name}] test accuracy {results[name]['trained'].accuracy['test']:.3f}", file=sys.stderr)
    seconds["total"] = time.perf_counter() - start
    print(write_results(args, dataset_note, results, seconds, counts, epochs, rates, sharing, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
