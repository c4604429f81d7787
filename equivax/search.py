"""Worst-case inputs: gradient ascent on the equivariance error, one element at a time, all at once.

Random inputs underestimate violations that live in a few input directions: a Gaussian input of
dimension ``D`` has only about ``1/√D`` of its norm along any fixed direction. ``worst_case``
instead maximises the relative error

    ‖f(g·x) − g·f(x)‖₂ / ‖g·f(x)‖₂          (the ``rel_error`` of ``equivax.check``)

over inputs on the sphere ``‖x‖ = ‖x₀‖`` (per example), by an optax optimiser (Adam by default),
projecting back onto the sphere after every step. All elements and starting points are optimised
together: one ``jax.vmap`` over the elements, one jitted ``lax.scan`` over the steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from equivax._arguments import as_action, as_elements, as_group, as_tolerance
from equivax._traced import split
from equivax._xla import jit
from equivax.groups import Group

if TYPE_CHECKING:
    import optax

__all__ = ["WorstCase", "worst_case"]


@dataclasses.dataclass(frozen=True)
class WorstCase:
    """What ``worst_case`` found, per group element.

    Attributes:
      group: name of the group.
      labels: label of each element searched.
      elements: ``(E, d)`` the elements.
      inputs: ``(E, *x0.shape[1:])`` the worst input found for each element (of norm ``‖x₀‖`` of
        the starting point it came from); ``inputs[i][None]`` can be passed to ``equivax.check``.
      errors: ``(E,)`` the relative error of ``inputs[i]`` under element ``i`` (the largest found
        over every start and step).
      initial_errors: ``(E,)`` the largest relative error at the starting points (``x0`` nudged by
        1e-3 of its RMS value), ``history[0]``.
      history: ``(steps, E)`` the largest relative error over the starts at every step, evaluated
        before that step's update (the last update is not evaluated).
    """

    group: str
    labels: tuple[str, ...]
    elements: np.ndarray
    inputs: np.ndarray
    errors: np.ndarray
    initial_errors: np.ndarray
    history: np.ndarray

    @property
    def worst(self) -> int:
        """Index of the element with the largest error."""
        return int(np.argmax(self.errors))

    def __str__(self) -> str:
        rows = [f"worst-case search on {self.group} ({len(self.history)} steps)"]
        rows += [
            f"  {label:16} {start:10.3e} -> {found:10.3e}"
            for label, start, found in zip(self.labels, self.initial_errors, self.errors, strict=True)
        ]
        return "\n".join(rows)


def _rows(tree: Any, n: int) -> jax.Array:
    return jnp.concatenate([leaf.reshape(n, -1) for leaf in jax.tree.leaves(tree)], axis=1)


def _squared_errors(fn, state, in_action, out_action, x: jax.Array, g: jax.Array) -> jax.Array:
    """``(N,)`` squared relative errors ``‖f(g·x) − g·f(x)‖² / ‖g·f(x)‖²``."""
    n = x.shape[0]
    target = _rows(out_action(g, fn(state, x)), n)
    moved = _rows(fn(state, in_action(g, x)), n)
    reference = jnp.sum(jnp.square(target), axis=1)
    return jnp.sum(jnp.square(moved - target), axis=1) / jnp.maximum(reference, jnp.finfo(target.dtype).tiny)


def _to_sphere(z: jax.Array, radius: float) -> jax.Array:
    norms = jnp.sqrt(jnp.sum(jnp.square(z.reshape(z.shape[0], -1)), axis=1))
    factor = radius / jnp.maximum(norms, jnp.finfo(z.dtype).tiny)
    return z * factor.reshape(-1, *(1,) * (z.ndim - 1))


def _nudge(key: jax.Array, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Small Gaussian noise (1e-3 RMS) seeded by a JAX key, drawn with NumPy: XLA's CPU compile
    of the threefry generator takes seconds per shape, far longer than the search itself."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    rng = np.random.default_rng(np.asarray(data, dtype=np.uint32).ravel().tolist())
    return (1e-3 * rng.standard_normal(shape)).astype(dtype)


def worst_case(
    f: Any,
    x0: jax.Array,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    elements: Sequence[Any] | None = None,
    steps: int = 100,
    learning_rate: float = 0.05,
    optimizer: optax.GradientTransformation | None = None,
    key: jax.Array | None = None,
) -> WorstCase:
    """Search for the input of fixed norm with the largest equivariance error, per group element.

    Every example of ``x0`` is a starting point; each element of the group gets its own copy of
    all of them, optimised independently. Inputs are rescaled internally so that their RMS value
    is 1, so ``learning_rate`` is in units of the input's RMS value whatever its scale.

    Args:
      f: a JAX-traceable function of ``x`` or a Flax NNX module.
      x0: a batch of starting inputs ``(N, ...)``; each keeps its norm.
      group, in_action, out_action, elements: as for ``equivax.check``.
      steps: number of ascent steps.
      learning_rate: step size of the default optimiser, Adam.
      optimizer: any optax ``GradientTransformation`` (it maximises; gradients are negated).
      key: a PRNG key for the small random nudge (1e-3 RMS) that moves starts off symmetric points;
        default ``jax.random.key(0)``.

    Returns:
      A ``WorstCase`` with the worst input, its error and the error history per element.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> mask = jnp.arange(8.0)[None, :, None, None] < 4  # keeps the top half: not shift-equivariant
      >>> found = worst_case(lambda x: x * mask, jnp.ones((1, 8, 8, 1)), equivax.groups.translations(8),
      ...                    elements=[(1, 0, 0, 0)], steps=20)
      >>> bool(found.errors[0] > found.initial_errors[0])
      True
    """
    group = as_group(group)
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if optimizer is None and (as_tolerance(learning_rate, "learning_rate") or 0.0) <= 0:
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.floating) or x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a floating batch (N, ...) with N >= 1, got {x0.dtype} {x0.shape}")
    if not bool(jnp.all(jnp.isfinite(x0))):
        raise ValueError("x0 contains NaN or inf; start the search from finite inputs")
    in_action = as_action(in_action, group, "in_action")
    out_action = as_action(out_action, group, "out_action")
    chosen = as_elements(group, elements)
    import optax  # on first use: `import equivax` does not pay for it

    optimizer = optax.adam(learning_rate) if optimizer is None else optimizer
    key = jax.random.key(0) if key is None else key
    traced = split(f)
    fn, state = traced.fn, traced.params

    n = x0.shape[0]
    flat = x0.reshape(n, -1)
    size = flat.shape[1]
    radius = float(np.sqrt(size))  # the sphere in RMS units
    scale = jnp.sqrt(jnp.mean(jnp.square(flat), axis=1)).reshape(-1, *(1,) * (x0.ndim - 1))
    if bool(jnp.any(scale == 0)):
        raise ValueError("x0 has an all-zero example; start from inputs of non-zero norm")

    # Everything the program reads is an argument: closed-over arrays would be constant-folded by
    # XLA at compile time (seconds for a forward pass evaluated by its interpreter).
    def search(state, x0, scale, nudge, g_all):
        def loss(z, g):
            squared = _squared_errors(fn, state, in_action, out_action, z * scale, g)
            return -jnp.sum(squared), jnp.sqrt(squared)

        z = jax.vmap(lambda dz: _to_sphere(x0 / scale + dz, radius))(nudge)
        opt_state = jax.vmap(optimizer.init)(z)

        def step(carry, _):
            z, opt_state, best_z, best = carry
            grads, err = jax.vmap(jax.grad(loss, has_aux=True))(z, g_all)  # err: (E, N)
            better = err > best
            best_z = jnp.where(better.reshape(*better.shape, *(1,) * (z.ndim - 2)), z, best_z)
            best = jnp.maximum(err, best)
            updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, z)
            z = jax.vmap(lambda zi: _to_sphere(zi, radius))(optax.apply_updates(z, updates))
            return (z, opt_state, best_z, best), jnp.max(err, axis=1)

        # One evaluation per step, inside the loop only: a second copy of f outside it would double
        # the compile time, which dominates on CPU.
        carry = (z, opt_state, z, jnp.full(z.shape[:2], -1.0, z.dtype))
        (_, _, best_z, best), history = jax.lax.scan(step, carry, None, length=int(steps))
        pick = jnp.argmax(best, axis=1)
        worst = jnp.take_along_axis(best_z, pick.reshape(-1, 1, *(1,) * (z.ndim - 2)), axis=1)[:, 0]
        return worst * scale[pick], jnp.max(best, axis=1), history

    nudge = _nudge(key, (len(chosen), *x0.shape), x0.dtype)
    inputs, found, history = jax.device_get(jit(search)(state, x0, scale, nudge, jnp.asarray(chosen)))
    return WorstCase(
        group=group.name,
        labels=tuple(group.labels[group.index(e)] for e in chosen),
        elements=np.asarray(chosen),
        inputs=np.asarray(inputs),
        errors=np.asarray(found, dtype=np.float64),
        initial_errors=np.asarray(history[0], dtype=np.float64),
        history=np.asarray(history, dtype=np.float64),
    )
