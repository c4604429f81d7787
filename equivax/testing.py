"""Assertions for test suites: ``assert_equivariant`` states a symmetry in one line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from equivax._check import check
from equivax.groups import Group
from equivax.result import CheckResult

__all__ = ["assert_equivariant", "failure_message"]


def failure_message(result: CheckResult) -> str:
    """The message of a failed ``assert_equivariant``, in the manner of numpy's assertions."""
    i = result.worst
    leaf, index = result.locations[i]
    element = np.asarray(result.elements[i]).tolist()
    bad = [v for v in result.verdicts if v not in ("equivariant", "approximate")]
    lines = [
        f"Not equivariant under {len(bad)} of {len(result.verdicts)} elements of {result.group}.",
        f"Worst element: {result.labels[i]} (g={element}): {result.verdicts[i]}, {result.reasons[i]}.",
    ]
    if result.methods[i] != "stride":
        lines.append(f" relative error: {result.rel_error[i]:.3e}   max abs error: {result.abs_error[i]:.3e}")
    if result.methods[i] == "float64":
        lines.append(
            f" float64 re-run: relative error {result.rel_error64[i]:.3e}, rounding floor "
            f"{result.noise_floor[i]:.3e} (f's measured {result.dtype} rounding: {result.rounding:.1e})"
        )
    elif result.methods[i] in ("bound", "tolerance"):
        lines.append(f" rounding bound: {result.noise_floor[i]:.3e} (decided by {result.methods[i]})")
    if result.methods[i] not in ("stride", "nonfinite"):
        lines.append(f" largest difference at {leaf}{list(index)}")
    lines += [
        "",
        result.table(),
        "",
        f"Reproduce: equivax.check(f, x, group, in_action, out_action, elements=[jnp.array({element})])",
    ]
    return "\n".join(lines)


def assert_equivariant(
    f: Any,
    x: Any,
    group: Group,
    in_action: Any = None,
    out_action: Any = None,
    *,
    elements: Sequence[Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    chunk_size: int | None = None,
) -> CheckResult:
    """Raise ``AssertionError`` unless ``f`` is equivariant; arguments as ``equivax.check``.

    Returns the result when the check passes, so a test can inspect it further.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> x = jax.random.normal(jax.random.key(0), (1, 6, 6, 2))
      >>> _ = equivax.assert_equivariant(jnp.tanh, x, equivax.groups.p4(6))
    """
    result = check(f, x, group, in_action, out_action, elements=elements, rtol=rtol, atol=atol, chunk_size=chunk_size)
    if not result.ok:
        raise AssertionError(failure_message(result))
    return result
