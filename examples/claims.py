"""The claims commonly made about CNNs, measured: weight sharing, parameter savings, translation
equivariance, "independence" of rotation and scale, savings in compute, independence of local
variations — and how equivariance moves while the models train.

Trains an MLP, four CNNs (a tiny one and three of the same size: zero padding; circular padding;
circular padding with BlurPool) and a P4CNN with optax on real handwritten digits, and measures
every claim on the models at random initialisation and after training, so a reader sees what the
architecture guarantees and what is learned. During training, ``equivax.training.Monitor`` checks
each model every few steps with one compiled check. Writes Markdown tables to stdout and to
``docs/claims/results.md`` (the claims page of the documentation includes that file), and the
curves over training to ``training.png`` beside it.

    python examples/claims.py                  # offline: UCI digits from scikit-learn, 28x28
    python examples/claims.py --data mnist     # MNIST via tensorflow-datasets (prepared beforehand)
    python examples/claims.py --quick --out - --models cnn,mlp   # a quick look (1 epoch, 256 images)
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
from equivax import data, groups, training
from equivax.nn import CNN, MLP, P4CNN, Conv, GroupConv, LiftingConv, count_parameters
from equivax.training import Monitor

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


def train(
    model: nnx.Module,
    train_set: data.Dataset,
    *,
    epochs: int,
    seed: int,
    learning_rate: float,
    monitor: Monitor,
    every: int,
) -> float:
    """Adam on the cross-entropy, with ``monitor`` called before the first step, every ``every``
    steps and after the last; returns the wall time in seconds, the monitor's own time excluded."""
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, images, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    start = time.perf_counter()
    steps = 0
    monitor(steps)  # at initialisation
    for epoch in range(epochs):
        for images, labels in data.batches(train_set, 64, seed=seed + epoch, drop_last=True):
            step(model, optimizer, jnp.asarray(images), jnp.asarray(labels))
            steps += 1
            if steps % every == 0:
                monitor(steps)
    if monitor.steps[-1] != steps:
        monitor(steps)
    return time.perf_counter() - start - sum(monitor.seconds)


@nnx.jit
def predict(model: nnx.Module, x: jax.Array) -> jax.Array:
    """The predicted classes (compiled once per model structure and input shape)."""
    return jnp.argmax(model(x), axis=-1)


def accuracy(model: nnx.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct predictions, in batches of 150."""
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


def compute_cost(model: nnx.Module, size: int, repeats: int) -> dict[str, float]:
    """FLOPs per example from XLA's cost analysis of the compiled forward pass, the median latency
    of one example and the throughput at batch 128 (examples per second), on this machine's CPU."""
    forward = jax.jit(lambda model, x: model(x))
    batch = jnp.zeros((128, size, size, 1), jnp.float32)
    flops = forward.lower(model, batch).compile().cost_analysis()["flops"] / len(batch)
    one = batch[:1]

    def median_seconds(x: jax.Array, runs: int) -> float:
        forward(model, x).block_until_ready()  # compile and warm up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            forward(model, x).block_until_ready()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return {
        "flops": flops,
        "latency": median_seconds(one, 2 * repeats),
        "throughput": len(batch) / median_seconds(batch, repeats),
    }


def on_canvas(images: np.ndarray, canvas: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each 28×28 image, resized by ``scale``, pasted at a random position of a ``canvas``×``canvas``
    field of zeros. Returns the canvases and the top-left corner of each pasted image."""
    side = round(images.shape[1] * scale)
    small = np.asarray(jax.image.resize(jnp.asarray(images), (len(images), side, side, 1), "linear"))
    corners = np.random.default_rng(seed).integers(0, canvas - side + 1, size=(len(images), 2))
    out = np.zeros((len(images), canvas, canvas, 1), np.float32)
    for i, (top, left) in enumerate(corners):
        out[i, top : top + side, left : left + side] = small[i]
    return out, corners


def crops(canvases: np.ndarray, centres: np.ndarray, side: int = 28) -> np.ndarray:
    """The ``side``×``side`` window of each canvas centred (as nearly as the borders allow) on a point."""
    last = canvases.shape[1] - side
    tops = np.clip(np.asarray(centres) - side // 2, 0, last)
    return np.stack([c[top : top + side, left : left + side] for c, (top, left) in zip(canvases, tops, strict=True)])


def local_variations(model: nnx.Module, takes_any_size: bool, test_set: data.Dataset, seed: int) -> dict[str, float]:
    """Accuracy when the centred digits of the test set are moved into a 56×56 canvas (at random
    positions, at full and at half size), on the whole canvas and on 28×28 crops of it."""
    images, labels = test_set.images, test_set.labels
    full, _ = on_canvas(images, 56, 1.0, seed)
    half, half_corners = on_canvas(images, 56, 0.5, seed + 1)
    centre = np.full((len(images), 2), 28)
    found = {
        "test": accuracy(model, images, labels),
        "crop at centre": accuracy(model, crops(full, centre), labels),
        "crop at digit, half": accuracy(model, crops(half, half_corners + 7), labels),
    }
    if takes_any_size:  # the MLP's first layer is built for 784 inputs: it cannot take a 56×56 canvas
        found["canvas"] = accuracy(model, full, labels)
        found["canvas, half"] = accuracy(model, half, labels)
    return found


@dataclasses.dataclass
class Reach:
    """How far a one-pixel change travels: per layer, the side (in input pixels) of the region of
    the feature map that changes, or for vector outputs how many of the values change."""

    layers: list[tuple[str, str]]  # (layer name, "3 px" or "24/24")
    logits_changed: int
    logits_relative_change: float


def perturbation_reach(model: nnx.Module, images: np.ndarray, pixel: tuple[int, int] = (14, 14)) -> Reach:
    """Add 1 (full intensity) to one pixel of each image and compare every layer's output with the
    unperturbed one: the receptive field, measured (a value counts as changed unless bit-identical)."""
    x = jnp.asarray(images)
    moved_x = x.at[:, pixel[0], pixel[1], :].add(1.0)
    stages = [*model.layers.layers, *([] if model.head is None else [model.head])]
    rows = []
    for layer in stages:
        x, moved_x = layer(x), layer(moved_x)
        changed = np.asarray(jnp.any(x != moved_x, axis=0))  # over the batch
        name = getattr(layer, "__name__", None) or type(layer).__name__
        if x.ndim >= 4:  # (N, H, W, ...): the bounding box of the changed positions, in input pixels
            where = np.argwhere(changed.reshape(changed.shape[0], changed.shape[1], -1).any(axis=2))
            stride = images.shape[1] // x.shape[1]
            side = 0 if len(where) == 0 else int((where.max(0) - where.min(0) + 1).max()) * stride
            rows.append((name, f"{side} px"))
        else:
            rows.append((name, f"{int(changed.sum())}/{changed.size}"))
    change = jnp.linalg.norm(moved_x - x, axis=-1) / jnp.linalg.norm(x, axis=-1)
    return Reach(rows, int(changed.sum()), float(jnp.mean(change)))


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclasses.dataclass
class Study:
    """Everything measured on one model."""

    description: str
    parameters: int
    epochs: int
    learning_rate: float
    seconds: float  # training, the monitor's time excluded
    init: Measured
    trained: Measured
    cost: dict[str, float]
    variations: dict[str, float]
    reach: Reach
    monitor: Monitor


def header_lines(args, dataset_note: str, total_seconds: float) -> list[str]:
    processor = platform.processor() or platform.machine()
    return [
        "<!-- generated by examples/claims.py: do not edit; rerun the script -->",
        f"**Data**: {dataset_note}. **Seeds**: weights {args.seed}, batches {args.seed}+epoch, probe images the "
        f"first {args.probe} test images. **Training**: Adam, batch 64, epochs and learning rate per model below. "
        f"**Machine**: {processor}, {os.cpu_count()} CPU cores (shared with other work during the run), "
        f"{jax.devices()[0].device_kind} backend; jax {jax.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}, equivax {equivax.__version__}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; the whole study took {total_seconds:.0f} s "
        f"({time.process_time():.0f} s of CPU time), {_compilation_cache()}.",
        "",
    ]


def _compilation_cache() -> str:
    if os.environ.get("EQUIVAX_COMPILATION_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return "every program compiled in this run (persistent compilation cache off)"
    return "with XLA's persistent compilation cache on (programs compiled by earlier runs re-used)"


def sharing_lines(studies: dict[str, Study], sharing: list[list[str]]) -> list[str]:
    rows = [
        [
            s.description,
            f"{s.parameters:,}",
            f"{s.trained.accuracy['test']:.3f}",
            str(s.epochs),
            f"{s.learning_rate:g}",
            f"{s.seconds:.0f} s",
        ]
        for s in studies.values()
    ]
    lines = [
        "### Claims 1 and 2: weight sharing and parameter counts",
        "",
        table(["model", "parameters", "test accuracy (trained)", "epochs", "learning rate", "training time"], rows),
        "",
    ]
    if sharing:
        lines += [
            "Weight sharing in the CNN's convolutions: the parameters each would need without sharing (its own "
            "filter at every output position) and as a dense layer between the same feature maps.",
            "",
            table(["layer", "feature maps", "shared", "one filter per position", "dense"], sharing),
            "",
        ]
    return lines


def translation_lines(studies: dict[str, Study]) -> list[str]:
    rows = []
    odd = [f"shift({dy},{dx})" for dy, dx in SHIFT_CLASSES["odd"]]
    for s in studies.values():
        for stage, m in (("init", s.init), ("trained", s.trained)):
            cells = [s.description, stage]
            for shifts in SHIFT_CLASSES.values():
                labels = [f"shift({dy},{dx})" for dy, dx in shifts]
                cells.append(f"{_verdicts(m.report, labels)}; {_median_error(m.report, labels):.1e}")
            cells += [_first_break(m.report, odd), f"{m.accuracy['shift 1']:.3f}", f"{m.accuracy['shift 4']:.3f}"]
            rows.append(cells)
    header = ["model", "stage", "shift by 4", "shift by 2", "odd shift", "first break (odd)"]
    return [
        "### Claim 3: translation equivariance (invariance of the logits to circular shifts)",
        "",
        "Output verdicts and median relative error of the logits over three shifts of each kind, the first "
        "layer whose output breaks, and the test accuracy on shifted digits.",
        "",
        table([*header, "acc. shift 1", "acc. shift 4"], rows),
        "",
    ]


def rotation_lines(studies: dict[str, Study]) -> list[str]:
    rows = []
    turns, mirrors = ["r1", "r2", "r3"], ["m", "r1·m", "r2·m", "r3·m"]
    for s in studies.values():
        for stage, m in (("init", s.init), ("trained", s.trained)):
            rows.append(
                [
                    s.description,
                    stage,
                    f"{_verdicts(m.report, turns)}; {_median_error(m.report, turns):.1e}",
                    f"{_verdicts(m.report, mirrors)}; {_median_error(m.report, mirrors):.1e}",
                    f"{m.lie['rotation']:.1e}",
                    f"{m.lie['scale']:.1e}",
                    f"{m.accuracy['turn 90°']:.3f}",
                    f"{m.accuracy['mirror']:.3f}",
                ]
            )
    header = ["model", "stage", "quarter turns", "mirrors", "Lie rotation", "Lie scale"]
    return [
        "### Claim 4: rotations, mirrors and scale",
        "",
        "Quarter turns and mirrors are checked exactly (verdicts; median relative error of the logits). Small "
        "rotations and scalings are measured by the Lie derivative of the logits (Gruver et al., 2023), mean "
        "over the probe images, relative to the RMS of the logits (per radian, per unit of log-scale).",
        "",
        table([*header, "acc. turned 90°", "acc. mirrored"], rows),
        "",
    ]


def compute_lines(studies: dict[str, Study]) -> list[str]:
    rows = [
        [
            s.description,
            f"{s.parameters:,}",
            f"{s.cost['flops']:,.0f}",
            f"{s.cost['flops'] / s.parameters:,.0f}",
            f"{s.cost['latency'] * 1e3:.2f}",
            f"{s.cost['throughput']:,.0f}",
        ]
        for s in studies.values()
    ]
    header = ["model", "parameters", "FLOPs per example", "FLOPs per parameter", "latency, 1 example (ms)"]
    return [
        "### Claim 5: weight sharing and the cost of computing",
        "",
        "FLOPs per example from XLA's cost analysis of the compiled forward pass "
        "(`jax.jit(f).lower(x).compile().cost_analysis()`, batch 128); the median latency of one example and "
        "the throughput at batch 128, measured on this machine's CPU (compilation excluded).",
        "",
        table([*header, "throughput (examples/s)"], rows),
        "",
    ]


def variation_lines(studies: dict[str, Study]) -> list[str]:
    def cell(s: Study, key: str) -> str:
        return f"{s.variations[key]:.3f}" if key in s.variations else "cannot take 56×56"

    rows = [
        [
            s.description,
            cell(s, "test"),
            cell(s, "canvas"),
            cell(s, "canvas, half"),
            cell(s, "crop at centre"),
            cell(s, "crop at digit, half"),
        ]
        for s in studies.values()
    ]
    return [
        "### Claim 6: independence of local variations",
        "",
        "Trained on digits centred in 28×28; tested on the same test digits pasted at random positions into a "
        "56×56 canvas of zeros, at full size and at half size (14×14). The MLP's first layer is built for 784 "
        "inputs and cannot take the canvas: it sees 28×28 crops — at the canvas centre (the digit off-centre "
        "by up to 14 pixels), and centred on the half-size digit (the crop centred on a full-size digit is the "
        "original test image). Test accuracy:",
        "",
        table(
            [
                "model",
                "centred 28×28",
                "56×56, random position",
                "56×56, random position, half size",
                "28×28 crop at the canvas centre",
                "28×28 crop around the half-size digit",
            ],
            rows,
        ),
        "",
        "Locality: one pixel at the centre of each probe image brightened by 1 (full intensity), and every "
        "layer's output compared with the unperturbed one (trained models). For feature maps, the side of the "
        "region that changes, in input pixels (the receptive field, measured); for vectors, how many values "
        "change; last, the mean relative change of the logits.",
        "",
        table(
            ["model", "reach after each layer", "logits changed", "relative change of the logits"],
            [
                [
                    s.description,
                    " · ".join(f"{name} {reach}" for name, reach in s.reach.layers),
                    f"{s.reach.logits_changed}/10",
                    f"{s.reach.logits_relative_change:.1e}",
                ]
                for s in studies.values()
            ],
        ),
        "",
    ]


def training_lines(studies: dict[str, Study], image: str | None) -> list[str]:
    rows = []
    for s in studies.values():
        m = s.monitor
        cells = [s.description, f"{len(m.steps)} (every {m.steps[1] - m.steps[0]} steps)" if len(m.steps) > 1 else "1"]
        for label in MONITORED:
            errors = m.errors(label)
            cells.append(f"{errors[0]:.1e} → {errors[-1]:.1e}; {_counts(v[m.labels.index(label)] for v in m.verdicts)}")
        lie = m.lie_relative("rotation")
        cells += [f"{lie[0]:.1e} → {lie[-1]:.1e}", str(sum(m.compilations[1:])), f"{np.median(m.seconds):.3f}"]
        rows.append(cells)
    lines = [
        "### Equivariance during training",
        "",
        "`equivax.training.Monitor` checked every model on the probe images during training, with one compiled "
        "check re-run on the current parameters (relative error of the logits, verdict) and the Lie derivative "
        "of small rotations relative to the RMS of the logits. Each cell: at the first check (initialisation) → "
        "at the last (trained); then the verdicts over all checks.",
        "",
        table(
            [
                "model",
                "checks",
                *[f"{label}" for label in MONITORED],
                "Lie rotation",
                "compilations after the first check",
                "median s per check",
            ],
            rows,
        ),
        "",
    ]
    if image:
        lines += [f"![Equivariance errors and Lie derivatives over training]({image})", ""]
    return lines


def _counts(verdicts) -> str:
    found = list(verdicts)
    return ", ".join(f"{found.count(v)} {v}" for v in equivax.VERDICTS if v in found)


def write_results(args, dataset_note: str, studies: dict[str, Study], sharing, total_seconds: float, image) -> str:
    """The Markdown of every table, written to ``args.out`` unless it is '-'; returns it."""
    parts = [
        *header_lines(args, dataset_note, total_seconds),
        *sharing_lines(studies, sharing),
        *translation_lines(studies),
        *rotation_lines(studies),
        *compute_lines(studies),
        *variation_lines(studies),
        *training_lines(studies, image),
    ]
    text = "\n".join(parts)
    if args.out != "-":
        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    return text


# ------------------------------------------------------------------------------------------------
# The study
# ------------------------------------------------------------------------------------------------

#: The elements the monitor follows during training: an odd shift, a shift by 4, a quarter turn.
MONITORED = ("shift(0,1)", "shift(0,4)", "r1")
#: The models whose curves are drawn together: the plain CNN against the P4CNN.
PLOTTED = ("cnn", "p4cnn")


def study_model(name: str, args, train_set, test_set, group, elements) -> tuple[Study, list[list[str]]]:
    """Build, measure at initialisation, train under the monitor, measure again."""
    description, build, default_epochs, default_rate = MODELS[name]
    model = build(nnx.Rngs(args.seed))
    size = train_set.images.shape[1]
    parameters = count_parameters(model)
    probe = test_set.images[: args.probe]
    print(f"[{name}] {parameters:,} parameters; measuring at initialisation ...", file=sys.stderr)
    init = measure(model, probe, test_set, group, elements)
    monitored = [np.asarray((0, 1, 0, 0)), np.asarray((0, 4, 0, 0)), np.asarray((0, 0, 1, 0))]
    monitor = Monitor(
        model, probe, group, out_action=equivax.actions.trivial(), elements=monitored, lie=("rotation",), name=name
    )
    epochs, rate = args.epochs or default_epochs, args.learning_rate or default_rate
    seconds = train(
        model, train_set, epochs=epochs, seed=args.seed, learning_rate=rate, monitor=monitor, every=args.every
    )
    print(f"[{name}] trained in {seconds:.0f} s; measuring ...", file=sys.stderr)
    trained = measure(model, probe, test_set, group, elements)
    cost = compute_cost(model, size, args.repeats)
    variations = local_variations(model, not isinstance(model, MLP), test_set, args.seed)
    reach = perturbation_reach(model, probe)
    print(f"[{name}] test accuracy {trained.accuracy['test']:.3f}", file=sys.stderr)
    sharing = sharing_rows(model, size) if name == "cnn" else []
    study = Study(description, parameters, epochs, rate, seconds, init, trained, cost, variations, reach, monitor)
    return study, sharing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory (for --data mnist)")
    parser.add_argument("--epochs", type=int, default=None, help="for every model (default: 30, P4CNN 10)")
    parser.add_argument("--learning-rate", type=float, default=None, help="for every model (default: per model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", type=int, default=8, help="test images the equivariance checks use")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many training images")
    parser.add_argument("--every", type=int, default=20, help="training steps between two monitor checks")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per latency and throughput median")
    parser.add_argument("--quick", action="store_true", help="a quick look: 1 epoch, 256 images, fewer timings")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--out", default=str(ROOT / "docs" / "claims" / "results.md"), help="'-' for stdout only")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    if args.every < 1 or args.repeats < 1:
        parser.error(f"--every and --repeats must be positive, got {args.every} and {args.repeats}")
    if args.quick:
        args.epochs, args.limit = args.epochs or 1, args.limit or 256
        args.every, args.repeats = min(args.every, 2), min(args.repeats, 3)

    start = time.perf_counter()
    train_set = data.load(args.data, "train", data_dir=args.data_dir, limit=args.limit, seed=args.seed)
    test_set = data.load(args.data, "test", data_dir=args.data_dir, seed=args.seed)
    dataset_note = f"{train_set.source.rstrip('.')}; {len(train_set):,} training and {len(test_set):,} test images"
    print(f"data: {dataset_note}", file=sys.stderr)
    group = groups.p4m(train_set.images.shape[1])
    shifts = [s for labels in SHIFT_CLASSES.values() for s in labels]
    elements = [np.asarray((dy, dx, 0, 0)) for dy, dx in shifts]
    elements += [np.asarray((0, 0, k, m)) for k, m in groups.POINT_D4[1:]]

    studies, sharing = {}, []
    for name in names:
        studies[name], found = study_model(name, args, train_set, test_set, group, elements)
        sharing = sharing or found
    image = None
    plotted = [studies[n].monitor for n in PLOTTED if n in studies]
    if args.out != "-" and plotted:
        path = pathlib.Path(args.out).with_name("training.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(training.plot(plotted, labels=("shift(0,1)", "r1")))
        image = f"{path.parent.name}/{path.name}"  # relative to the claims page, which includes this file
    total = time.perf_counter() - start
    print(write_results(args, dataset_note, studies, sharing, total, image))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
