"""Equivariance watched during training: one compiled check, re-run on the current parameters.

A ``Monitor`` is built once, before training, from the model, a fixed batch of probe inputs and
a group; the training loop calls it every few steps. Each call runs ``equivax.check`` (and,
optionally, ``equivax.lie_error`` for small continuous transformations) on the model's *current*
parameters and records the per-element errors and verdicts:

    from equivax import training

    monitor = training.Monitor(model, probe, group, out_action=equivax.actions.trivial(), lie=("rotation",))
    for step, (images, labels) in enumerate(batches):
        train_step(model, optimizer, images, labels)     # nnx.Optimizer updates model in place
        if step % 10 == 0:
            monitor(step)
    training.write(monitor, "training.html")     # curves over steps (matplotlib)

Nothing is traced or compiled again after the first call, because the parameters reach the
compiled programs as runtime arguments: a Flax NNX module is split into its graph definition (the
cache key) and its state (an argument), so the same module object, updated in place by
``nnx.Optimizer``, re-uses the program. Apply-style models (Linen, plain functions of parameters)
pass ``jax.tree_util.Partial(apply_fn, params)``, a pytree whose array leaves are arguments, and
hand each new ``Partial`` to the call: ``monitor(step, f=Partial(apply_fn, params))``. Any other
callable (a closure over a module, say) is traced again at every call so that what it closes
over is read afresh, and its Lie derivatives are compiled again too: it works, slowly. Each call
counts the XLA compilations it caused (``Monitor.compilations``; a program loaded from JAX's
persistent compilation cache counts as one), so a re-compile shows.
"""

from __future__ import annotations

import base64
import contextlib
import html as html_lib
import io
import json
import pathlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import equivax
from equivax.groups import Group
from equivax.result import CheckResult
from equivax.verdicts import is_passing

__all__ = ["Monitor", "html", "plot", "to_json", "write"]

#: Exact zeros are drawn at this height on the logarithmic error axis.
ZERO_AT = 1e-16
_MARKERS = {"equivariant": "o", "approximate": "s", "undecided": "^", "broken": "X", "nonfinite": "D"}
#: A backend compilation, or a program loaded from the persistent cache instead of compiled.
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/compilation_cache/cache_retrieval_time_sec")


# ------------------------------------------------------------------------------------------------
# Counting XLA compilations (jax.monitoring reports each backend compile as an event).
# ------------------------------------------------------------------------------------------------

_compile_lock = threading.Lock()
_compile_counters: list[list[int]] = []


def _on_duration(event: str, duration: float, **kwargs: Any) -> None:
    if event in _COMPILE_EVENTS:
        with _compile_lock:
            for counter in _compile_counters:
                counter[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)


@contextlib.contextmanager
def _counting_compilations() -> Iterator[list[int]]:
    """Count the XLA compilations (and persistent-cache loads) made inside the block, in all
    threads: ``counter[0]``."""
    counter = [0]
    with _compile_lock:
        _compile_counters.append(counter)
    try:
        yield counter
    finally:
        with _compile_lock:
            _compile_counters.remove(counter)


# ------------------------------------------------------------------------------------------------
# The RMS of f(x), the scale that Lie derivatives are compared with; compiled once, like check.
# ------------------------------------------------------------------------------------------------


def _rms(y: Any) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.concatenate([jnp.square(jnp.ravel(leaf)) for leaf in jax.tree.leaves(y)])))


@jax.jit
def _rms_of_pytree(f: Any, x: jax.Array) -> jax.Array:
    return _rms(f(x))


def _carries_parameters(f: Any) -> bool:
    """True for callables that are pytrees of arrays (an NNX module, a ``Partial`` over parameters),
    whose parameters can be passed to a compiled program as arguments."""
    leaves = jax.tree.leaves(f)
    return bool(leaves) and all(isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves)


# ------------------------------------------------------------------------------------------------
# The monitor
# ------------------------------------------------------------------------------------------------


class Monitor:
    """Records equivariance errors and verdicts of a model over training, with one compiled check.

    Args:
      f: the model: a Flax NNX module (updated in place by ``nnx.Optimizer``), a
        ``jax.tree_util.Partial(apply_fn, params)``, or any JAX-traceable callable of ``x``.
      x: a fixed batch of probe inputs (NHWC images for the built-in planar groups).
      group, in_action, out_action, elements, rtol, atol: as for ``equivax.check``; pass
        ``out_action=equivax.actions.trivial()`` for a classifier's logits.
      lie: names of continuous generators (``equivax.lie.GENERATORS``: ``"rotation"``,
        ``"scale"``, ...) whose Lie derivative to record at every call (Gruver et al., ICLR 2023).
      lie_out: the output generator for them; ``None`` (the default) for invariant outputs.
      name: what plots and tables call this model (default: its class name).

    Each call ``monitor(step)`` returns the step's ``CheckResult`` and appends to ``steps``,
    ``results``, ``lie_errors``, ``output_rms``, ``compilations`` and ``seconds``.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
      >>> monitor = Monitor(lambda x: jnp.tanh(x), x, equivax.groups.translations(8, 8), name="tanh")
      >>> for step in (0, 10):
      ...     _ = monitor(step)
      >>> monitor.steps, monitor.first_failure(), monitor.rel_error.shape
      ([0, 10], None, (2, 63))
    """

    def __init__(
        self,
        f: Any,
        x: Any,
        group: Group,
        in_action: Any = None,
        out_action: Any = None,
        *,
        elements: Sequence[Any] | None = None,
        lie: Sequence[str] = (),
        lie_out: str | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        name: str | None = None,
    ):
        _require_callable(f, "f")
        if not isinstance(group, Group):
            raise TypeError(f"group must be an equivax Group (see equivax.groups), got {type(group).__name__}")
        if isinstance(lie, str):
            raise TypeError(f"lie must be a sequence of generator names, got the string {lie!r}; write lie=({lie!r},)")
        for generator in (*lie, *([] if lie_out is None else [lie_out])):
            equivax.lie.generator(generator)  # a clear ValueError for an unknown name
        self.f = f
        self.x = jnp.asarray(x)
        self.group = group
        self.name = name or type(f).__name__
        self._check_args = (in_action, out_action)
        self._check_kwargs = {"elements": elements, "rtol": rtol, "atol": atol}
        self.lie_generators = tuple(lie)
        self.lie_out = lie_out
        self.steps: list[int] = []
        self.results: list[CheckResult] = []
        self.lie_errors: dict[str, list[float]] = {generator: [] for generator in self.lie_generators}
        self.output_rms: list[float] = []
        self.compilations: list[int] = []
        self.seconds: list[float] = []

    def __call__(self, step: int, f: Any = None) -> CheckResult:
        """Check the model's current parameters and record the outcome as training step ``step``.

        Args:
          step: the training step (increasing from call to call).
          f: a new model of the same structure (a ``Partial`` over updated parameters); default
            the model already held (an NNX module updated in place).

        Returns:
          The ``CheckResult`` of this step.
        """
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an integer training step, got {step!r}")
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"steps must increase from call to call: got step {step} after {self.steps[-1]}")
        if f is not None:
            _require_callable(f, "f")
            self.f = f
        # a training step dispatched just before may still be running: wait, so as not to time it
        jax.block_until_ready([leaf for leaf in jax.tree.leaves(self.f) if isinstance(leaf, jax.Array)])
        start = time.perf_counter()
        with _counting_compilations() as compiled:
            result = equivax.check(self.f, self.x, self.group, *self._check_args, **self._check_kwargs)
            # a closure is wrapped afresh, so that the Lie derivative's jit cache cannot serve a trace
            # made with the values it closed over at an earlier step
            f = self.f if _carries_parameters(self.f) else (lambda x, f=self.f: f(x))
            errors = {
                generator: float(jnp.mean(equivax.lie_error(f, self.x, generator, self.lie_out)))
                for generator in self.lie_generators
            }
            if not self.lie_generators:
                scale = float("nan")
            else:
                scale = float(_rms_of_pytree(f, self.x) if f is self.f else _rms(f(self.x)))
            equivax.block_until_compiled()  # a compilation started ahead counts here, not later
        self.seconds.append(time.perf_counter() - start)
        self.compilations.append(compiled[0])
        self.steps.append(int(step))
        self.results.append(result)
        for generator, error in errors.items():
            self.lie_errors[generator].append(error)
        self.output_rms.append(scale)
        return result

    # -- what was recorded --------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels of the checked elements (empty before the first call)."""
        return self.results[0].labels if self.results else ()

    @property
    def rel_error(self) -> np.ndarray:
        """``(steps, elements)``: relative error of every element at every recorded step."""
        return np.asarray([r.rel_error for r in self.results], dtype=np.float64).reshape(len(self.results), -1)

    @property
    def verdicts(self) -> list[tuple[str, ...]]:
        """The verdicts of every element at every recorded step."""
        return [r.verdicts for r in self.results]

    def errors(self, label: str) -> np.ndarray:
        """``(steps,)``: the relative error of the element called ``label`` at every recorded step."""
        return self.rel_error[:, self._index(label)]

    def lie_relative(self, generator: str) -> np.ndarray:
        """``(steps,)``: the mean Lie error along ``generator`` divided by the RMS of ``f(x)``."""
        if generator not in self.lie_errors:
            raise KeyError(f"no Lie derivative recorded for {generator!r}; this monitor records {self.lie_generators}")
        return np.asarray(self.lie_errors[generator]) / np.asarray(self.output_rms)

    def first_failure(self, label: str | None = None) -> int | None:
        """The first recorded step at which the verdict of ``label`` (default: of any element) did
        not pass (``equivax.verdicts.is_passing``: undecided counts as a failure); ``None`` if never."""
        columns = range(len(self.labels)) if label is None else [self._index(label)]
        for step, verdicts in zip(self.steps, self.verdicts, strict=True):
            if any(not is_passing(verdicts[i]) for i in columns):
                return step
        return None

    def _index(self, label: str) -> int:
        if label not in self.labels:
            shown = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
            raise KeyError(f"no element {label!r} was checked (checked: {shown or 'none yet'}); pass one of those")
        return self.labels.index(label)

    def __repr__(self) -> str:
        if not self.steps:
            return f"Monitor({self.name}, {self.group.name}: no steps recorded)"
        last = self.results[-1]
        return (
            f"Monitor({self.name}, {self.group.name}: {len(self.steps)} steps {self.steps[0]}..{self.steps[-1]}; "
            f"last: {last.summary()}; first failure at step {self.first_failure()}; "
            f"compilations after the first call: {sum(self.compilations[1:])})"
        )


def _require_callable(f: Any, which: str) -> None:
    if not callable(f):
        raise TypeError(f"{which} must be a callable model (an NNX module, a Partial, a function), got {f!r}")


def _as_monitors(monitors: Monitor | Sequence[Monitor]) -> list[Monitor]:
    found = [monitors] if isinstance(monitors, Monitor) else list(monitors)
    if not found or not all(isinstance(m, Monitor) for m in found):
        raise TypeError(f"expected an equivax.training.Monitor or a sequence of them, got {type(monitors).__name__}")
    empty = [m.name for m in found if not m.steps]
    if empty:
        raise ValueError(f"monitor {empty[0]!r} has recorded no steps; call it during training first")
    return found


# ------------------------------------------------------------------------------------------------
# Rendering: curves (matplotlib, PNG), a self-contained HTML page, JSON
# ------------------------------------------------------------------------------------------------


def plot(monitors: Monitor | Sequence[Monitor], labels: Sequence[str] | None = None) -> bytes:
    """Curves over training as PNG bytes: each element's relative error (markers give the verdict;
    exact zeros sit at ``ZERO_AT``) and, where recorded, the Lie errors relative to the RMS of ``f(x)``.

    Args:
      monitors: one monitor or several (drawn on the same axes, named by ``Monitor.name``).
      labels: draw only these elements (those a monitor did not check are skipped); default all.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    found = _as_monitors(monitors)
    with_lie = [m for m in found if m.lie_generators]
    fig = Figure(figsize=(12.0 if with_lie else 7.0, 4.4), layout="constrained")
    axes = fig.subplots(1, 2 if with_lie else 1, squeeze=False)[0]
    for monitor in found:
        for i, label in enumerate(monitor.labels):
            if labels is not None and label not in labels:
                continue
            errors = monitor.rel_error[:, i]
            shown = np.where(errors == 0, ZERO_AT, errors)
            (line,) = axes[0].plot(monitor.steps, shown, lw=1.2, label=f"{monitor.name}: {label}")
            for verdict, marker in _MARKERS.items():
                at = [j for j, v in enumerate(monitor.verdicts) if v[i] == verdict]
                if at:
                    axes[0].plot(
                        np.asarray(monitor.steps)[at], shown[at], ls="", marker=marker, color=line.get_color(), ms=6
                    )
    axes[0].set_yscale("log")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("relative error ‖f(g·x) − g·f(x)‖ / ‖g·f(x)‖")
    axes[0].set_title("equivariance error over training (o equivariant, X broken)", fontsize=10)
    axes[0].grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    if with_lie:
        for monitor in with_lie:
            for generator in monitor.lie_generators:
                axes[1].plot(
                    monitor.steps, monitor.lie_relative(generator), lw=1.2, label=f"{monitor.name}: {generator}"
                )
        axes[1].set_yscale("log")
        axes[1].set_xlabel("training step")
        axes[1].set_ylabel("mean ‖L f(x)‖ / RMS of f(x)")
        axes[1].set_title("Lie derivative (small transformations) over training", fontsize=10)
        axes[1].grid(True, alpha=0.3)
        axes[1].legend(fontsize=7)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _fmt(value: float) -> str:
    return "—" if value is None or np.isnan(value) else ("0" if value == 0 else f"{value:.2e}")


def _rows(monitor: Monitor) -> list[list[str]]:
    rows = []
    for i, label in enumerate(monitor.labels):
        first = monitor.first_failure(label)
        rows.append(
            [
                label,
                _fmt(monitor.rel_error[0, i]),
                _fmt(monitor.rel_error[-1, i]),
                monitor.verdicts[-1][i],
                "never" if first is None else str(first),
            ]
        )
    return rows


def html(monitors: Monitor | Sequence[Monitor], *, title: str = "Equivariance over training") -> str:
    """The curves and a per-element table as one HTML document (plot inlined, nothing fetched)."""
    found = _as_monitors(monitors)
    e = html_lib.escape
    image = base64.b64encode(plot(found)).decode("ascii")
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>',
        "<style>body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #d0d7de;padding:3px 8px}"
        "th{background:#f6f8fa}img{max-width:100%}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<img alt="equivariance errors over training" src="data:image/png;base64,{image}">',
    ]
    for monitor in found:
        header = ["element", f"rel error at step {monitor.steps[0]}", f"at step {monitor.steps[-1]}", "last verdict"]
        cells = "".join(f"<th>{e(h)}</th>" for h in [*header, "first failure (step)"])
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _rows(monitor))
        parts += [
            f"<h2>{e(monitor.name)} under {e(monitor.group.name)}</h2>",
            f"<p>{len(monitor.steps)} checks; XLA compilations after the first: {sum(monitor.compilations[1:])}; "
            f"median seconds per check: {np.median(monitor.seconds):.4f}.</p>",
            f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>",
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def to_json(monitors: Monitor | Sequence[Monitor]) -> str:
    """Everything recorded, as JSON (NaN as null)."""

    def clean(values: Any) -> Any:
        return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64).ravel()]

    return json.dumps(
        {
            "version": 1,
            "monitors": [
                {
                    "name": m.name,
                    "group": m.group.name,
                    "labels": list(m.labels),
                    "steps": m.steps,
                    "rel_error": [clean(row) for row in m.rel_error],
                    "verdicts": [list(v) for v in m.verdicts],
                    "lie_errors": {g: clean(v) for g, v in m.lie_errors.items()},
                    "output_rms": clean(m.output_rms),
                    "compilations": m.compilations,
                    "seconds": m.seconds,
                }
                for m in _as_monitors(monitors)
            ],
        },
        indent=1,
    )


_WRITERS = {".html": html, ".htm": html, ".json": to_json}


def write(monitors: Monitor | Sequence[Monitor], path: str | pathlib.Path) -> pathlib.Path:
    """Write the curves to ``path``: ``.png`` (the plot), ``.html`` (plot and tables) or ``.json``."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(plot(monitors))
    elif suffix in _WRITERS:
        path.write_text(_WRITERS[suffix](monitors), encoding="utf-8")
    else:
        raise ValueError(f"cannot tell the format of {path.name!r} from its suffix; name it .png, .html or .json")
    return path
