"""Every ```python block of README.md and docs/**/*.md runs as written.

The blocks of one page run in order in one module namespace (a page may set up in an earlier block),
in a temporary working directory. A block preceded by the line ``<!-- docs-test: file NAME.py -->`` is
also saved as ``NAME.py`` there, so a later block can import it. A block that truly cannot run offline
is preceded by ``<!-- docs-test: skip REASON -->``; such blocks are counted below and the count is
asserted, so none is skipped silently. Pages whose blocks take long are in ``SLOW`` (``-m slow``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys
import traceback
import types

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

#: Blocks marked ``<!-- docs-test: skip ... -->``, by page: the whole list, kept short on purpose.
SKIPPED: dict[str, int] = {}

#: Pages that take more than a few seconds (measured on a 2-core CPU): run with ``-m slow``.
SLOW = {
    "docs/continuous.md",
    "docs/how-to/actions.md",
    "docs/how-to/fields.md",
    "docs/how-to/finite-groups.md",
    "docs/how-to/groups.md",
    "docs/how-to/localize.md",
    "docs/how-to/pytree-inputs.md",
    "docs/how-to/report-callables.md",
    "docs/how-to/report-linen.md",
    "docs/how-to/report-nnx.md",
    "docs/reports.md",
    "docs/tutorial.md",
}

_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b[^>]*-->\s*\n\s*$")
_FILE = re.compile(r"<!--\s*docs-test:\s*file\s+([\w./-]+\.py)\s*-->\s*\n\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    skipped: bool
    file: str | None = None


def blocks(path: pathlib.Path) -> list[Block]:
    """The ```python blocks of a page, with the line each starts on."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        if match.group(1) not in ("python", "py"):
            continue
        before = text[: match.start()]
        found.append(
            Block(
                page=str(path.relative_to(ROOT)),
                line=before.count("\n") + 2,
                code=match.group(2),
                skipped=bool(_SKIP.search(before[-300:])),
                file=(lambda m: m.group(1) if m else None)(_FILE.search(before[-300:])),
            )
        )
    return found


def _page_param(path: pathlib.Path):
    name = str(path.relative_to(ROOT))
    return pytest.param(path, id=name, marks=[pytest.mark.slow] if name in SLOW else [])


RUNNABLE = [_page_param(p) for p in PAGES if blocks(p)]


def test_every_python_block_is_run_or_visibly_skipped():
    skipped = {}
    for page in PAGES:
        count = sum(b.skipped for b in blocks(page))
        if count:
            skipped[str(page.relative_to(ROOT))] = count
    assert skipped == SKIPPED
    assert len(RUNNABLE) >= 5 and any(p.id == "README.md" for p in RUNNABLE)


def test_the_block_reader_finds_fences_and_skip_marks(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\na = 1\n```\n\n<!-- docs-test: skip needs a GPU -->\n```python\nb\n```\n```bash\nls\n```\n"
    )
    found = blocks(page)
    assert [(b.line, b.code, b.skipped) for b in found] == [(4, "a = 1\n", False), (9, "b\n", True)]


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ran = 0
    for block in blocks(page):
        if block.skipped:
            continue
        if block.file:
            (tmp_path / block.file).write_text(block.code, encoding="utf-8")
        try:
            # as a reader runs it: JAX's default promotion, not the suite's strict one (tests/conftest.py)
            with jax.numpy_dtype_promotion("standard"):
                exec(compile(block.code, f"{block.page}:{block.line}", "exec"), module.__dict__)
        except Exception:  # noqa: BLE001 - any error of a block fails the page, with its place
            pytest.fail(f"the block at {block.page}:{block.line} failed:\n{traceback.format_exc(limit=-6)}")
        ran += 1
    assert ran > 0
