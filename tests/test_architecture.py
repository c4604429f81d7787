"""The package's structure, as docs/architecture.md draws it: no private names across modules,
no import cycles, files of one concept, an unambiguous public surface."""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import equivax

PACKAGE = pathlib.Path(equivax.__file__).parent
MAX_LINES = 450
#: Files allowed past MAX_LINES, each because one concept genuinely needs the room (see its docstring).
LONG = {"groups.py", "_representations.py", "continuous.py", "cli.py"}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("equivax", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def imports(tree: ast.Module, name: str) -> list[tuple[str, list[str]]]:
    """Module-level ``from X import a, b`` and ``import X`` statements (not those inside functions)."""
    package = name if name in ("equivax",) or name.endswith("__init__") else name.rsplit(".", 1)[0]
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((base, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def is_module(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists() or (
        PACKAGE.parent / name.replace(".", "/") / "__init__.py"
    ).exists()


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, tree in modules().items():
        for base, names in imports(tree, name):
            if not base.startswith("equivax"):
                continue
            for imported in names:
                if imported.startswith("_") and not is_module(f"{base}.{imported}"):
                    offenders.append(f"{name} imports {base}.{imported}")
    assert not offenders, offenders


def test_the_package_has_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for name, tree in modules().items():
        targets = set()
        for base, names in imports(tree, name):
            if not base.startswith("equivax"):
                continue
            targets |= {f"{base}.{n}" for n in names if is_module(f"{base}.{n}")} or {base}
            if not any(is_module(f"{base}.{n}") for n in names):
                targets.add(base)
        graph[name] = {t for t in targets if t != name and t != "equivax"}

    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt in graph and not state.get(nxt):
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])


def test_files_hold_one_concept_each():
    long = {
        path.name: len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert set(long) <= LONG, long


def test_public_names_are_functions_and_modules_are_private():
    assert callable(equivax.check) and callable(equivax.report)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("equivax.check")
    assert callable(equivax.clear_cache) and equivax.cache_info().size >= 0
    assert set(equivax.__all__) <= set(dir(equivax))
    assert not {"nn", "data", "render", "strategies"} & set(equivax.__all__)  # served lazily


@pytest.mark.slow
def test_star_import_stays_free_of_the_heavy_dependencies():
    code = (
        "import sys\nfrom equivax import *\n"
        "print(sorted(m for m in ('flax', 'matplotlib', 'hypothesis', 'tensorflow_datasets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
