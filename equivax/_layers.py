"""Splitting a model into the layers a report checks, for every framework.

A *split* is one function ``taps(x) -> (out_0, out_1, ...)`` that runs the model once and returns
the output of every layer it calls, in call order (outputs may be pytrees), together with a
record, made while tracing, of which layer each output came from and which earlier output fed
it (``Tap.source``), so that residual structure is followed.

How a model is split:

* ``layers=[...]`` (callables or ``(name, callable)`` pairs): applied one after another.
* Flax NNX ``nnx.Sequential``, or a model keeping its layers in an ``nnx.Sequential`` attribute
  ``layers`` with an optional ``head`` (``equivax.nn``'s models): their layers one after another.
* Any other Flax NNX module and any Equinox module (``eqx.nn.Sequential``, layer lists, nested
  blocks): every call of a sub-module made by the model's ``__call__`` is intercepted and its output
  recorded, at every depth (``"blocks.0.conv"`` before ``"blocks.0"``).
* A Flax Linen module bound to its variables (``model.bind(variables)``), or given with
  ``variables=``: every sub-module ``__call__`` is intercepted with ``nn.intercept_methods``.
* Anything else is one layer, and the split says why (``Split.note``).

Sub-module calls are intercepted by wrapping ``__call__`` on the classes that define it, only
while the model is traced and under a lock, and only calls of the model's own sub-modules (by
identity) are recorded; calls made inside a transformation the model applies itself (its own
``jax.vmap``) cannot leave it and are not recorded.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax

__all__ = ["Split", "Tap", "split", "trace"]

#: The taps recorded while a split traces (``None`` outside ``trace``).
_RECORDER: list[Tap] | None = None
#: Held while classes are patched or taps recorded: one model traced at a time.
_LOCK = threading.RLock()


@dataclasses.dataclass(frozen=True)
class Tap:
    """One recorded layer output.

    Attributes:
      name: the layer's name: its position and type in a sequence (``"2 MaxPool"``) or its path
        in the module tree (``"blocks.0.conv"``).
      layer: the layer object (read for a declared ``contract``), or ``None``.
      source: position of the tap whose output was this layer's input; ``-1`` for the model's
        input; ``None`` when the input was computed outside any recorded layer (the previous tap
        is then taken as its origin).
    """

    name: str
    layer: Any
    source: int | None


@dataclasses.dataclass(frozen=True)
class Split:
    """A model as one function returning every layer's output.

    Attributes:
      taps: ``taps(x) -> tuple`` of layer outputs, a plain function or an NNX module (whose state
        the check then passes as arguments).
      note: why the model could not be split further, or ``None``.
    """

    taps: Callable[..., tuple[Any, ...]]
    note: str | None = None


def _module(name: str) -> Any:
    """A framework's module if the user has imported it (equivax never imports them for a check)."""
    return sys.modules.get(name)


def _is_nnx(obj: Any) -> bool:
    nnx = _module("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Module)


def _is_linen(obj: Any) -> bool:
    linen = _module("flax.linen")
    return linen is not None and isinstance(obj, linen.Module)


def _is_equinox(obj: Any) -> bool:
    eqx = _module("equinox")
    return eqx is not None and isinstance(obj, eqx.Module)


def type_name(obj: Any) -> str:
    """A readable name of a layer: its function name, or its type."""
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function" if obj.__name__ == "<lambda>" else obj.__name__
    if isinstance(obj, functools.partial):
        return type_name(obj.func)
    name = getattr(obj, "__name__", None)
    return name if isinstance(name, str) and not _is_nnx(obj) else type(obj).__name__


# ------------------------------------------------------------------------------------------------
# Recording
# ------------------------------------------------------------------------------------------------


class _Provenance:
    """Which recorded output each traced array is (by identity; every array is kept alive)."""

    def __init__(self, x: Any):
        self.known: dict[int, int] = {id(leaf): -1 for leaf in jax.tree.leaves(x)}
        self.outputs: list[Any] = []
        self.trace = next((_trace_of(leaf) for leaf in jax.tree.leaves(x) if isinstance(leaf, jax.core.Tracer)), None)

    def ours(self, out: Any) -> bool:
        """Whether ``out`` lives at the model's own trace level, not inside a transformation the
        model applies itself (a ``jax.vmap`` over a head, a scan): only those can be returned."""
        return all(
            not isinstance(leaf, jax.core.Tracer) or _trace_of(leaf) is self.trace for leaf in jax.tree.leaves(out)
        )

    def source(self, args: Sequence[Any]) -> int | None:
        leaves = jax.tree.leaves(args)
        return self.known.get(id(leaves[0])) if leaves else None

    def add(self, name: str, layer: Any, source: int | None, out: Any) -> None:
        index = len(self.outputs)
        self.outputs.append(out)
        for leaf in jax.tree.leaves(out):
            self.known.setdefault(id(leaf), index)
        if _RECORDER is not None:
            _RECORDER.append(Tap(name, layer, source))


def _trace_of(tracer: Any) -> Any:
    """The trace a tracer belongs to (``None`` where jax does not say, and every output is kept)."""
    return getattr(tracer, "_trace", None)


def _chain(named: Sequence[tuple[str, Callable[..., Any]]], x: Any) -> tuple[Any, ...]:
    seen = _Provenance(x)
    for i, (name, layer) in enumerate(named):
        x = layer(x)
        seen.add(name, layer, i - 1, x)
    return tuple(seen.outputs)


def _unique(name: str, used: dict[str, int]) -> str:
    used[name] = used.get(name, 0) + 1
    return name if used[name] == 1 else f"{name} (call {used[name]})"


def _call_owner(cls: type) -> type | None:
    for klass in cls.__mro__:
        if "__call__" in klass.__dict__:
            return klass
    return None


def _intercepted(model: Any, paths: dict[int, str], x: Any) -> tuple[Any, ...]:
    """Run ``model(x)``, recording the output of every call of a module listed in ``paths``."""
    seen = _Provenance(x)
    used: dict[str, int] = {}
    active: set[int] = set()
    owners = set(_owners(model, paths).values())
    saved = {owner: owner.__dict__["__call__"] for owner in owners}

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            path = paths.get(id(self))
            if path is None or id(self) in active:
                return original(self, *args, **kwargs)
            active.add(id(self))
            try:
                out = original(self, *args, **kwargs)
            finally:
                active.discard(id(self))
            if seen.ours(out):
                seen.add(_unique(path, used), self, seen.source(args), out)
            return out

        return call

    with _LOCK:
        try:
            for owner, original in saved.items():
                type.__setattr__(owner, "__call__", wrap(original))
            y = model(x)
        finally:
            for owner, original in saved.items():
                type.__setattr__(owner, "__call__", original)
    _add_output(seen, model, y)
    return tuple(seen.outputs)


def _owners(model: Any, paths: dict[int, str]) -> dict[int, type]:
    found = {}
    for obj in _objects(model):
        if id(obj) in paths and (owner := _call_owner(type(obj))) is not None:
            found[id(obj)] = owner
    return found


def _objects(model: Any) -> list[Any]:
    if _is_nnx(model):
        return [module for _, module in _module("flax.nnx").iter_modules(model)]
    return list(_equinox_modules(model, ()).values())


def _add_output(seen: _Provenance, model: Any, y: Any) -> None:
    """The model's own output, unless it is the last recorded output already."""
    last = seen.outputs[-1] if seen.outputs else None
    same = last is not None and [id(a) for a in jax.tree.leaves(last)] == [id(b) for b in jax.tree.leaves(y)]
    if not same:
        seen.add("output", model, -1, y)


def _nnx_paths(model: Any) -> dict[int, str]:
    paths: dict[int, str] = {}
    for path, module in _module("flax.nnx").iter_modules(model):
        if path and _call_owner(type(module)) is not None:
            paths.setdefault(id(module), ".".join(str(p) for p in path))
    return paths


def _equinox_modules(obj: Any, prefix: tuple[Any, ...]) -> dict[tuple[Any, ...], Any]:
    """Every Equinox module inside ``obj`` (fields, lists, tuples, dicts), by path."""
    found: dict[tuple[Any, ...], Any] = {}
    if _is_equinox(obj):
        found[prefix] = obj
        children = [(f.name, getattr(obj, f.name, None)) for f in dataclasses.fields(obj)]
    elif isinstance(obj, (list, tuple)):
        children = list(enumerate(obj))
    elif isinstance(obj, dict):
        children = list(obj.items())
    else:
        return found
    for key, child in children:
        found.update(_equinox_modules(child, (*prefix, key)))
    return found


def _equinox_paths(model: Any) -> dict[int, str]:
    paths: dict[int, str] = {}
    for path, module in _equinox_modules(model, ()).items():
        if path and _call_owner(type(module)) is not None:
            paths.setdefault(id(module), ".".join(str(p) for p in path))
    return paths


@functools.cache
def _nnx_classes() -> tuple[type, type]:
    nnx = _module("flax.nnx")

    class Chain(nnx.Module):
        """Runs NNX layers (and plain functions) in order and returns every output."""

        def __init__(self, names: tuple[str, ...], layers: Sequence[Callable[..., Any]]):
            self.names = names
            self.steps = nnx.Sequential(*layers)

        def __call__(self, x: Any) -> tuple[Any, ...]:
            return _chain(list(zip(self.names, self.steps.layers, strict=True)), x)

    class Tree(nnx.Module):
        """Runs an NNX model and returns the output of every sub-module call."""

        def __init__(self, model: Any):
            self.model = model

        def __call__(self, x: Any) -> tuple[Any, ...]:
            return _intercepted(self.model, _nnx_paths(self.model), x)

    return Chain, Tree


def _linen_taps(module: Any, variables: Any) -> Callable[[Any], tuple[Any, ...]]:
    linen = importlib.import_module("flax.linen")

    def taps(x: Any) -> tuple[Any, ...]:
        seen = _Provenance(x)
        used: dict[str, int] = {}

        def intercept(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
            if context.method_name != "__call__" or not context.module.path:
                return next_fun(*args, **kwargs)
            out = next_fun(*args, **kwargs)
            if seen.ours(out):
                name = _unique(".".join(str(p) for p in context.module.path), used)
                seen.add(name, context.module, seen.source(args), out)
            return out

        with linen.intercept_methods(intercept):
            y = module.apply(variables, x)
        _add_output(seen, module, y)
        return tuple(seen.outputs)

    return taps


def _per_example(taps: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
    return jax.vmap(taps)


# ------------------------------------------------------------------------------------------------
# Choosing the split
# ------------------------------------------------------------------------------------------------


def _named(layers: Sequence[Any]) -> list[tuple[str, Callable[..., Any]]]:
    named = []
    for i, layer in enumerate(layers):
        if isinstance(layer, tuple) and len(layer) == 2 and isinstance(layer[0], str) and callable(layer[1]):
            named.append(layer)
        elif callable(layer):
            named.append((f"{i} {type_name(layer)}", layer))
        else:
            raise TypeError(f"layers[{i}] must be a callable or a (name, callable) pair, got {layer!r}")
    if not named:
        raise ValueError("layers is empty; pass the callables the model applies in order, or None")
    return named


def _sequence(named: list[tuple[str, Callable[..., Any]]]) -> Callable[..., tuple[Any, ...]]:
    if all(_is_nnx(layer) or inspect.isfunction(layer) or inspect.isbuiltin(layer) for _, layer in named) and any(
        _is_nnx(layer) for _, layer in named
    ):
        chain, _ = _nnx_classes()
        return chain(tuple(name for name, _ in named), [layer for _, layer in named])
    return functools.partial(_chain, named)


def _nnx_parts(model: Any) -> list[Any] | None:
    nnx = _module("flax.nnx")
    if isinstance(model, nnx.Sequential):
        return list(model.layers)
    if isinstance(getattr(model, "layers", None), nnx.Sequential):
        parts = list(model.layers.layers)
        head = getattr(model, "head", None)
        return parts if head is None else [*parts, head]
    return None


def split(model: Any, layers: Sequence[Any] | None = None, *, variables: Any = None, vmap: bool = False) -> Split:
    """The layers of ``model`` as one function returning all their outputs (see the module doc).

    Args:
      model: the model (any framework), or ``None`` with ``layers``.
      layers: the callables the model applies one after another, or ``(name, callable)`` pairs.
      variables: a Flax Linen module's variables (omit for a bound module).
      vmap: the model takes one example at a time (Equinox's habit): it is vmapped over the batch.
    """
    found = _split(model, layers, variables)
    return dataclasses.replace(found, taps=_per_example(found.taps)) if vmap else found


def _split(model: Any, layers: Sequence[Any] | None, variables: Any) -> Split:
    if layers is not None:
        return Split(_sequence(_named(layers)))
    if model is None:
        raise ValueError("model is None: pass the model, or its layers with layers=[...]")
    if variables is not None and not _is_linen(model):
        raise TypeError(f"variables= is for Flax Linen modules, but the model is a {type(model).__name__}")
    if _is_nnx(model):
        parts = _nnx_parts(model)
        if parts is not None:
            return Split(_sequence([(f"{i} {type_name(p)}", p) for i, p in enumerate(parts)]))
        if _nnx_paths(model):
            return Split(_nnx_classes()[1](model))
        return _whole(model, f"{type(model).__name__} has no sub-modules")
    if _is_linen(model):
        return _linen(model, variables)
    if _is_equinox(model):
        paths = _equinox_paths(model)
        if paths:
            return Split(functools.partial(_intercepted, model, paths))
        return _whole(model, f"{type(model).__name__} has no sub-modules")
    if not callable(model):
        raise TypeError(f"model must be a callable or a Flax or Equinox module, got {type(model).__name__}")
    return _whole(model, f"{type_name(model)} is a plain function")


def _linen(model: Any, variables: Any) -> Split:
    if variables is None:
        if model.scope is None:
            raise ValueError(
                f"the Linen module {type(model).__name__} is not bound to variables: pass variables=variables "
                "(from model.init) or model.bind(variables)"
            )
        variables, model = model.variables, model.clone(parent=None)
    return Split(_linen_taps(model, variables))


def _whole(model: Any, why: str) -> Split:
    note = (
        f"checked end to end as one layer: {why}, so the report cannot see its layers; pass layers=[...] "
        "(the callables it applies in order), or localise operation by operation with by='operation'"
    )
    return Split(_nnx_whole()(model) if _is_nnx(model) else functools.partial(_one, model), note)


def _one(model: Any, x: Any) -> tuple[Any, ...]:
    seen = _Provenance(x)
    seen.add(type_name(model), model, -1, model(x))
    return tuple(seen.outputs)


@functools.cache
def _nnx_whole() -> type:
    nnx = _module("flax.nnx")

    class Whole(nnx.Module):
        """One NNX module as one layer."""

        def __init__(self, model: Any):
            self.model = model

        def __call__(self, x: Any) -> tuple[Any, ...]:
            return _one(self.model, x)

    return Whole


def trace(found: Split, x: Any) -> tuple[list[Tap], list[Any]]:
    """The taps of ``found`` and the shapes of their outputs for the input ``x`` (no compute)."""
    global _RECORDER
    recorded: list[Tap] = []
    with _LOCK:
        _RECORDER = recorded
        try:
            shapes = jax.eval_shape(found.taps, x)
        except Exception as err:  # any failure of the user's model: say which input
            raise ValueError(f"the model fails on an input of shape {x.shape}: {type(err).__name__}: {err}") from err
        finally:
            _RECORDER = None
    if len(recorded) != len(shapes):
        raise RuntimeError(f"recorded {len(recorded)} layers but the model returned {len(shapes)} outputs")
    return recorded, list(shapes)
