"""What a re-run in another precision does with each kind of equation, besides retyping it.

``equivax.precision`` rewrites a traced program with every floating type changed; this module holds
the rules that rewrite follows where retyping alone would be wrong: primitives re-bound with their
nested programs retyped (``REBOUND``), custom rules replaced by their primal program (``PRIMAL``),
foreign code run at its own types (``PINNED``), precision emulation dropped (``DROPPED``), debug
output left out (``SILENT``), primitives refused with a reason (``REFUSED``), loops bounded
(``bounded_while``), and literals that are rounded values rather than exact ones
(``inexact_literal``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

__all__ = [
    "DROPPED",
    "PINNED",
    "PRIMAL",
    "REBOUND",
    "REFUSED",
    "SILENT",
    "WHILE_LIMIT",
    "bounded_while",
    "inexact_literal",
]

#: Primitives whose parameters hold nested programs (``Jaxpr``/``ClosedJaxpr``, alone, in tuples or
#: named tuples, an open ``Jaxpr`` possibly beside its constants in a ``*consts`` parameter) and
#: that are re-bound with those programs retyped. Each is exercised by
#: tests/test_precision_primitives.py; a new JAX primitive with a nested program is refused until
#: it is added here with a test.
REBOUND = frozenset(
    {
        "jit",
        "pjit",  # older name of jit
        "closed_call",
        "call",  # core.call_p
        "core_call",
        "remat2",  # jax.checkpoint
        "remat",
        "checkpoint",
        "scan",
        "while",
        "cond",
        "custom_linear_solve",
        "linear_call",  # forward value is callee; transpose_thunk only runs under transposition
        "reduce",  # generic lax.reduce; its `computation` parameter is unused past tracing
        "reduce_window",  # generic lax.reduce_window: an open jaxpr beside `consts`
        "select_and_scatter",
        "scatter",
        "scatter-add",
        "scatter-sub",
        "scatter-mul",
        "scatter-min",
        "scatter-max",
        "shard_map",
        "composite",
        "compute_on",
        "xla_metadata_call",
        "fused_call",
        "run_state",
        "custom_partitioning",  # its partition callbacks take shapes and dtypes as arguments
    }
)

#: Equations whose value is their primal program, re-run as a plain call of it. Their custom rules
#: (``jvp_jaxpr_fun``, ``fwd_jaxpr_thunk``/``bwd``, a vmap rule, ``fun_jaxpr_thunk``) are Python
#: functions that trace programs in the original types, so re-binding would keep rules that no longer
#: match; the re-run only evaluates forward, where the primal program is the value. Maps primitive to
#: the parameter holding that program (whose inputs are the equation's inputs).
PRIMAL = {
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",  # older JAX
    "custom_vmap_call": "call",
    # custom_vjp's forward with optimize_remat=True: JAX's dead-code elimination swaps it for the
    # program `fun_jaxpr_thunk` traces (in the original types) when residuals go unused.
    "remat_opt": "fwd_jaxpr",
}

#: Equations that run at their original types: bit reinterpretations keep their width, and foreign
#: code (host callbacks, FFI calls) is handed the dtypes it was written for and declared.
PINNED = frozenset(
    {
        "bitcast_convert_type",
        "pure_callback",
        "io_callback",
        "ffi_call",
        "buffer_callback",
    }
)

#: Equations that exist to emulate a lower precision: dropped, their operand passes through.
DROPPED = frozenset({"reduce_precision"})

#: Equations without results that only show values (``jax.debug.print``, ``jax.debug.callback``):
#: they cannot change what f returns, so a re-run leaves them out (and prints nothing twice).
SILENT = frozenset({"debug_callback", "debug_print"})


#: A re-run's ``while`` loop stops after this many iterations, its floating results made NaN (so the
#: verdict is undecided, never a pass): a loop can run forever in another precision when its
#: tolerance is below that precision (``while err > 1e-12`` in float32). Loops whose carry repeats
#: (a fixed point, or two values alternating, in the last bits) stop there first, on that value.
WHILE_LIMIT = 1 << 20


def bounded_while(cond: Any, body: Any, cond_nconsts: int, body_nconsts: int) -> Callable[..., Any]:
    """The re-run's ``while``: ``cond`` and ``body`` (retyped closed jaxprs) iterated until ``cond``
    fails, the carry repeats with period 1 or 2 (a deterministic body then loops forever), or
    ``WHILE_LIMIT`` iterations."""
    run_cond, run_body = jex.jaxpr_as_fun(cond), jex.jaxpr_as_fun(body)

    def same(a: Sequence[Any], b: Sequence[Any]) -> Any:
        return functools.reduce(jnp.logical_and, [jnp.array_equal(u, v) for u, v in zip(a, b, strict=True)], True)

    def loop(*args: Any) -> list[Any]:
        cond_consts, body_consts = args[:cond_nconsts], args[cond_nconsts : cond_nconsts + body_nconsts]
        init = list(args[cond_nconsts + body_nconsts :])

        def keep_going(state: Any) -> Any:
            carry, _, count, repeated = state
            return jnp.any(run_cond(*cond_consts, *carry)[0]) & ~repeated & (count < WHILE_LIMIT)

        def step(state: Any) -> Any:
            carry, before, count, _ = state
            new = run_body(*body_consts, *carry)
            going = run_cond(*cond_consts, *carry)[0]
            if jnp.ndim(going):  # a predicate batched by vmap: finished lanes keep their values
                new = [
                    jnp.where(going.reshape(going.shape + (1,) * (jnp.ndim(n) - going.ndim)), n, c)
                    for n, c in zip(new, carry, strict=True)
                ]
            return new, carry, count + 1, same(new, carry) | same(new, before)

        carry, _, count, _ = jax.lax.while_loop(keep_going, step, (init, init, jnp.int32(0), jnp.bool_(False)))
        spent = count >= WHILE_LIMIT
        return [jnp.where(spent, jnp.nan, c) if jnp.issubdtype(c.dtype, jnp.inexact) else c for c in carry]

    return loop


def inexact_literal(value: Any) -> bool:
    """Whether a floating literal below float64 is likely a rounded value (``math.sqrt(3)``, 0.1),
    not an exact one (0.5, 3.0, 1000.0): its significand needs more than half its precision's bits.
    Such literals are stored values like parameters: rounded when f was traced."""
    value = np.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating) or jnp.finfo(value.dtype).bits >= 64:
        return False
    if value.size != 1 or not np.isfinite(value).all() or not value.any():
        return False
    mantissa, _ = np.frexp(np.float64(value.reshape(())))
    bits = int(jnp.finfo(value.dtype).nmant) + 1
    scaled = abs(float(mantissa)) * 2.0 ** (bits // 2)  # an integer when bits // 2 bits suffice
    return scaled != int(scaled)


_PALLAS = (
    "it is a Pallas kernel, written and tiled for the dtypes it was traced with (Mosaic and Triton "
    "have no float64), so it cannot be re-run in another precision"
)
#: Primitives that cannot run in another precision, and why.
REFUSED = {
    "pallas_call": _PALLAS,
    "core_map": _PALLAS,
    "run_scoped": _PALLAS,
    "emit_pipeline": _PALLAS,
    "pipeline_body": _PALLAS,
    "parallel_loop": _PALLAS,
    "jaxpr_call": _PALLAS,
    "fusible": _PALLAS,
    "custom_fusion": _PALLAS,
    "mpmd_map": _PALLAS,
    "cudnn_fusion": "it is lowered to a cuDNN fusion, and cuDNN has no float64",
    "custom_lin": (
        "it exists only inside JAX's linearization of a program, with a tangent rule that is a "
        "Python function; re-run the program before differentiating it"
    ),
    "call_hi_primitive": "it is a hijax primitive whose types are fixed by its Python object",
    "call_hi_primitive_linearized": "it is a hijax primitive whose types are fixed by its Python object",
}
