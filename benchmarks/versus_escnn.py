"""equivax's check against escnn's own equivariance check, at equal work, on one C4 steerable CNN.

The model is built in escnn (``gspaces.rot2dOnR2(N=4)``): a trivial (1-channel) input field, four
``R2Conv`` layers of ``width`` regular fields each (5×5 filters, padding 2), ReLU after the first
three, the output kept as regular fields (equivariant, not invariant). ``.export()`` turns every
``R2Conv`` into a ``torch.nn.Conv2d`` holding the expanded filter; those exact filters and biases
become the JAX model, a plain ``jax.lax.conv_general_dilated`` forward (NHWC, HWIO, same padding)
that must match the torch forward on the same input (relative error ≤ 1e-5) before anything is
timed. Both sides see the same input (``batch`` × 1 × ``size`` × ``size``, odd size) and the same
three non-identity rotations of C4 (the identity is excluded on both sides).

* escnn: the loop of ``EquivariantModule.check_equivariance`` (escnn 1.0.11), with its random
  input replaced by the shared one, its sampled elements by the three rotations, its ``print``
  calls dropped and ``torch.no_grad()`` around it: per element, ``model(x).transform(g)`` and
  ``model(x.transform(g))``, converted to NumPy, then the max / mean / variance of the absolute
  error and ``np.allclose`` with the ``SequentialModule`` defaults (atol 2e-6, rtol 1e-5). That is
  two forward passes per element (six), as escnn runs it. ``escnn f(x) once`` is the same loop
  with ``model(x)`` hoisted out of it (four passes, the same forwards equivax evaluates); both are
  reported, the ratios are taken against escnn's own loop.
* equivax: ``equivax.check(model, x, groups.rotations(), actions.image(), regular_fields)``, the
  default (decided without a tolerance: float64 re-run when float32 is not bit-exact) and with
  ``rtol=1e-3`` (float32 only). ``regular_fields`` rotates the spatial axes and turns each field's
  four channels in escnn's layout (channel ``4·field + orientation``; a rotation by ``k`` quarter
  turns moves orientation ``r`` to ``r + k``). escnn expands its filters in float32, so the four
  orientations of an exported filter agree only to 2-3 ulps: the default check calls that model
  approximate (its float64 error, about 2e-7, is within the measured resolution of the stored
  values), after two more float64 runs that measure that resolution. The timed model is the
  exported one with each filter bank made exactly symmetric (``symmetrize``: at most 3 ulps from
  escnn's, same forward to 1e-6), which the default check calls equivariant; the default check of
  the filters as exported is timed too (``as exported``). Before timing, the script prints
  equivax's verdicts on the exported, the symmetrized, and a perturbed model (one tap of one
  symmetrized filter changed by a relative 1e-2), each by default and with ``rtol``, and whether
  escnn's own ``np.allclose`` passed.
  ``floor`` / ``floor64``: one jitted JAX forward over the 4N batch in float32 / float64, the least
  the check's float32 program and its float64 re-run can cost.

Each side runs in its own fresh subprocess pinned to one core (``taskset -c 0``): torch with
``torch.set_num_threads(1)`` and ``OMP_NUM_THREADS=1``; JAX with
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` (jaxlib accepts the
first flag; it stops parsing at the bare second token, which therefore does nothing: the pinning is
what makes it one thread). Steady state is the median of ``--repeats`` calls after a warm-up call.
Cold is the first call in a fresh process (compilation included; equivax's persistent compilation
cache switched off with ``EQUIVAX_COMPILATION_CACHE=0``), imports and escnn's model construction
reported separately, medians over ``--cold-runs`` fresh processes per cell.

Set-up (torch and escnn are not dependencies of equivax; escnn needs numpy < 2; py3nj, one of its
dependencies, builds from source and needs a Fortran compiler):

    apt-get install -y gfortran
    python -m venv /work/venvs/escnn
    /work/venvs/escnn/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /work/venvs/escnn/bin/pip install "numpy<2" escnn

Measured with torch 2.13.0+cpu, escnn 1.0.11, numpy 1.26.4, scipy 1.17.1, lie_learn 0.0.2,
py3nj 0.2.1. Without the venv the script prints how to create it and exits 0.

Usage: python benchmarks/versus_escnn.py [--widths 8,16] [--repeats 9] [--cold-runs 3]
       [--batch 8] [--size 29] [--escnn-python /work/venvs/escnn/bin/python]
(the venv's Python can also be given as ``ESCNN_PYTHON``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

DEFAULT_ESCNN_PYTHON = "/work/venvs/escnn/bin/python"
SETUP = (
    "apt-get install -y gfortran && python -m venv /work/venvs/escnn && /work/venvs/escnn/bin/pip install torch "
    '--index-url https://download.pytorch.org/whl/cpu && /work/venvs/escnn/bin/pip install "numpy<2" escnn'
)
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
KERNEL, PADDING, LAYERS = 5, 2, 4
SEED = 0
PERTURBATION = 1e-2  # relative change of one filter tap in the broken model
RTOL = 1e-3


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------
# escnn side (runs under the escnn venv's Python; imports torch and escnn only here)
# ------------------------------------------------------------------------------------------------


def escnn_side(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    start = time.perf_counter()
    import torch
    from escnn import gspaces
    from escnn import nn as enn

    imported = time.perf_counter() - start
    torch.set_num_threads(1)

    start = time.perf_counter()
    torch.manual_seed(SEED)
    space = gspaces.rot2dOnR2(N=4)
    trivial = enn.FieldType(space, [space.trivial_repr])
    regular = enn.FieldType(space, args.width * [space.regular_repr])
    layers: list[Any] = []
    for i in range(LAYERS):
        layers.append(enn.R2Conv(trivial if i == 0 else regular, regular, KERNEL, padding=PADDING))
        if i < LAYERS - 1:
            layers.append(enn.ReLU(regular))
    model = enn.SequentialModule(*layers).eval()  # eval mode expands and caches the filters
    x_np = np.random.default_rng(SEED).standard_normal((args.batch, 1, args.size, args.size)).astype(np.float32)
    x = enn.GeometricTensor(torch.from_numpy(x_np), trivial)
    identity = space.fibergroup.identity
    elements = [g for g in space.testing_elements if g != identity]
    built = time.perf_counter() - start

    def loop(hoisted: bool = False) -> list[tuple[Any, float, bool]]:
        # EquivariantModule.check_equivariance's loop on the shared input and elements; ``hoisted``
        # computes model(x) once, before the loop.
        errors = []
        with torch.no_grad():
            y = model(x) if hoisted else None
            for g in elements:
                out1 = (y if hoisted else model(x)).transform(g).tensor.detach().numpy()
                out2 = model(x.transform(g)).tensor.detach().numpy()
                errs = np.abs(out1 - out2).reshape(-1)
                errs.max(), errs.mean(), errs.var()
                close = np.allclose(out1, out2, atol=2e-6, rtol=1e-5)
                errors.append((g, float(errs.mean()), close))
        return errors

    def loop_once() -> list[tuple[Any, float, bool]]:
        return loop(hoisted=True)

    start = time.perf_counter()
    errors = loop()
    first = time.perf_counter() - start
    result: dict[str, Any] = {"import": imported, "build": built, "first": first}
    result["allclose"] = all(close for _, _, close in errors)
    result["mean_abs_error"] = max(err for _, err, _ in errors)
    result["elements"] = [str(g) for g in elements]
    if args.mode == "steady":
        result["loop"] = median_seconds(loop, args.repeats)
        result["loop_once"] = median_seconds(loop_once, args.repeats)
        result["versions"] = {"torch": torch.__version__, "numpy": np.__version__}
        exported = model.export()
        convs = [m for m in exported if isinstance(m, torch.nn.Conv2d)]
        arrays = {"x": x_np.transpose(0, 2, 3, 1)}
        for i, conv in enumerate(convs):
            assert conv.padding == (PADDING, PADDING) and conv.stride == (1, 1)
            arrays[f"w{i}"] = conv.weight.detach().numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO
            arrays[f"b{i}"] = conv.bias.detach().numpy()
        with torch.no_grad():
            arrays["y"] = exported(torch.from_numpy(x_np)).numpy().transpose(0, 2, 3, 1)
            arrays["y_escnn"] = model(x).tensor.numpy().transpose(0, 2, 3, 1)
        np.savez(args.data, **arrays)
        # escnn's own verdict on the perturbed model (the same tap as equivax's; HWIO [0, 1, 2, 3] is OIHW [3, 2, 0, 1])
        with torch.no_grad():
            layers[2].filter[3, 2, 0, 1] *= 1 + PERTURBATION
        result["allclose_perturbed"] = all(close for _, _, close in loop())
    return result


# ------------------------------------------------------------------------------------------------
# equivax side (runs under the main Python)
# ------------------------------------------------------------------------------------------------


def symmetrize(w: Any) -> Any:
    """Exactly C4-symmetric filters from an exported HWIO filter bank (NumPy): every orientation ``r`` of an
    output field is orientation 0 turned by ``r`` quarter turns (``np.rot90`` on the spatial axes, the
    turn ``jnp.rot90`` makes on NHWC images), its input orientations (regular input fields) rolled by ``r``.

    escnn expands its filters in float32 from a sampled basis, so the exported orientations agree only to
    2-3 ulps; this bank differs from escnn's by that much and nothing more.
    """
    import numpy as np

    kh, kw, cin, cout = w.shape
    if cin == 1:  # the trivial input field
        base = w.reshape(kh, kw, 1, cout // 4, 4)[..., 0]
        turned = [np.rot90(base, r, axes=(0, 1)) for r in range(4)]
    else:
        base = w.reshape(kh, kw, cin // 4, 4, cout // 4, 4)[..., 0]
        turned = [np.roll(np.rot90(base, r, axes=(0, 1)), r, axis=3) for r in range(4)]
    return np.ascontiguousarray(np.stack(turned, axis=-1).reshape(w.shape))


def equivax_side(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    start = time.perf_counter()
    import jax
    import jax.numpy as jnp

    import equivax
    from equivax import actions, groups
    from equivax.precision import retyped

    imported = time.perf_counter() - start
    data = np.load(args.data)

    def forward(params: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
        for i, (w, b) in enumerate(params):
            x = jax.lax.conv_general_dilated(
                x, w, (1, 1), [(PADDING, PADDING)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = x + b
            if i < len(params) - 1:
                x = jax.nn.relu(x)
        return x

    image = actions.image()

    def regular_fields(g: jax.Array, y: jax.Array) -> jax.Array:
        """Rotate the spatial axes, then turn each field's 4 orientation channels (escnn's layout:
        channel ``4·field + r``): a rotation by ``k`` quarter turns moves orientation ``r`` to ``r + k``."""
        y = image(g, y)
        n, h, w, c = y.shape
        fields = y.reshape(n, h, w, c // 4, 4)
        source = (jnp.arange(4) - jnp.asarray(g)[2]) % 4
        return jnp.take(fields, source, axis=4).reshape(n, h, w, c)

    exported = [(jnp.asarray(data[f"w{i}"]), jnp.asarray(data[f"b{i}"])) for i in range(LAYERS)]
    params = [(jnp.asarray(symmetrize(np.asarray(w))), b) for w, b in exported]
    model = jax.tree_util.Partial(forward, params)
    as_exported = jax.tree_util.Partial(forward, exported)
    x = jnp.asarray(data["x"])
    group = groups.rotations()

    def check(f: Any = model, rtol: float | None = None) -> Any:
        return equivax.check(f, x, group, image, regular_fields, rtol=rtol)

    result: dict[str, Any] = {"import": imported}
    if args.mode == "cold":
        start = time.perf_counter()
        verdict = check(rtol=RTOL if args.tolerance else None)
        result["first"] = time.perf_counter() - start
        result["ok"] = bool(verdict.ok)
        return result

    scale = np.max(np.abs(data["y"]))
    for name, p in (("exported", exported), ("symmetrized", params)):
        error = float(np.max(np.abs(np.asarray(jax.jit(forward)(p, x)) - data["y"])) / scale)
        result[f"forward_rel_error_{name}"] = error
        if error > 1e-5:
            raise AssertionError(f"the JAX forward ({name} filters) differs from torch's: {error:.2e} relative")
    result["export_rel_error"] = float(np.max(np.abs(data["y_escnn"] - data["y"])) / scale)
    result["symmetrized_ulps"] = max(
        float(np.max(np.abs(np.asarray(s) - np.asarray(w))) / np.spacing(np.max(np.abs(np.asarray(w)))))
        for (s, _), (w, _) in zip(params, exported, strict=True)
    )

    broken_params = list(params)
    w1 = np.array(params[1][0])
    w1[0, 1, 2, 3] *= 1 + PERTURBATION  # one tap of one output channel of the second convolution
    broken_params[1] = (jnp.asarray(w1), params[1][1])
    broken = jax.tree_util.Partial(forward, broken_params)
    verdicts = {}
    for name, f in (("as exported", as_exported), ("symmetrized", model), ("perturbed", broken)):
        for mode, rtol in (("default", None), (f"rtol={RTOL:g}", RTOL)):
            r = check(f, rtol)
            verdicts[f"{name}, {mode}"] = {
                "ok": bool(r.ok),
                "verdicts": sorted(set(r.verdicts)),
                "methods": sorted(set(r.methods)),
                "rel_error": float(np.max(r.rel_error)),
                "rel_error64": float(np.nanmax(r.rel_error64)) if np.isfinite(r.rel_error64).any() else None,
                "reason": r.reasons[0],
            }
    result["verdicts"] = verdicts
    result["default"] = median_seconds(check, args.repeats)
    result["default_exported"] = median_seconds(lambda: check(as_exported), args.repeats)
    result["tolerance"] = median_seconds(lambda: check(rtol=RTOL), args.repeats)
    forward_jit = jax.jit(forward)
    batch = jnp.concatenate([x] * 4)
    result["floor"] = median_seconds(lambda: forward_jit(params, batch).block_until_ready(), args.repeats)
    # The float64 re-run of the default check cannot cost less than this forward in float64.
    closed = jax.make_jaxpr(model)(batch)
    with jax.enable_x64(True):
        forward64 = jax.jit(retyped(closed, jnp.float64))
        batch64 = np.asarray(batch, np.float64)
        result["floor64"] = median_seconds(lambda: jax.block_until_ready(forward64(batch64)), args.repeats)
    result["versions"] = {"jax": jax.__version__, "numpy": np.__version__}
    return result


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def child(
    python: str, side: str, mode: str, args: argparse.Namespace, data: str, tolerance: bool = False
) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env["XLA_FLAGS"] = XLA_FLAGS
    env["EQUIVAX_COMPILATION_CACHE"] = "0"
    env.pop("EQUIVAX_PARALLEL_COMPILE", None)
    command = [python, os.path.abspath(__file__), "--side", side, "--mode", mode, "--data", data]
    command += ["--width", str(args.width), "--batch", str(args.batch), "--size", str(args.size)]
    command += ["--repeats", str(args.repeats)] + (["--tolerance"] if tolerance else [])
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=3600, cwd=os.path.dirname(os.path.abspath(__file__))
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="8,16", help="regular fields per layer, comma-separated")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=29)
    parser.add_argument("--escnn-python", default=os.environ.get("ESCNN_PYTHON", DEFAULT_ESCNN_PYTHON))
    parser.add_argument("--side", choices=("escnn", "equivax"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("steady", "cold"), default="steady", help=argparse.SUPPRESS)
    parser.add_argument("--tolerance", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side is not None:
        side = escnn_side if args.side == "escnn" else equivax_side
        print(json.dumps(side(args)))
        return
    if not os.path.exists(args.escnn_python):
        print(f"versus_escnn: no escnn venv at {args.escnn_python}; create it with: {SETUP}")
        return

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; one core each (taskset -c 0)")
    print(
        f"C4 steerable CNN: 1 trivial field -> {LAYERS} R2Conv {KERNEL}x{KERNEL} of W regular fields, ReLU between; "
        f"input {args.batch}x{args.size}x{args.size}x1; 3 non-identity rotations; "
        f"steady: medians of {args.repeats}; cold: medians of {args.cold_runs} fresh processes"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in (int(w) for w in args.widths.split(",")):
            args.width = width
            data = os.path.join(tmp, f"w{width}.npz")
            es = child(args.escnn_python, "escnn", "steady", args, data)
            eq = child(sys.executable, "equivax", "steady", args, data)
            cold_es = [child(args.escnn_python, "escnn", "cold", args, data) for _ in range(args.cold_runs)]
            cold_cal = [child(sys.executable, "equivax", "cold", args, data) for _ in range(args.cold_runs)]
            cold_tol = [child(sys.executable, "equivax", "cold", args, data, True) for _ in range(args.cold_runs)]
            rows.append((width, es, eq, cold_es, cold_cal, cold_tol))
            print(
                f"\nW={width} ({4 * width} channels): escnn elements {es['elements']}; escnn's np.allclose "
                f"(atol 2e-6, rtol 1e-5): {es['allclose']} on its model, {es['allclose_perturbed']} perturbed"
            )
            print(
                f"  JAX forward vs torch's exported forward: {eq['forward_rel_error_exported']:.1e} relative "
                f"(symmetrized filters, at most {eq['symmetrized_ulps']:.0f} ulps away: "
                f"{eq['forward_rel_error_symmetrized']:.1e}); export vs escnn module: {eq['export_rel_error']:.1e}"
            )
            for name, v in eq["verdicts"].items():
                err64 = "—" if v["rel_error64"] is None else f"{v['rel_error64']:.1e}"
                print(
                    f"  equivax {name + ':':26} ok={v['ok']!s:5} {','.join(v['verdicts'])} "
                    f"by {','.join(v['methods'])}; rel error {v['rel_error']:.1e}, float64 {err64}; {v['reason']}"
                )
            print(f"  versions: {es['versions']} | {eq['versions']}", flush=True)

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print("\nsteady state (s)")
    header = (
        f"{'W':>3} {'escnn loop':>10} {'f(x) once':>10} {'equivax':>8} {'as exported':>11} {'rtol':>8} "
        f"{'equivax/escnn':>13} {'exported/escnn':>14} {'rtol/escnn':>10} {'equivax/once':>12} {'rtol/once':>9} "
        f"{'floor':>7} {'floor64':>7}"
    )
    print(header)
    print("-" * len(header))
    for width, es, eq, *_ in rows:
        print(
            f"{width:3d} {es['loop']:10.4f} {es['loop_once']:10.4f} {eq['default']:8.4f} "
            f"{eq['default_exported']:11.4f} {eq['tolerance']:8.4f} {eq['default'] / es['loop']:13.2f} "
            f"{eq['default_exported'] / es['loop']:14.2f} "
            f"{eq['tolerance'] / es['loop']:10.2f} {eq['default'] / es['loop_once']:12.2f} "
            f"{eq['tolerance'] / es['loop_once']:9.2f} {eq['floor']:7.4f} {eq['floor64']:7.4f}"
        )
    print(
        "equivax: default check of the symmetrized model (equivariant); as exported: default check of escnn's "
        "exported filters (approximate: see above);\nrtol: rtol=1e-3 check; once: escnn's loop with f(x) computed "
        "once; floor: one jitted JAX forward over the 4N batch (floor64: in float64).\n"
        "targets: equivax/escnn <= 1.0, rtol/escnn <= 0.5"
    )

    print("\ncold, first call in a fresh process (s)")
    header = (
        f"{'W':>3} {'escnn import':>12} {'build':>6} {'first loop':>10} {'equivax import':>14} {'first check':>11} "
        f"{'first rtol':>10} {'check/loop':>10} {'rtol/loop':>9} {'with imports':>12}"
    )
    print(header)
    print("-" * len(header))
    for width, _, _, cold_es, cold_cal, cold_tol in rows:
        loop, cal, tol = med(cold_es, "first"), med(cold_cal, "first"), med(cold_tol, "first")
        es_total = med(cold_es, "import") + med(cold_es, "build") + loop
        eq_total = med(cold_cal, "import") + cal
        print(
            f"{width:3d} {med(cold_es, 'import'):12.2f} {med(cold_es, 'build'):6.2f} {loop:10.3f} "
            f"{med(cold_cal, 'import'):14.2f} {cal:11.3f} {tol:10.3f} {cal / loop:10.2f} {tol / loop:9.2f} "
            f"{eq_total / es_total:12.2f}"
        )
        assert all(r["ok"] for r in cold_cal + cold_tol), "a cold check failed the exported model"
    print(
        "with imports: (equivax import + first check) / (escnn import + model build + first loop); "
        "target: equivax faster cold"
    )


if __name__ == "__main__":
    main()
