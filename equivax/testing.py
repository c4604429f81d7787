"""Assertions for test suites: ``assert_equivariant`` states a symmetry in one line.

A failed assertion saves its input and the worst element to an ``.npz`` file and prints a command
that reloads them and re-runs the check on that element (``load_failure`` reads the file back).
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import inspect
import linecache
import os
import pathlib
import pickle
import re
import tempfile
import types
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

import equivax
from equivax.groups import Group
from equivax.result import CheckResult

__all__ = ["assert_equivariant", "failure_dir", "failure_message", "load_failure", "save_failure"]

#: Environment variable naming the folder where failed assertions save their inputs.
FAILURE_DIR_VARIABLE = "EQUIVAX_FAILURE_DIR"


def failure_dir() -> pathlib.Path:
    """Where failed assertions save their inputs: ``$EQUIVAX_FAILURE_DIR``, else
    ``equivax-failures`` in the system's temporary folder."""
    folder = os.environ.get(FAILURE_DIR_VARIABLE) or os.path.join(tempfile.gettempdir(), "equivax-failures")
    return pathlib.Path(folder)


def save_failure(x: Any, g: Any, name: str = "failure") -> pathlib.Path:
    """Save an input (an array or a pytree of arrays) and one group element to an ``.npz`` file in
    ``failure_dir()``, named after ``name`` and the contents; returns its path."""
    leaves, treedef = jax.tree.flatten(x)
    arrays = {f"x{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["g"] = np.asarray(g)
    arrays["treedef"] = np.frombuffer(pickle.dumps(treedef), dtype=np.uint8)
    digest = hashlib.sha1()
    for key in sorted(arrays):
        digest.update(key.encode() + arrays[key].tobytes() + str(arrays[key].dtype).encode())
    folder = failure_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:80]}-{digest.hexdigest()[:10]}.npz"
    np.savez(path, **arrays)
    return path


def load_failure(path: str | os.PathLike[str]) -> tuple[Any, np.ndarray]:
    """The input ``x`` and the element ``g`` saved by a failed ``assert_equivariant``.

    Examples:
      >>> import numpy as np
      >>> path = save_failure({"image": np.ones((1, 2, 2, 1))}, np.array([0, 1, 0, 0]), "doc")
      >>> x, g = load_failure(path)
      >>> x["image"].shape, g.tolist()
      ((1, 2, 2, 1), [0, 1, 0, 0])
    """
    with np.load(path) as saved:
        treedef = pickle.loads(saved["treedef"].tobytes())
        leaves = [saved[f"x{i}"] for i in range(treedef.num_leaves)]
        return jax.tree.unflatten(treedef, leaves), saved["g"]


def failure_message(result: CheckResult, reproduce: str | None = None) -> str:
    """The message of a failed ``assert_equivariant``, in the manner of numpy's assertions;
    ``reproduce`` (the lines that re-run the check) ends it."""
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
    lines += ["", result.table()]
    if reproduce:
        lines += ["", reproduce]
    return "\n".join(lines)


# -- reproduction: the caller's own expressions for f, the group and the actions -----------------

_PARAMETERS = ("f", "x", "group", "in_action", "out_action")
_REPLAYED = ("rtol", "atol", "chunk_size")


def _call_arguments(frame: types.FrameType) -> dict[str, ast.expr] | None:
    """The argument expressions of the ``assert_equivariant(...)`` call running in ``frame``, by
    parameter name; ``None`` when the source is not available or the call cannot be read."""
    source = "".join(linecache.getlines(frame.f_code.co_filename, frame.f_globals))
    if not source:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    position = inspect.getframeinfo(frame).positions
    line = frame.f_lineno
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "assert_equivariant"
        and node.lineno <= line <= (node.end_lineno or node.lineno)
    ]
    if position is not None and position.col_offset is not None:
        exact = [c for c in calls if (c.lineno, c.col_offset) == (position.lineno, position.col_offset)]
        calls = exact or calls
    if len(calls) != 1:
        return None
    call = calls[0]
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    names = list(inspect.signature(assert_equivariant).parameters)
    found = dict(zip(names, call.args, strict=False))
    found.update({k.arg: k.value for k in call.keywords if k.arg is not None})
    return found


def _globals_used(expressions: list[ast.expr], frame: types.FrameType) -> list[str] | None:
    """Names the expressions read, when every one is a global of the caller's module (or a
    builtin); ``None`` if one is a local variable."""
    names: set[str] = set()
    for expression in expressions:
        names |= {n.id for n in ast.walk(expression) if isinstance(n, ast.Name)}
    for name in names:
        if name in frame.f_locals and frame.f_locals[name] is not frame.f_globals.get(name):
            return None
        if name not in frame.f_globals and not hasattr(builtins, name):
            return None
    return sorted(n for n in names if n in frame.f_globals)


def _imports(names: list[str], frame: types.FrameType) -> list[str] | None:
    """Statements that bring ``names`` into a fresh interpreter, from the caller's module."""
    module = frame.f_globals.get("__name__", "")
    file = frame.f_globals.get("__file__")
    statements, plain = [], []
    for name in names:
        value = frame.f_globals[name]
        if isinstance(value, types.ModuleType):
            statements.append(f"import {name}" if value.__name__ == name else f"import {value.__name__} as {name}")
        else:
            plain.append(name)
    if plain:
        if module in ("", "__main__") or not file or pathlib.Path(file).stem != module.rpartition(".")[2]:
            return None
        statements.insert(0, f"from {module} import {', '.join(plain)}")
    return statements


def _module_root(frame: types.FrameType) -> pathlib.Path | None:
    """The folder from which the caller's module imports under its own name."""
    file = frame.f_globals.get("__file__")
    if not file:
        return None
    root = pathlib.Path(file).resolve().parent
    for _ in range(frame.f_globals.get("__name__", "").count(".")):
        root = root.parent
    return root


def _reproduction(frame: types.FrameType | None, path: pathlib.Path, supplied: dict[str, Any]) -> str:
    """Lines that reload the saved input and element and re-run the check on that element."""
    load = f"x, g = equivax.testing.load_failure({str(path)!r})"
    found = _call_arguments(frame) if frame is not None else None
    if found is None or "f" not in found or "group" not in found:
        arguments = [n for n in _PARAMETERS if n == "x" or supplied.get(n) is not None or n in ("f", "group")]
        call = f"equivax.check({', '.join(arguments)}, elements=[g])"
        return f"Reproduce (x and g saved to {path}), with your f, group and actions:\n    {load}\n    {call}"
    parts, used = [], []
    for name in _PARAMETERS:
        if name == "x":
            parts.append("x")
        elif name in found:
            source = ast.unparse(found[name])
            parts.append(source if name in ("f", "group") else f"{name}={source}")
            used.append(found[name])
    parts.append("elements=[g]")
    for name in _REPLAYED:
        if supplied.get(name) is not None:
            parts.append(f"{name}={supplied[name]!r}")
    call = f"equivax.check({', '.join(parts)})"
    names = _globals_used(used, frame)
    statements = None if names is None else _imports(names, frame)
    root = _module_root(frame)
    if statements is None or root is None:
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        return f"Reproduce (x and g saved to {path}), where the names are as at {where}:\n    {load}\n    {call}"
    program = "; ".join(["import equivax", *statements, load, f"print({call})"])
    return f"Reproduce (x and g saved to {path}):\n    cd {root} && python -c {_shell_quote(program)}"


def _shell_quote(text: str) -> str:
    return '"' + re.sub(r'(["\\$`])', r"\\\1", text) + '"'


def _failure_name(frame: types.FrameType | None) -> str:
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].rpartition("::")[2]
    if test or frame is None:
        return test or "failure"
    code = frame.f_code
    return pathlib.Path(code.co_filename).stem if code.co_name == "<module>" else code.co_name


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

    Returns the result when the check passes, so a test can inspect it further. On failure the
    input and the worst element are saved (see ``failure_dir``) and the message ends with a command
    that reloads them and re-runs the check on that element.

    Examples:
      >>> import jax, jax.numpy as jnp, equivax
      >>> x = jax.random.normal(jax.random.key(0), (1, 6, 6, 2))
      >>> _ = equivax.assert_equivariant(jnp.tanh, x, equivax.groups.p4(6))
    """
    result = equivax.check(
        f, x, group, in_action, out_action, elements=elements, rtol=rtol, atol=atol, chunk_size=chunk_size
    )
    if not result.ok:
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        try:
            path = save_failure(x, result.elements[result.worst], _failure_name(caller))
            supplied = {
                "in_action": in_action,
                "out_action": out_action,
                "rtol": rtol,
                "atol": atol,
                "chunk_size": chunk_size,
            }
            reproduce = _reproduction(caller, path, supplied)
        finally:
            del frame, caller
        raise AssertionError(failure_message(result, reproduce))
    return result
