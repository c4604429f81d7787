"""Re-evaluate a traced JAX program in another floating-point precision.

The verdict of a check rests on one fact: rounding error changes with precision, structural error
does not. To see which is which, equivax runs the *same* program, with the same inputs and the same
parameters, a second time in another precision. ``jax.make_jaxpr`` records the program, closed-over
arrays included; ``retyped`` then evaluates it equation by equation with every floating value
cast to the target precision: inputs, constants, literals and dtype parameters
(``convert_element_type``, ``iota``, ``preferred_element_type``), complex values with them
(``complex64 -> complex128``), and nested programs (``jit``, ``custom_jvp``/``custom_vjp``,
``remat``, ``scan``, ``while``, ``cond``, scatters, ``custom_linear_solve``) rebuilt with the public
``lax`` functions.
``reduce_precision`` is dropped, since it exists to emulate lower precision, and
``bitcast_convert_type`` runs at its original width (random floats are built from bits that way).

Primitives that carry a program this module does not know raise ``RetypeError``; the check
then falls back to a documented rounding bound and says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex

__all__ = ["RetypeError", "retype_value", "retyped"]

_CALL_PARAM = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat": "jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "custom_lin": None,
}


class RetypeError(NotImplementedError):
    """The program holds a primitive whose nested program cannot be re-evaluated in another precision."""


def _target(dtype: Any, float_dtype: np.dtype) -> np.dtype | None:
    """The retyped dtype for a floating or complex ``dtype``; ``None`` when it is left alone."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return None  # extended dtypes (PRNG keys) and the like
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return np.dtype(np.complex128 if float_dtype == np.float64 else np.complex64)
    if jnp.issubdtype(dtype, jnp.floating):
        return float_dtype
    return None


def retype_value(value: Any, float_dtype: Any) -> Any:
    """Cast a floating (or complex) array or scalar to ``float_dtype``; leave anything else alone."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return value
    new = _target(dtype, np.dtype(float_dtype))
    if new is None or new == dtype:
        return value
    if isinstance(value, np.ndarray | np.generic):
        return value.astype(new)
    return jnp.asarray(value, dtype=new)


def _retype_param(value: Any, float_dtype: np.dtype) -> Any:
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        new = _target(value, float_dtype)
        return value if new is None else new
    return value


def _read_literal(var: Any, float_dtype: np.dtype) -> Any:
    value = var.val
    dtype = getattr(value, "dtype", None)
    if dtype is not None and _target(dtype, float_dtype) is not None:
        return np.asarray(value, dtype=_target(dtype, float_dtype))
    return value


def _closed(jaxpr: Any) -> Any:
    return jaxpr if isinstance(jaxpr, jex.ClosedJaxpr) else jex.ClosedJaxpr(jaxpr, ())


def _eval(closed: Any, float_dtype: np.dtype, *args: Any) -> list[Any]:
    jaxpr = closed.jaxpr
    env: dict[Any, Any] = {}

    def read(var: Any) -> Any:
        return _read_literal(var, float_dtype) if isinstance(var, jex.Literal) else env[var]

    for var, value in zip(jaxpr.constvars, closed.consts, strict=True):
        env[var] = retype_value(jnp.asarray(value), float_dtype)
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = retype_value(value, float_dtype)
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars], float_dtype)
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for var, value in zip(eqn.outvars, outs, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn: Any, invals: list[Any], float_dtype: np.dtype) -> Any:
    name = eqn.primitive.name
    params = eqn.params
    if name == "reduce_precision":
        return invals[0]
    if name in _CALL_PARAM:
        key = _CALL_PARAM[name]
        if key is None or key not in params:
            raise RetypeError(f"cannot re-evaluate primitive {name!r} in another precision")
        outs = _eval(_closed(params[key]), float_dtype, *invals)
        return outs if eqn.primitive.multiple_results else outs[0]
    if name in _SCATTERS:
        operand, indices, updates = invals
        return _SCATTERS[name](
            operand,
            indices,
            updates,
            params["dimension_numbers"],
            indices_are_sorted=params["indices_are_sorted"],
            unique_indices=params["unique_indices"],
            mode=params["mode"],
        )
    if name == "custom_linear_solve":
        return _linear_solve(params, invals, float_dtype)
    if name == "scan":
        return _scan(params, invals, float_dtype)
    if name == "while":
        return _while(params, invals, float_dtype)
    if name == "cond":
        return _cond(params, invals, float_dtype)
    if any(True for _ in jex.jaxprs_in_params(params)):
        raise RetypeError(
            f"cannot re-evaluate primitive {name!r} in another precision: it carries a nested "
            "program equivax does not know"
        )
    if name == "bitcast_convert_type":
        return _bitcast(eqn, invals[0], float_dtype)
    new_params = {k: _retype_param(v, float_dtype) for k, v in params.items()}
    return eqn.primitive.bind(*invals, **new_params)


_SCATTERS = {
    "scatter": lax.scatter,
    "scatter-add": lax.scatter_add,
    "scatter-mul": lax.scatter_mul,
    "scatter-min": lax.scatter_min,
    "scatter-max": lax.scatter_max,
}


def _linear_solve(params: dict, invals: list[Any], float_dtype: np.dtype) -> list[Any]:
    """Forward value of ``lax.custom_linear_solve`` (``jnp.linalg.solve``, ``inv``): its solve program."""
    lengths, programs = params["const_lengths"], params["jaxprs"]
    start = lengths.matvec + lengths.vecmat
    consts = invals[start : start + lengths.solve]
    b = invals[sum(lengths) :]
    return _eval(programs.solve, float_dtype, *consts, *b)


def _bitcast(eqn: Any, value: Any, float_dtype: np.dtype) -> Any:
    """Bit patterns keep their original width (random floats are made this way): bitcast in the
    original dtypes, then retype the result."""
    original = eqn.invars[0].aval.dtype
    out = eqn.primitive.bind(jnp.asarray(value).astype(original), **eqn.params)
    return retype_value(out, float_dtype)


def _scan(params: dict, invals: list[Any], float_dtype: np.dtype) -> list[Any]:
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    consts, carry, xs = invals[:n_consts], invals[n_consts : n_consts + n_carry], invals[n_consts + n_carry :]
    body_jaxpr = params["jaxpr"]

    def body(carry, x):
        outs = _eval(body_jaxpr, float_dtype, *consts, *carry, *x)
        return outs[:n_carry], outs[n_carry:]

    carry, ys = lax.scan(
        body, list(carry), list(xs), length=params["length"], reverse=params["reverse"], unroll=params["unroll"]
    )
    return [*carry, *ys]


def _while(params: dict, invals: list[Any], float_dtype: np.dtype) -> list[Any]:
    n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
    cond_consts, body_consts, init = invals[:n_cond], invals[n_cond : n_cond + n_body], invals[n_cond + n_body :]

    def cond_fun(carry):
        return _eval(params["cond_jaxpr"], float_dtype, *cond_consts, *carry)[0]

    def body_fun(carry):
        return _eval(params["body_jaxpr"], float_dtype, *body_consts, *carry)

    return lax.while_loop(cond_fun, body_fun, list(init))


def _cond(params: dict, invals: list[Any], float_dtype: np.dtype) -> list[Any]:
    index, operands = invals[0], invals[1:]
    branches = [functools.partial(_eval, branch, float_dtype) for branch in params["branches"]]
    return lax.switch(index, branches, *operands)


def retyped(closed_jaxpr: Any, float_dtype: Any) -> Callable[..., Sequence[Any]]:
    """A function evaluating ``closed_jaxpr`` with all floating values in ``float_dtype``.

    For ``float64``, call it (and ``jax.jit`` it) inside ``jax.enable_x64(True)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> w = jnp.float32(1e-8)
      >>> closed = jax.make_jaxpr(lambda x: (x + w) - x)(jnp.float32(1.0))
      >>> with jax.enable_x64(True):
      ...     print(float(retyped(closed, jnp.float64)(1.0)[0]) > 0)
      True
    """
    return functools.partial(_eval, closed_jaxpr, np.dtype(float_dtype))
