"""What does watching equivariance during training cost, per call, against one training step?

For each model, measured side by side in one run: the median wall time of one optax training step
(Adam, cross-entropy, a batch of 64 digits-sized images, ``nnx.jit``) and of one call of
``equivax.training.Monitor`` on 8 probe images — the exact check alone (the elements of the claims
study: 9 shifts, 3 quarter turns, 4 mirrors) and with the Lie derivative of small rotations. The
monitor is called after a parameter update each time, as in training, so every call checks new
parameters. Also printed: the XLA compilations made by the timed monitor calls (must be 0).

Calling the monitor every k steps adds ``ratio / k`` to the training time.

Usage: python benchmarks/monitor.py [--repeats 15] [--models cnn,p4cnn]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from equivax import actions, groups
from equivax.nn import CNN, P4CNN
from equivax.training import Monitor

MODELS = {
    "cnn": ("CNN, circular padding", lambda: CNN(padding="circular", rngs=nnx.Rngs(0))),
    "p4cnn": ("P4CNN, circular padding", lambda: P4CNN(padding="circular", rngs=nnx.Rngs(0))),
}
SHIFTS = [(0, 4), (4, 0), (4, 4), (0, 2), (2, 0), (2, 2), (0, 1), (1, 0), (1, 1)]


def training_step(model: nnx.Module, images: jax.Array, labels: jax.Array):
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(images), labels).mean()  # noqa: E731
        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    return lambda: step(model, optimizer).block_until_ready()


def median_seconds(fn, repeats: int, before=lambda: None) -> float:
    """Median wall time of ``fn()``, each run preceded by an untimed ``before()``."""
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, repeats: int) -> dict[str, float]:
    model = MODELS[name][1]()
    key_images, key_labels = jax.random.split(jax.random.key(0))
    images = jax.random.uniform(key_images, (64, 28, 28, 1))
    labels = jax.random.randint(key_labels, (64,), 0, 10)
    probe = images[:8]
    elements = [np.asarray((dy, dx, 0, 0)) for dy, dx in SHIFTS]
    elements += [np.asarray((0, 0, k, m)) for k, m in groups.POINT_D4[1:]]
    kwargs = {"out_action": actions.trivial(), "elements": elements}
    check_only = Monitor(model, probe, groups.p4m(28), name=name, **kwargs)
    with_lie = Monitor(model, probe, groups.p4m(28), name=name, lie=("rotation",), **kwargs)
    step = training_step(model, images, labels)
    step()  # compile
    counter = iter(range(10**9))
    check_only(next(counter))  # compile
    with_lie(next(counter))
    out = {"step": median_seconds(step, repeats)}
    for key, monitor in (("check", check_only), ("check+lie", with_lie)):
        out[key] = median_seconds(lambda m=monitor: m(next(counter)), repeats, before=step)  # new parameters
        out[f"{key} compilations"] = sum(monitor.compilations[1:])
    out["verdicts"] = ", ".join(f"{n} {v}" for v, n in check_only.results[-1].counts().items())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; medians of {args.repeats} runs after a warm-up")
    print(
        "| model | train step (s) | monitor: check (s) | check / step | check + Lie rotation (s) "
        "| (check + Lie) / step "
        "| compilations in timed calls | verdicts (last call) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        m = measure(name.strip(), args.repeats)
        print(
            f"| {MODELS[name.strip()][0]} | {m['step']:.4f} | {m['check']:.4f} | {m['check'] / m['step']:.2f} "
            f"| {m['check+lie']:.4f} | {m['check+lie'] / m['step']:.2f} "
            f"| {m['check compilations'] + m['check+lie compilations']} | {m['verdicts']} |"
        )


if __name__ == "__main__":
    jnp.zeros(1).block_until_ready()
    main()
