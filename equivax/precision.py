"""Re-evaluate a traced JAX program in another floating-point precision.

The verdict of a check rests on one fact: rounding error changes with precision, structural error
does not. To see which is which, equivax runs the *same* program, with the same inputs and the same
parameters, a second time in another precision. ``jax.make_jaxpr`` records the program, closed-over
arrays included; ``retyped`` rewrites it with every floating type cast to the target precision
(``float32 -> float64``, ``complex64 -> complex128``, and back): the types of its variables,
its constants and literals, the dtypes among equation parameters (``convert_element_type``,
``iota``, ``preferred_element_type``) and, recursively, every nested program. JAX then evaluates the
rewritten program as it evaluates any other.

Nested programs are rewritten in place, so each equation binds the *same primitive* with the same
parameters, only retyped: a ``while`` whose predicate was batched by ``vmap``, a ``shard_map`` with
its collectives, a ``scan`` run in reverse or unrolled, a generic ``lax.reduce``/``reduce_window``,
``jit``, ``remat``, ``cond``, ``custom_linear_solve``, scatters, ``composite`` all keep their own
semantics. A few equations are rewritten differently, each for a stated reason:

* ``custom_jvp_call``/``custom_vjp_call``/``custom_vmap_call`` (and ``remat_opt``, a custom_vjp
  forward with ``optimize_remat``) become a plain call of their primal program: their custom rules
  are Python functions that trace programs in the original types, and the re-run only evaluates
  forward.
* ``reduce_precision`` is dropped: it exists to emulate lower precision.
* ``bitcast_convert_type`` and foreign code (``pure_callback``, ``io_callback``,
  ``jax.debug.callback``/``print``, ``ffi_call``) run at their original types: operands are cast to
  the types they had, results up to the target afterwards. Bit patterns keep their width (random
  floats are built from bits that way), and a callback sees the dtypes it declared. Foreign code
  so computes in its own precision even in a float64 re-run; ``retyped(...).fixed_precision``
  names it.

Every ``while`` loop is bounded (``equivax._rerun_rules.bounded_while``): it stops where its carry
repeats, so a tolerance below the re-run's precision cannot hang it.

A primitive carrying a nested program that this module has not been verified against (see
``equivax._rerun_rules.REBOUND``), or one that cannot run in another precision at all (``REFUSED``: Pallas kernels,
cuDNN fusions, JAX's linearization internals), raises ``RetypeError`` naming it and saying why; the
check then falls back to a documented rounding bound and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex
from jax.extend.core import primitives as jprims
from jax.ref import AbstractRef

from equivax import _patches
from equivax._rerun_rules import (
    DROPPED,
    PINNED,
    PRIMAL,
    REBOUND,
    REFUSED,
    SILENT,
    bounded_while,
    inexact_literal,
)

__all__ = ["RetypeError", "inexact_literal", "retype_value", "retyped", "widest_float"]


class RetypeError(NotImplementedError):
    """The program holds a primitive whose nested program cannot be re-evaluated in another precision."""


def widest_float(*dtypes: Any) -> np.dtype:
    """The widest floating dtype among ``dtypes``, at least float32 (complex when one is complex):
    chosen without JAX's promotion lattice, which strict promotion mode closes."""
    bits = max([jnp.finfo(d).bits for d in dtypes if jnp.issubdtype(d, jnp.inexact)] + [32])
    if any(jnp.issubdtype(d, jnp.complexfloating) for d in dtypes):
        return np.dtype(np.complex128 if bits >= 64 else np.complex64)
    return np.dtype(np.float64 if bits >= 64 else np.float32)


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


def _retype_dtype(value: Any, float_dtype: np.dtype) -> Any:
    new = _target(value, float_dtype)
    return value if new is None else new


def _is_dtype(value: Any) -> bool:
    return isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic))


def _convert_eqn(atom: Any, aval: Any, like: Any) -> Any:
    """An equation converting ``atom`` to ``aval`` (dtype and weak type), placed like ``like``."""
    params = {"new_dtype": aval.dtype, "weak_type": aval.weak_type, "sharding": None}
    var = jex.Var(aval)
    eqn = jex.new_jaxpr_eqn([atom], [var], jprims.convert_element_type_p, params, jex.no_effects, like.source_info)
    return eqn.replace(ctx=like.ctx), var


class _Retyper:
    """Rewrites jaxprs with every floating type cast to ``float_dtype``.

    Each nested program is rewritten once (by identity), so a function called from many places
    stays one function and JAX's caches keyed on it keep working.
    """

    def __init__(self, float_dtype: np.dtype, move_literals: tuple[int, bool] | None = None, patches: bool = False):
        self.float_dtype = float_dtype
        self.patches = patches  # widened convolutions as patches and a matrix product
        self.patched = 0  # convolutions so rewritten
        self._memo: dict[int, tuple[Any, Any]] = {}
        self.fixed_precision: set[str] = set()  # foreign code left computing in its own precision
        self.move_literals = move_literals  # (seed, flip): inexact literals moved by half an ulp
        self.literal_eps = 0.0  # the coarsest precision of the inexact literals met

    # -- types and values ------------------------------------------------------------------------

    def aval(self, aval: Any) -> Any:
        if isinstance(aval, AbstractRef):
            return aval.update(inner_aval=self.aval(aval.inner_aval))
        if not isinstance(aval, jax.core.ShapedArray):
            return aval  # tokens and other non-array types
        new = _target(aval.dtype, self.float_dtype)
        return aval if new is None or new == aval.dtype else aval.update(dtype=new)

    def const(self, value: Any) -> Any:
        """A constant of a nested program, cast on the host: this may run inside a trace, and
        outside ``enable_x64``, where a device cast would be staged or truncated."""
        dtype = getattr(value, "dtype", None)
        new = None if dtype is None else _target(dtype, self.float_dtype)
        if new is None or new == dtype:
            return value
        return np.asarray(value).astype(new)

    def param(self, value: Any) -> Any:
        if isinstance(value, jex.ClosedJaxpr):
            return self.closed(value)
        if isinstance(value, jex.Jaxpr):
            return self.open(value)
        if isinstance(value, tuple):
            items = [self.param(v) for v in value]
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # named tuples
        if isinstance(value, list):
            return [self.param(v) for v in value]
        if isinstance(value, dict):
            return {k: self.param(v) for k, v in value.items()}
        if isinstance(value, jax.core.AbstractValue):
            return self.aval(value)
        if _is_dtype(value):
            return _retype_dtype(value, self.float_dtype)
        if isinstance(value, np.ndarray | np.generic | jax.Array):
            return self.const(value)  # constants passed beside an open jaxpr (reduce_window, ...)
        return value

    # -- programs --------------------------------------------------------------------------------

    def closed(self, closed: Any) -> Any:
        key = id(closed)
        if key not in self._memo:
            self._memo[key] = (closed, jex.ClosedJaxpr(self.open(closed.jaxpr), [self.const(c) for c in closed.consts]))
        return self._memo[key][1]

    def open(self, jaxpr: Any) -> Any:
        key = id(jaxpr)
        if key not in self._memo:
            self._memo[key] = (jaxpr, self._rewrite(jaxpr))
        return self._memo[key][1]

    def _var(self, var: Any, env: dict) -> Any:
        if isinstance(var, jex.DropVar):
            return jex.DropVar(self.aval(var.aval))
        new = jex.Var(self.aval(var.aval), var.initial_qdd, var.final_qdd)
        env[var] = new
        return new

    def _atom(self, atom: Any, env: dict) -> Any:
        if not isinstance(atom, jex.Literal):
            return env[atom]
        aval = self.aval(atom.aval)
        if aval is atom.aval:
            return atom
        value = np.asarray(atom.val, dtype=aval.dtype)
        if inexact_literal(atom.val) and jnp.finfo(aval.dtype).eps < jnp.finfo(atom.aval.dtype).eps:
            own = float(jnp.finfo(atom.aval.dtype).eps)
            self.literal_eps = max(self.literal_eps, own)
            if self.move_literals is not None:
                seed, flip = self.move_literals
                # One sign per magnitude: a constant used in several places (sin 60° in both
                # off-diagonal entries of a rotation, once negated) was rounded once.
                bits = int(np.abs(np.asarray(atom.val, np.float64)).view(np.int64))
                sign = np.random.default_rng((seed, bits)).choice([-0.5, 0.5]) * (-1 if flip else 1)
                value = np.asarray(value * (1 + sign * own), dtype=aval.dtype)
        return jex.Literal(value, aval)

    def _rewrite(self, jaxpr: Any) -> Any:
        env: dict[Any, Any] = {}
        constvars = [self._var(v, env) for v in jaxpr.constvars]
        invars = [self._var(v, env) for v in jaxpr.invars]
        eqns: list[Any] = []
        for eqn in jaxpr.eqns:
            self._eqn(eqn, env, eqns)
        outvars = [self._atom(v, env) for v in jaxpr.outvars]
        effects = _renamed(jaxpr.effects, env)
        return jaxpr.replace(constvars=constvars, invars=invars, outvars=outvars, eqns=eqns, effects=effects)

    def _eqn(self, eqn: Any, env: dict, out: list) -> None:
        name = eqn.primitive.name
        invars = [self._atom(v, env) for v in eqn.invars]
        if name in REFUSED:
            raise RetypeError(f"cannot re-evaluate primitive {name!r} in another precision: {REFUSED[name]}")
        if name in DROPPED:
            self._alias(eqn, invars, env, out)
        elif name in SILENT and not eqn.outvars:
            pass
        elif name == "while" and not eqn.effects:
            self._while(eqn, invars, env, out)
        elif name in PINNED:
            self._pinned(eqn, invars, env, out)
        elif self.patches and _patches.rewrites(eqn, self.float_dtype):
            lhs, rhs = (self.aval(v.aval) for v in eqn.invars)
            params = {k: self.param(v) for k, v in eqn.params.items()}
            self._call(eqn, invars, env, out, _patches.traced(params, lhs, rhs), jex.no_effects)
            self.patched += 1
        elif name in PRIMAL and PRIMAL[name] in eqn.params:
            program = self.closed(_as_closed(eqn.params[PRIMAL[name]]))
            self._call(eqn, invars, env, out, program, _renamed(eqn.effects, env))
        else:
            if name not in REBOUND and _holds_programs(eqn.params):
                raise RetypeError(
                    f"cannot re-evaluate primitive {name!r} in another precision: it carries a nested "
                    "program equivax has not been verified against (add it to equivax._rerun_rules.REBOUND "
                    "with a test)"
                )
            params = {k: self.param(v) for k, v in eqn.params.items()}
            outvars = [self._var(v, env) for v in eqn.outvars]
            out.append(eqn.replace(invars=invars, outvars=outvars, params=params, effects=_renamed(eqn.effects, env)))

    def _while(self, eqn: Any, invars: list, env: dict, out: list) -> None:
        """A ``while`` that cannot run forever (``bounded_while``), as a call of its program."""
        params = eqn.params
        loop = bounded_while(
            self.closed(params["cond_jaxpr"]),
            self.closed(params["body_jaxpr"]),
            params["cond_nconsts"],
            params["body_nconsts"],
        )
        specs = [jax.ShapeDtypeStruct(a.aval.shape, a.aval.dtype) for a in invars]
        self._call(eqn, invars, env, out, jax.make_jaxpr(loop)(*specs), jex.no_effects)

    def _call(self, eqn: Any, invars: list, env: dict, out: list, program: Any, effects: Any) -> None:
        """``eqn`` replaced by a call of ``program`` (a closed jaxpr taking its inputs)."""
        outs = [self._var(v, env) for v in eqn.outvars]
        params = {"call_jaxpr": program}
        call = eqn.replace(invars=invars, outvars=outs, primitive=jprims.closed_call_p, params=params, effects=effects)
        out.append(call)

    def _alias(self, eqn: Any, invars: list, env: dict, out: list) -> None:
        """Pass the operand through (converted if its retyped type differs from the result's)."""
        (var,) = eqn.outvars
        if isinstance(var, jex.DropVar):
            return
        aval = self.aval(var.aval)
        atom = invars[0]
        if atom.aval.dtype != aval.dtype or atom.aval.weak_type != aval.weak_type:
            conv, atom = _convert_eqn(atom, aval, eqn)
            out.append(conv)
        env[var] = atom

    def _pinned(self, eqn: Any, invars: list, env: dict, out: list) -> None:
        """Run ``eqn`` at its original types: cast operands down first, results up afterwards."""
        if eqn.primitive.name != "bitcast_convert_type":  # bits are exact; callbacks and FFI compute
            self.fixed_precision.add(eqn.primitive.name)
        ins = []
        for atom, old in zip(invars, eqn.invars, strict=True):
            if atom.aval != old.aval:
                conv, atom = _convert_eqn(atom, old.aval, eqn)
                out.append(conv)
            ins.append(atom)
        outs = [v if isinstance(v, jex.DropVar) else jex.Var(v.aval) for v in eqn.outvars]
        named = {**env, **{old: new for old, new in zip(eqn.invars, ins, strict=True) if isinstance(old, jex.Var)}}
        out.append(eqn.replace(invars=ins, outvars=outs, effects=_renamed(eqn.effects, named)))
        for old, var in zip(eqn.outvars, outs, strict=True):
            if isinstance(old, jex.DropVar):
                continue
            aval = self.aval(old.aval)
            if aval != var.aval:
                conv, var = _convert_eqn(var, aval, eqn)
                out.append(conv)
            env[old] = var


def _renamed(effects: Any, env: dict) -> Any:
    """Effects on inputs (reads and writes of refs) name the input's variable: name the new one."""

    def rename(effect: Any) -> Any:
        var = getattr(effect, "input", None)
        return effect.replace(env[var]) if isinstance(var, jex.Var) and var in env else effect

    return type(effects)(rename(e) for e in effects)


def _as_closed(program: Any) -> Any:
    return program if isinstance(program, jex.ClosedJaxpr) else jex.ClosedJaxpr(program, ())


def _holds_programs(params: dict) -> bool:
    """Whether any parameter holds a jaxpr, in tuples, lists, dicts and named tuples at any depth
    (where ``_Retyper.param`` finds them)."""

    def holds(value: Any) -> bool:
        if isinstance(value, jex.ClosedJaxpr | jex.Jaxpr):
            return True
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, tuple | list):
            return any(holds(v) for v in value)
        return False

    return any(holds(v) for v in params.values())


def retyped(
    closed_jaxpr: Any, float_dtype: Any, move_literals: tuple[int, bool] | None = None, *, patches: bool = False
) -> Callable[..., Sequence[Any]]:
    """A function evaluating ``closed_jaxpr`` with all floating values in ``float_dtype``.

    The program is rewritten once, here (a ``RetypeError`` says which primitive could not be);
    calls cast their arguments and the program's constants, then evaluate it. For ``float64``,
    call it (and ``jax.jit`` it) inside ``jax.enable_x64(True)``.

    The function's ``fixed_precision`` attribute names the primitives of foreign code (host
    callbacks, FFI calls) that were handed their original dtypes and so still compute in the
    original precision: a float64 re-run of a program holding one is float64 only around it.
    ``jax.debug.print`` and ``jax.debug.callback`` are left out: they return nothing.

    Floating literals keep the value they were traced with (``math.sqrt(3)`` in a float32 program
    is float32's nearest value); ``literal_eps`` is the coarsest precision of those that look
    rounded (``inexact_literal``), 0 when there are none. ``move_literals=(seed, flip)`` moves each
    of them by half an ulp of its own precision, with a seeded sign per magnitude (the opposite
    signs with ``flip``), as ``equivax._program.perturbed`` moves stored arrays.

    ``patches=True`` computes each convolution widened to float64 as patches of its input and one
    matrix product (``equivax._patches``): on CPU, XLA's float64 convolution is a slow loop of its
    own while its float64 matrix product is a library call. ``patched`` counts them.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> w = jnp.float32(1e-8)
      >>> closed = jax.make_jaxpr(lambda x: (x + w) - x)(jnp.float32(1.0))
      >>> with jax.enable_x64(True):
      ...     print(float(retyped(closed, jnp.float64)(1.0)[0]) > 0)
      True
    """
    float_dtype = np.dtype(float_dtype)
    retyper = _Retyper(float_dtype, move_literals, patches)
    program = retyper.open(closed_jaxpr.jaxpr)
    consts = list(closed_jaxpr.consts)

    def run(*args: Any) -> list[Any]:
        # The program's own constants are cast when it runs (inside jit: on the device, once).
        cast = [retype_value(jnp.asarray(c), float_dtype) for c in consts]
        return jex.jaxpr_as_fun(jex.ClosedJaxpr(program, cast))(*(retype_value(a, float_dtype) for a in args))

    run.fixed_precision = frozenset(retyper.fixed_precision)  # type: ignore[attr-defined]
    run.literal_eps = retyper.literal_eps  # type: ignore[attr-defined]
    run.patched = retyper.patched  # type: ignore[attr-defined]
    return run
