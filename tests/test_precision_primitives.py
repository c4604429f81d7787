"""Every primitive that carries a nested program re-runs in float64, batched and unbatched.

Each construct below is a small function ``fn(dt, *args)`` written once for both precisions: ``dt``
is the floating dtype it is traced in, and its constants are exact in float32, so the float64
re-run of its float32 trace must equal the same function traced in float64 to float64 rounding.
The check traces f under ``jax.vmap`` over group elements, so each runs both ways.

``test_every_nested_program_primitive_is_covered`` walks the primitives this JAX version defines and
fails, naming them, when one that carries a nested program has no construct here and is not refused
by ``equivax.precision`` with a reason.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.experimental.scheduling_groups
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental import io_callback
from jax.extend import core as jex
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import equivax
from equivax import _rerun_rules, precision
from equivax.precision import RetypeError, retyped

F64 = np.dtype(np.float64)
RTOL = 1e-12  # float64 rounding of programs a few dozen operations deep


@dataclass(frozen=True)
class Construct:
    fn: Callable[..., object]  # fn(dt, *args)
    shapes: tuple[tuple[int, ...], ...]  # of the float32 inputs of one example
    primitives: tuple[str, ...]  # its trace holds these, at any depth
    batched_primitives: tuple[str, ...] | None = None  # under vmap, when they differ
    vmap: bool = True  # whether it can run under vmap at all
    platforms: tuple[str, ...] = ("cpu", "gpu", "tpu")  # where its original program runs
    rtol: float = RTOL
    covers: tuple[str, ...] = ()  # primitives it exercises that stage out as others (not in its trace)


def _complex(dt):
    return jnp.result_type(dt, jnp.complex64)


def _spd(a):
    """A well-conditioned symmetric positive definite matrix from any square one."""
    return a @ a.T + 4.0 * jnp.eye(a.shape[-1], dtype=a.dtype)


def _maxpool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (1, 1), "VALID")


def _newton_sqrt(dt, a):
    """sqrt(a) by Newton's method until the residual is small: a data-dependent while loop."""
    a = 1.0 + a * a
    return lax.while_loop(lambda c: jnp.abs(c * c - a) > 2.0**-20 * a, lambda c: 0.5 * (c + a / c), a)


def _cg(dt, a, b):
    m = _spd(a)
    return jax.scipy.sparse.linalg.cg(lambda v: m @ v, b, tol=1e-5)[0]


@jax.custom_jvp
def _softclip(x):
    return jnp.tanh(x) * 2.0


_softclip.defjvp(lambda p, t: (_softclip(p[0]), t[0] * 0.5))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scaled_sin(x, scale):
    return jnp.sin(x) * scale


_scaled_sin.defvjp(lambda x, s: (_scaled_sin(x, s), x), lambda s, x, g: (g * jnp.cos(x) * s,))


@jax.custom_vjp
def _remat_sin(x):
    return jnp.sin(x) * 1.5


_remat_sin.defvjp(lambda x: (_remat_sin(x), x), lambda x, g: (g * jnp.cos(x) * 1.5,), optimize_remat=True)


@jax.custom_batching.custom_vmap
def _vmapped_sin(x):
    return jnp.sin(x) * 0.75


@_vmapped_sin.def_vmap
def _(axis_size, in_batched, x):
    return jnp.sin(x) * 0.75, in_batched[0]


def _custom_partitioning():
    from jax.experimental.custom_partitioning import custom_partitioning

    @custom_partitioning
    def f(x):
        return jnp.sin(x) * 0.5

    f.def_partition(
        infer_sharding_from_operands=lambda mesh, shapes, res: shapes[0].sharding,
        partition=lambda mesh, shapes, res: (
            mesh,
            lambda x: jnp.sin(x) * 0.5,
            shapes[0].sharding,
            (shapes[0].sharding,),
        ),
        sharding_rule="i j -> i j",
    )
    return f


_partitioned = _custom_partitioning()


def _mesh():
    return jax.make_mesh((1,), ("i",), axis_types=(AxisType.Auto,), devices=jax.devices()[:1])


def _shard_map(dt, x):
    body = lambda x: lax.psum(jnp.sin(x) * 2.0, "i")  # noqa: E731
    return jax.shard_map(body, mesh=_mesh(), in_specs=P("i"), out_specs=P())(x)


def _jit_shardings(dt, x, y):
    sharding = NamedSharding(_mesh(), P())
    f = jax.jit(lambda x, y: jnp.tanh(x) @ y, in_shardings=(sharding, sharding), out_shardings=sharding)
    return f(x, y) + jax.jit(lambda x, n: x * n, static_argnums=1)(x, 3)


def _call(dt, x):
    from jax._src import linear_util as lu

    f = lambda y: [jnp.sin(y) * 0.25]  # noqa: E731
    (out,) = jex.primitives.call_p.bind(
        x, subfuns=(lu.wrap_init(f, debug_info=jax.api_util.debug_info("f", f, (x,), {})),)
    )
    return out


def _closed_call(dt, x):
    program = jax.make_jaxpr(lambda y: (jnp.sin(y) * 0.25,))(x)
    prim = jex.primitives.closed_call_p
    (out,) = prim.bind(x, **prim.get_bind_params({"call_jaxpr": program}))
    return out


def _eval_jaxpr(dt, x):
    from jax._src.lax.eval_jaxpr import eval_jaxpr_p  # stages out as closed_call

    (out,) = eval_jaxpr_p.bind(x, jaxpr=jax.make_jaxpr(lambda y: (jnp.cos(y) * 0.25,))(x))
    return out


def _run_state(dt, x):
    from jax._src.state.discharge import run_state

    def body(refs):
        a, b = refs
        b[...] = jnp.sin(a[...]) * 0.5 + b[...]

    return run_state(body)((x, jnp.full_like(x, 0.125)))[1]


def _refs(dt, x):
    ref = jax.new_ref(jnp.zeros_like(x))
    ref[...] += jnp.sin(x) * 0.5
    return ref[...]


def _fused(dt, x):
    from jax._src import core
    from jax.experimental.fused import fused

    return fused(out_spaces=(core.MemorySpace.Device,))(lambda y: jnp.sin(y) * 0.5)(x)


def _compute_on(dt, x):
    from jax._src import core
    from jax.experimental.compute_on import compute_on2

    f = compute_on2(lambda a: jnp.sin(a) * 0.5, compute_type="device_host", out_memory_spaces=core.MemorySpace.Device)
    return f(x)


def _select_and_scatter(dt, x, s):
    from jax._src.lax.windowed_reductions import _select_and_scatter

    return _select_and_scatter(x, lax.ge, (2, 2), (1, 1), ((0, 0), (0, 0)), s, dt(0), lax.add)


def _linalg(dt, a):
    s = _spd(a)
    lu_, _, _ = lax.linalg.lu(a + 4.0 * jnp.eye(a.shape[0], dtype=a.dtype))
    q, r = jnp.linalg.qr(a)
    return (
        jnp.linalg.eigh(s)[0],
        jnp.linalg.svd(a, compute_uv=False),
        q,
        r,
        jnp.linalg.cholesky(s),
        lax.linalg.triangular_solve(jnp.linalg.cholesky(s), a, left_side=True, lower=True),
        lu_,
        jax.scipy.linalg.lu_factor(s)[0],
    )


CONSTRUCTS: dict[str, Construct] = {
    # 1. reductions with a program for a body, and what max pools differentiate into
    "reduce": Construct(
        lambda dt, x: (
            lax.reduce(x, dt(0), jnp.add, (0,)),
            lax.reduce(
                (x, lax.broadcasted_iota(jnp.int32, x.shape, 1)),
                (dt(-jnp.inf), jnp.int32(0)),
                lambda a, b: (jnp.maximum(a[0], b[0]), jnp.where(a[0] >= b[0], a[1], b[1])),
                (1,),
            ),
        ),
        ((4, 5),),
        ("reduce",),
    ),
    "reduce_window": Construct(
        lambda dt, x: (
            lax.reduce_window(x, -jnp.inf, jnp.maximum, (2, 2), (1, 1), "SAME"),
            lax.reduce_window(x, dt(0), lambda a, b: a + b * b, (3, 1), (1, 1), "VALID"),
        ),
        ((5, 4),),
        ("reduce_window",),
    ),
    "select_and_scatter_add": Construct(
        lambda dt, x: jax.grad(lambda x: (_maxpool(x) ** 2).sum())(x), ((4, 4),), ("select_and_scatter_add",)
    ),
    "select_and_gather_add": Construct(
        lambda dt, x: jax.jvp(_maxpool, (x,), (jnp.cos(x),)), ((4, 4),), ("select_and_gather_add",)
    ),
    "select_and_scatter": Construct(
        _select_and_scatter,
        ((4, 4), (3, 3)),
        ("select_and_scatter",),
        vmap=False,  # JAX has no batching rule
    ),
    "scatter": Construct(
        lambda dt, x: (
            x.at[0].add(0.25).at[1].mul(3.0).at[2].max(0.5).at[3].min(-0.5).at[0, 0].set(0.125),
            lax.scatter_sub(x, jnp.array([[1]]), x[:1] * 0.5, lax.ScatterDimensionNumbers((1,), (0,), (0,))),
        ),
        ((4, 3),),
        ("scatter", "scatter-add", "scatter-mul", "scatter-max", "scatter-min", "scatter-sub"),
    ),
    # 2. loops and branches, whose predicate or index vmap batches
    "while_newton": Construct(_newton_sqrt, ((),), ("while",)),  # vmapped: its predicate is bool[n]
    "while_fori": Construct(
        lambda dt, x: lax.while_loop(lambda s: s[0] < 3, lambda s: (s[0] + 1, s[1] * 1.125 + x), (0, x))[1],
        ((4,),),
        ("while",),
    ),
    "cg": Construct(_cg, ((4, 4), (4,)), ("custom_linear_solve", "while")),
    "cond": Construct(
        lambda dt, x: (
            lax.cond(x.sum() > 0, lambda a: jnp.sin(a) * 1.5, lambda a: a - 0.25, x),
            lax.switch(jnp.argmax(x) % 3, [jnp.sin, jnp.cos, lambda a: a * 0.5], x),
        ),
        ((4,),),
        ("cond",),
        batched_primitives=("select_n",),  # vmap turns a batched index into a select
    ),
    "platform_dependent": Construct(
        lambda dt, x: lax.platform_dependent(x, cpu=jnp.sin, default=jnp.cos), ((4,),), ("cond", "platform_index")
    ),
    "scan": Construct(
        lambda dt, x: (
            lax.scan(lambda c, r: (c * 0.5 + r, c * r), x[0], x, reverse=True, unroll=2),
            lax.map(lambda r: jnp.sin(r) / 3.0, x, batch_size=2),
        ),
        ((4, 3),),
        ("scan",),
    ),
    # 3. calls, sharding, custom rules, sorting and linear algebra
    "shard_map": Construct(_shard_map, ((4, 3),), ("shard_map",)),
    "jit_shardings": Construct(_jit_shardings, ((3, 3), (3, 3)), ("jit",)),
    "call": Construct(_call, ((4,),), ("call",)),
    "closed_call": Construct(_closed_call, ((4,),), ("closed_call",)),
    "eval_jaxpr": Construct(_eval_jaxpr, ((4,),), ("closed_call",), covers=("eval_jaxpr",)),
    "remat": Construct(
        lambda dt, x: (
            jax.checkpoint(lambda a: jnp.sin(a @ a) * 2.0, policy=jax.checkpoint_policies.dots_saveable)(x),
            jax.grad(lambda a: jax.checkpoint(lambda b: jnp.sin(b) ** 2, prevent_cse=False)(a).sum())(x),
        ),
        ((3, 3),),
        ("remat2",),
    ),
    "custom_jvp": Construct(
        lambda dt, x: (_softclip(x), jax.nn.relu(x), jax.nn.logsumexp(x), jax.grad(lambda a: _softclip(a).sum())(x)),
        ((4,),),
        ("custom_jvp_call",),
    ),
    "custom_vjp": Construct(
        lambda dt, x: (_scaled_sin(x, 1.5), jax.grad(lambda a: _scaled_sin(a, 0.5).sum())(x)),
        ((4,),),
        ("custom_vjp_call",),
    ),
    "remat_opt": Construct(
        lambda dt, x: (jax.vjp(_remat_sin, x)[0], jax.grad(lambda a: _remat_sin(a).sum())(x)),
        ((4,),),
        ("remat_opt", "custom_vjp_call"),
    ),
    "custom_vmap": Construct(
        lambda dt, x: _vmapped_sin(x),
        ((4,),),
        ("custom_vmap_call",),
        batched_primitives=(),  # vmap applies its rule
    ),
    "custom_partitioning": Construct(lambda dt, x: _partitioned(x), ((4, 4),), ("custom_partitioning",), vmap=False),
    "linear_call": Construct(
        lambda dt, x: jax.custom_derivatives.linear_call(
            lambda _, y: y * 2.0 + jnp.sin(y), lambda _, y: y * 2.0, None, x
        ),
        ((4,),),
        ("linear_call",),
        vmap=False,  # JAX has no batching rule
    ),
    "composite": Construct(
        lambda dt, x: lax.composite(lambda a: jnp.sin(a) * 0.5, name="equivax.test_sin")(x),
        ((4,),),
        ("composite",),
        vmap=False,  # JAX has no batching rule
    ),
    "compute_on": Construct(_compute_on, ((4,),), ("compute_on",)),
    "xla_metadata_call": Construct(
        lambda dt, x: jax.experimental.scheduling_groups.xla_metadata_call(lambda a: jnp.sin(a) * 0.5, tag="t")(x),
        ((4,),),
        ("xla_metadata_call",),
    ),
    "fused_call": Construct(_fused, ((4,),), ("fused_call",), vmap=False, platforms=("gpu",)),
    "run_state": Construct(_run_state, ((4,),), ("run_state",), vmap=False),  # run_state has no batching rule
    "refs": Construct(_refs, ((4,),), ("new_ref", "swap", "get")),
    "cumulative": Construct(
        lambda dt, x: (
            jnp.cumsum(x, 0),
            lax.cumprod(x, 1, reverse=True),
            lax.cummax(x, 0),
            lax.cummin(x, 1),
            lax.cumlogsumexp(x, 0, reverse=True),
        ),
        ((4, 3),),
        ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"),
    ),
    "sort": Construct(
        lambda dt, x: (lax.sort((x[0], x[1], x[2]), num_keys=2), jnp.argsort(x[1]), jnp.sort(x, axis=0)),
        ((3, 5),),
        ("sort",),
    ),
    "top_k": Construct(
        lambda dt, x: (lax.top_k(x, 2), jnp.argmax(x, 0), jnp.argmin(x, 1), lax.approx_max_k(x, 2)),
        ((4, 5),),
        ("top_k", "argmax", "argmin", "approx_top_k"),
    ),
    "solve": Construct(
        lambda dt, a, b: (jnp.linalg.solve(_spd(a), b), jnp.linalg.inv(_spd(a))),
        ((4, 4), (4,)),
        ("custom_linear_solve", "lu"),
    ),
    "linalg": Construct(_linalg, ((4, 4),), ("eigh", "svd", "qr", "cholesky", "triangular_solve", "lu"), rtol=1e-10),
    "fft": Construct(
        lambda dt, x: (
            jnp.fft.fft(x.astype(_complex(dt))),
            jnp.fft.ifft2(x.astype(_complex(dt))),
            jnp.fft.rfft(x),
            jnp.fft.irfft(jnp.fft.rfft(x), n=x.shape[-1]),
        ),
        ((4, 4),),
        ("fft",),
    ),
    "random_bits": Construct(  # random floats are made from bits in float32, then used in dt
        lambda dt, x: x + jax.random.uniform(jax.random.key(0), x.shape, jnp.float32).astype(dt),
        ((4,),),
        ("bitcast_convert_type",),
    ),
}


def _primitives_in(jaxpr) -> set[str]:
    found = set()
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for inner in jex.jaxprs_in_params(eqn.params):
            found |= _primitives_in(inner)
    return found


def _args(construct: Construct, batched: bool, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lead = (3,) if batched else ()
    return [rng.standard_normal(lead + s).astype(np.float32) for s in construct.shapes]


def _traced(construct: Construct, batched: bool, dt):
    fn = functools.partial(construct.fn, dt)
    return jax.vmap(fn) if batched else fn


def _cases():
    for name, c in CONSTRUCTS.items():
        yield pytest.param(name, False, id=f"{name}-unbatched")
        if c.vmap:
            yield pytest.param(name, True, id=f"{name}-vmapped")


@pytest.mark.parametrize(("name", "batched"), list(_cases()))
def test_rerun_matches_a_float64_program(name, batched):
    c = CONSTRUCTS[name]
    args = _args(c, batched)
    closed = jax.make_jaxpr(_traced(c, batched, jnp.float32))(*args)
    expected = c.primitives if not batched or c.batched_primitives is None else c.batched_primitives
    assert set(expected) <= _primitives_in(closed.jaxpr), sorted(_primitives_in(closed.jaxpr))
    with jax.enable_x64(True):
        # The rewritten program, nested programs included, passes JAX's own type checker (where
        # the original does: vmap of closed_call gives it a parameter its checker rejects).
        if _typechecks(closed.jaxpr):
            jex.check_jaxpr(precision._Retyper(F64).open(closed.jaxpr))
        if jax.default_backend() not in c.platforms:
            pytest.skip(f"{name} runs on {c.platforms} only; its rewritten program type-checks")
        run = retyped(closed, jnp.float64)
        assert not run.fixed_precision  # no foreign code: float64 throughout
        rerun = jax.jit(run)(*args)
        reference = jax.jit(_traced(c, batched, jnp.float64))(*(a.astype(np.float64) for a in args))
    reference = jax.tree.leaves(reference)
    assert len(rerun) == len(reference)
    for got, want in zip(rerun, reference, strict=True):
        if jnp.issubdtype(want.dtype, jnp.inexact):
            assert got.dtype == want.dtype, (got.dtype, want.dtype)
            assert np.dtype(want.dtype) in (np.dtype(np.float64), np.dtype(np.complex128))
            scale = float(np.max(np.abs(want), initial=1.0))
            np.testing.assert_allclose(got, want, rtol=c.rtol, atol=c.rtol * scale)
        else:  # indices: int32 as traced, where a program written under x64 makes int64
            np.testing.assert_array_equal(got, want)


def _typechecks(jaxpr) -> bool:
    try:
        jex.check_jaxpr(jaxpr)
    except Exception:  # noqa: BLE001 - JaxprTypeError, or a checker that rejects JAX's own params
        return False
    return True


def test_a_batched_predicate_stays_batched():
    """vmap of a tolerance-terminated loop keeps a bool[n] predicate; the re-run binds it as is."""
    closed = jax.make_jaxpr(jax.vmap(functools.partial(_newton_sqrt, jnp.float32)))(np.arange(5, dtype=np.float32))
    (loop,) = [e for e in closed.jaxpr.eqns if e.primitive.name == "while"]
    assert loop.params["cond_jaxpr"].out_avals[0].shape == (5,)


# --- host callbacks: the callback sees the dtypes it declared, its result is retyped -------------


def _callback_case(kind: str, batched: bool):
    seen: list[np.dtype] = []

    def host(a):
        seen.append(np.asarray(a).dtype)
        return np.sin(np.asarray(a)).astype(np.float32)

    def f(x):
        spec = jax.ShapeDtypeStruct(x.shape, jnp.float32)
        if kind == "pure_callback":
            y = jax.pure_callback(host, spec, x * 0.5, vmap_method="sequential")
        elif kind == "pure_callback_expand_dims":
            y = jax.pure_callback(host, spec, x * 0.5, vmap_method="expand_dims")
        elif kind == "io_callback":
            y = io_callback(host, spec, x * 0.5, ordered=False)
        elif kind == "io_callback_ordered":
            y = io_callback(host, spec, x * 0.5, ordered=True)
        elif kind == "debug_callback":
            jax.debug.callback(lambda a: [host(a), None][1], x * 0.5)
            y = jnp.sin(x * 0.5)
        else:
            jax.debug.print("x={x}", x=x[..., 0])
            y = jnp.sin(x * 0.5)
        return y * 2.0 + x

    return f, seen


@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "vmapped"])
@pytest.mark.parametrize(
    "kind",
    [
        "pure_callback",
        "pure_callback_expand_dims",
        "io_callback",
        "io_callback_ordered",
        "debug_callback",
        "debug_print",
    ],
)
def test_callbacks_see_their_declared_dtypes(kind, batched):
    f, seen = _callback_case(kind, batched)
    if kind == "io_callback_ordered" and batched:
        # JAX cannot vmap an ordered io_callback, and a check vmaps f over the elements: it says so
        # in one line, naming the fix, instead of failing inside JAX.
        with pytest.raises(TypeError, match="io_callback with ordered=False") as err:
            equivax.check(f, np.ones((2, 4), np.float32), equivax.groups.rotations(), lambda g, x: x, lambda g, y: y)
        assert "\n" not in str(err.value)
        return
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    g = jax.vmap(f) if batched else f
    closed = jax.make_jaxpr(g)(x if batched else x[0])
    assert re.sub("_expand_dims|_ordered", "", kind) in _primitives_in(closed.jaxpr)
    with jax.enable_x64(True):
        run = retyped(closed, jnp.float64)
        (rerun,) = jax.jit(run)(x if batched else x[0])
    jax.effects_barrier()
    assert rerun.dtype == jnp.float64
    assert all(dtype == np.float32 for dtype in seen), seen
    if kind.startswith("debug"):
        # Debug prints and callbacks return nothing: the re-run leaves them out, so they neither
        # fix its precision nor show float64 values a second time.
        assert run.fixed_precision == frozenset() and not seen
        reference = np.sin(np.float64(x) * 0.5) * 2 + np.float64(x)
        np.testing.assert_allclose(rerun, reference if batched else reference[0], rtol=1e-14)
    else:
        assert run.fixed_precision == {re.sub("_expand_dims|_ordered", "", kind)}
        assert seen  # the callback ran, on float32 operands
        reference = np.sin(np.float32(x) * np.float32(0.5)).astype(np.float64) * 2 + np.float64(x)
        np.testing.assert_allclose(rerun, reference if batched else reference[0], rtol=1e-6)


def test_foreign_functions_run_at_their_declared_types():
    """An FFI call is handed the dtypes it was written for: here LAPACK's float32 Cholesky."""
    if jax.default_backend() != "cpu":
        pytest.skip("calls a CPU LAPACK kernel")

    def f(a):
        s = a @ a.T + 4.0 * jnp.eye(3, dtype=a.dtype)
        types = (jax.ShapeDtypeStruct(s.shape, jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
        call = jax.ffi.ffi_call("lapack_spotrf_ffi", types, input_output_aliases={0: 0})
        factor, info = call(s, uplo=np.uint8(ord("L")))
        return jnp.tril(factor) * 2.0, info

    a = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    # JAX binds its LAPACK kernels when it first lowers one; calling one unbound would crash.
    jax.block_until_ready(jnp.linalg.cholesky(jnp.eye(3, dtype=jnp.float32)))
    try:
        reference = jax.jit(f)(a)
    except Exception as err:  # noqa: BLE001 - a jaxlib whose kernel has another name
        pytest.skip(f"this jaxlib has no lapack_spotrf_ffi: {err}")
    closed = jax.make_jaxpr(f)(a)
    assert "ffi_call" in _primitives_in(closed.jaxpr)
    with jax.enable_x64(True):
        run = retyped(closed, jnp.float64)
        factor, info = jax.jit(run)(a)
    assert run.fixed_precision == {"ffi_call"}
    assert factor.dtype == jnp.float64 and info == 0
    np.testing.assert_allclose(factor, reference[0], rtol=1e-6)  # what the float32 kernel computes


# --- the enumeration ---------------------------------------------------------------------------

#: Primitives the detector below flags that carry no nested program, and why they are flagged.
NOT_NESTED = {
    "broadcast_in_dim": "a custom type check, for dynamic shapes",
    "dynamic_slice": "a custom type check, for dynamic shapes",
    "iota": "a custom type check, for dynamic shapes",
    "reshape": "a custom type check, for dynamic shapes",
    "free_ref": "a dead-code rule, for freeing a mutable array",
}

_PROGRAM_PARAM = re.compile(r"jaxpr|branches|computation|callee|^call$")


def _all_primitives() -> dict[str, object]:
    """Every primitive object defined by the modules of this JAX installation."""
    from jax._src import core

    for module in pkgutil.walk_packages(jax.__path__, "jax."):
        if re.search(r"test|jax2tf|_src\.lib\b|cloud_tpu", module.name):
            continue
        try:
            importlib.import_module(module.name)
        except Exception:  # noqa: BLE001 - optional dependencies (GPU/TPU toolkits) may be absent
            continue
    found = {}
    for name, module in list(sys.modules.items()):
        if name == "jax" or name.startswith("jax."):
            for value in list(vars(module).values()):
                if isinstance(value, core.Primitive):
                    found.setdefault(value.name, value)
    return found


def _keyword_names(f, seen: set[int]) -> set[str]:
    """Keyword-only parameter names of a rule, through partials and closures."""
    if f is None or id(f) in seen or not callable(f):
        return set()
    seen.add(id(f))
    if isinstance(f, functools.partial):
        names = set(f.keywords)
        for inner in (f.func, *f.args, *f.keywords.values()):
            names |= _keyword_names(inner, seen)
        return names
    try:
        names = {n for n, p in inspect.signature(f).parameters.items() if p.kind == p.KEYWORD_ONLY}
    except (TypeError, ValueError):
        names = set()
    for cell in getattr(f, "__closure__", None) or ():
        try:
            names |= _keyword_names(cell.cell_contents, seen)
        except ValueError:
            pass
    return names


def _nested_program_primitives() -> dict[str, str]:
    """Primitives whose parameters hold programs: by the parameter names of their rules (abstract
    evaluation, batching, differentiation, lowering), by being call primitives, or by having
    the dead-code or type-check rules JAX gives to higher-order primitives. Maps name to evidence."""
    from jax._src import core
    from jax._src.interpreters import ad, batching, mlir
    from jax._src.interpreters import partial_eval as pe

    tables = [
        batching.primitive_batchers,
        batching.fancy_primitive_batchers,
        ad.primitive_jvps,
        ad.primitive_transposes,
        mlir._lowerings,
        pe.custom_staging_rules,
        pe.partial_eval_jaxpr_custom_rules,
    ]
    found = {}
    for name, prim in _all_primitives().items():
        rules = [prim.impl, getattr(prim, "abstract_eval", None)]
        for table in tables:
            try:
                rules.append(table[prim])
            except (KeyError, TypeError):
                pass
        rules += [lowerings[prim] for lowerings in mlir._platform_specific_lowerings.values() if prim in lowerings]
        names = set().union(*(_keyword_names(rule, set()) for rule in rules))
        hits = sorted(n for n in names if _PROGRAM_PARAM.search(n))
        if hits:
            found[name] = f"rule parameters {hits}"
        elif isinstance(prim, core.CallPrimitive):
            found[name] = "a call primitive"
        elif prim in pe.dce_rules or prim in core.custom_typechecks:
            found[name] = "a dead-code or type-check rule of its own"
    return found


@functools.cache
def _detected() -> dict[str, str]:
    return _nested_program_primitives()


def test_every_nested_program_primitive_is_covered():
    detected = _detected()
    # The detector works: it finds the primitives everyone knows carry programs.
    assert {"while", "cond", "scan", "jit", "custom_jvp_call", "custom_vjp_call", "shard_map"} <= set(detected)
    covered = {p for c in CONSTRUCTS.values() for p in (*c.primitives, *c.covers)}
    missing = {
        name: why
        for name, why in detected.items()
        if name not in covered and name not in _rerun_rules.REFUSED and name not in NOT_NESTED
    }
    assert not missing, (
        "primitives with nested programs that no construct here re-runs and equivax.precision does "
        f"not refuse (add a construct, and to _REBOUND/_PRIMAL if needed, or refuse with a reason): {missing}"
    )


def test_every_supported_primitive_is_exercised():
    """An allowlisted primitive that this JAX defines must be exercised by a construct, so support is
    shown, not claimed."""
    defined = set(_detected())
    claimed = (_rerun_rules.REBOUND | set(_rerun_rules.PRIMAL)) & defined
    covered = {p for c in CONSTRUCTS.values() for p in (*c.primitives, *(c.batched_primitives or ()), *c.covers)}
    assert claimed <= covered, sorted(claimed - covered)


@pytest.mark.parametrize("name", sorted(_rerun_rules.REFUSED))
def test_refused_primitives_say_which_and_why(name):
    """A program holding a refused primitive raises RetypeError naming it and giving the reason."""
    prim = _all_primitives().get(name)
    if prim is None:
        pytest.skip(f"this JAX defines no {name!r}")
    x = jex.Var(jax.core.ShapedArray((2,), jnp.float32))
    y = jex.Var(jax.core.ShapedArray((2,), jnp.float32))
    body = jax.make_jaxpr(jnp.sin)(np.ones(2, np.float32))
    eqn = jex.new_jaxpr_eqn([x], [y], prim, {"jaxpr": body}, jex.no_effects)
    closed = jex.ClosedJaxpr(jex.Jaxpr([], [x], [y], [eqn], debug_info=body.jaxpr.debug_info), [])
    with pytest.raises(RetypeError, match=re.escape(repr(name))) as err:
        retyped(closed, jnp.float64)
    assert _rerun_rules.REFUSED[name] in str(err.value)
