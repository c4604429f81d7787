"""Compiled checks, cached like ``jax.jit`` caches: once per (f, actions, chunking, shapes, devices).

A Flax NNX module or a callable pytree is identified by its structure, so a module updated in
place re-uses its program without tracing. A plain callable is traced again on every check and
its program re-used only when the fresh trace is the same program (closed-over values are then
passed in as arguments): a closure whose captured module changed is never judged by a stale
program. JAX's persistent compilation cache is switched on in a user cache directory (see
``enable_persistent_cache``), so a new process skips XLA compilation of programs seen before.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

from equivax._kernel import Kernel
from equivax._program import Program, trace, trace_alone

__all__ = ["CPU_CHUNK_BYTES", "CacheInfo", "cache_info", "clear_cache", "enable_persistent_cache", "program_for"]

#: On CPU, evaluating every element at once is slower than chunks once the largest intermediate
#: array outgrows the caches (measured in benchmarks/check_vs_forward.py: 2x at 1 MB per element).
CPU_CHUNK_BYTES = 2 * 2**20

_CACHE: collections.OrderedDict[Any, Program] = collections.OrderedDict()
_CACHE_SIZE = 64
_COUNTS = {"hits": 0, "traces": 0, "programs": 0}


class CacheInfo(NamedTuple):
    """What the cache of compiled checks has done since the process started (or ``clear_cache``)."""

    hits: int  # checks that re-used a compiled program
    traces: int  # times a kernel was traced (plain callables are traced on every check)
    programs: int  # programs built (each compiled on its first run)
    size: int  # programs held now


def cache_info() -> CacheInfo:
    """Counts of hits, traces and programs built, and the number of programs held."""
    return CacheInfo(_COUNTS["hits"], _COUNTS["traces"], _COUNTS["programs"], len(_CACHE))


def clear_cache() -> None:
    """Forget every compiled check (the next call traces and compiles again) and reset the counts."""
    _CACHE.clear()
    for key in _COUNTS:
        _COUNTS[key] = 0


def _signature(tree: Any) -> tuple[Any, ...]:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((tuple(np.shape(a)), str(jnp.result_type(a))) for a in leaves))


def _largest_intermediate(jaxpr: Any) -> int:
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape, dtype = getattr(var.aval, "shape", ()), getattr(var.aval, "dtype", None)
            if dtype is not None and hasattr(dtype, "itemsize"):
                largest = max(largest, int(np.prod(shape)) * dtype.itemsize)
        for inner in jex.jaxprs_in_params(eqn.params):
            largest = max(largest, _largest_intermediate(inner))
    return largest


def auto_chunk(per_element: float, n_elements: int) -> int | None:
    """Chunk size for the default ``chunk_size=None``: all at once, except on a CPU whose caches
    the per-element intermediates (``per_element`` bytes) would overflow. ``n_elements`` counts
    those on one device.

    Chunks are balanced (``ceil(n / chunks)``) and the elements padded to a whole number of
    them, so XLA compiles the chunk body once (a remainder chunk would compile it twice).
    """
    if jax.default_backend() != "cpu" or n_elements < 2:
        return None
    limit = int(CPU_CHUNK_BYTES // max(per_element, 1))
    if limit >= n_elements:
        return None
    chunks = -(-n_elements // max(limit, 1))
    return -(-n_elements // chunks)


def _per_element_bytes(f_alone: Any) -> int:
    """The largest array one element's evaluation makes, from a trace of f alone (far cheaper than
    tracing the whole kernel twice)."""
    outputs = [int(np.prod(a.aval.shape)) * a.aval.dtype.itemsize for a in f_alone.outvars if hasattr(a, "aval")]
    return max(_largest_intermediate(f_alone), *outputs, 1)


def _build(kernel: Kernel, args: tuple[Any, ...], devices: Sequence[Any], traced: Any = None) -> Program:
    _COUNTS["programs"] += 1
    per_device = -(-len(args[2]) // kernel.shards)
    f_alone = None
    if traced is None and kernel.chunk_size is None and jax.default_backend() == "cpu" and per_device >= 2:
        f_alone = trace_alone(kernel, args[0], args[1])
        chunk = None if f_alone is None else auto_chunk(_per_element_bytes(f_alone), per_device)
        if chunk is not None:
            kernel = dataclasses.replace(kernel, chunk_size=chunk)
    _COUNTS["traces"] += traced is None
    return Program(kernel, args, devices, traced, f_alone)


def program_for(
    kernel: Kernel, args: tuple[Any, ...], devices: Sequence[Any], static: bool, fingerprint: Any = None
) -> tuple[Program, list[Any]]:
    """The compiled program for this kernel and these arguments, and the closed-over values to run
    it with. ``static``: the kernel's f is identified by its structure (no re-trace needed);
    otherwise an unchanged ``fingerprint`` (not ``None``) of a plain callable spares the re-trace."""
    key = (kernel, _signature(args), tuple(devices[: kernel.shards]))
    program = _CACHE.get(key)
    if program is not None and (static or (fingerprint is not None and fingerprint == program.fingerprint)):
        _COUNTS["hits"] += 1
        _CACHE.move_to_end(key)
        return program, program.consts
    if program is not None:  # a plain callable that may have changed: trace again and compare
        _COUNTS["traces"] += 1
        fresh = trace(program.kernel, program._padded(args))
        if str(fresh[0].jaxpr) == program.text:
            _COUNTS["hits"] += 1
            _CACHE.move_to_end(key)
            program.consts, program.fingerprint = list(fresh[0].consts), fingerprint
            return program, program.consts
        program = _build(program.kernel, args, devices, fresh)
    else:
        program = _build(kernel, args, devices)
    program.fingerprint = fingerprint
    _CACHE[key] = program
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return program, program.consts


_PERSISTENT = {"done": False}


def enable_persistent_cache() -> str | None:
    """Switch on JAX's persistent compilation cache in ``$XDG_CACHE_HOME/equivax/jax`` (default
    ``~/.cache/equivax/jax``), once per process, unless ``EQUIVAX_COMPILATION_CACHE=0`` or the
    user already configured one (``jax_compilation_cache_dir``). Returns the directory in use.
    """
    if _PERSISTENT["done"]:
        return jax.config.jax_compilation_cache_dir
    _PERSISTENT["done"] = True
    if os.environ.get("EQUIVAX_COMPILATION_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    directory = base / "equivax" / "jax"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the persistent cache
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # else JAX's own setting stands
        # Low enough for a check's quick first-tier compile (equivax._xla.Tiered, 0.05-0.1 s).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.02)
    return str(directory)
