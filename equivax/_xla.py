"""``jax.jit`` for the programs equivax compiles itself, with XLA options chosen for them.

On CPU, XLA compiles one kernel per fusion, and a check's program has many small ones (moving
inputs and outputs, statistics). XLA's loop emitters compile them faster than its newer fusion
emitters, and the programs run as fast or faster. Measured on the check programs of
benchmarks/first_verdict.py, each compiled alone: half the time at backend optimisation level 0
(the test suite's), 10–30% less at XLA's default level, which is within the noise of a whole
first verdict (benchmarks/README.md). The options apply to equivax's programs only, never to
the user's own ``jax.jit``; an option the user sets in ``XLA_FLAGS`` is left to them, and one
this XLA does not know is dropped.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["COMPILER_OPTIONS", "compiler_options", "jit"]

#: XLA options for equivax's own programs (see the module's docstring).
COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def compiler_options() -> tuple[tuple[str, Any], ...]:
    """The options of ``COMPILER_OPTIONS`` this XLA accepts and ``XLA_FLAGS`` does not set."""
    chosen = {k: v for k, v in COMPILER_OPTIONS.items() if k not in os.environ.get("XLA_FLAGS", "")}
    if not chosen:
        return ()
    try:  # an XLA that does not know an option refuses the whole compilation
        jax.jit(lambda: jnp.zeros(()), compiler_options=chosen).lower().compile()
    except Exception:  # noqa: BLE001 - any refusal means: XLA's defaults
        return ()
    return tuple(chosen.items())


class _Jit:
    """``jax.jit(fn, **kwargs)`` with ``compiler_options()``, made on first use (not on import)."""

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any]):
        self._fn, self._kwargs, self._jitted = fn, kwargs, None
        functools.update_wrapper(self, fn)

    @property
    def jitted(self) -> Any:
        if self._jitted is None:
            options = dict(compiler_options()) or None
            self._jitted = jax.jit(self._fn, compiler_options=options, **self._kwargs)
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self.jitted.lower(*args, **kwargs)


def jit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``jax.jit(fn, **kwargs)`` with equivax's compiler options (``COMPILER_OPTIONS``)."""
    return _Jit(fn, kwargs)
