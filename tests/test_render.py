"""Renderers: every row in Markdown and HTML, JSON that reads back, a page a browser can show."""

import base64
import dataclasses
import json
import re
import shutil
import subprocess

import jax
import pytest
from flax import nnx

import equivax
from equivax import groups, render
from equivax.nn import CNN
from equivax.render._common import fmt

SOURCE = open(__file__).read().splitlines()


@pytest.fixture(scope="module")
def reports():
    """A circular CNN under shifts and quarter turns, twice (a document with two models)."""
    group = groups.p4(8)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    model = CNN(widths=(2,), padding="circular", rngs=nnx.Rngs(0))
    first = equivax.report(model, x, group, elements=groups.basic_elements(group), name="small CNN")
    return [first, dataclasses.replace(first, model="the same CNN again")]


def _cells(row):
    return [row["layer"], row["element"], fmt(row["rel_error"]), fmt(row["abs_error"]), fmt(row["noise_floor"])]


def test_markdown_has_every_row_and_the_first_breaks(reports):
    text = render.markdown(reports)
    for report in reports:
        assert f"## {report.model} under p4(8x8)" in text
        for row in report.rows():
            assert "| " + " | ".join([*_cells(row), row["verdict"]]) + " |" in text
    assert "| r1 | " in text and "0 Conv" in text  # a quarter turn breaks at the first convolution


def test_html_has_every_row_and_needs_nothing_from_the_network(reports):
    page = render.html(reports)
    for report in reports:
        for row in report.rows():
            cells = _cells(row)
            expected = f"<td>{cells[0]}</td><td>{cells[1]}</td>" + "".join(f"<td class=num>{c}</td>" for c in cells[2:])
            assert expected in page, expected
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must not fetch anything"
    assert "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # per model: errors per layer, and error maps of the broken elements
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)


def test_terminal_table_names_elements_layers_and_first_breaks(reports):
    text = render.terminal(reports[0])
    for label in reports[0].labels:
        assert label in text
    for layer in reports[0].layers:
        assert layer.name in text
    assert "first broken layer" in text and "\x1b[" not in text  # no colour codes unless asked


def test_json_round_trips_with_and_without_maps(reports, tmp_path):
    path = render.write(reports, tmp_path / "report.json")
    back = render.from_json(path.read_text())
    assert [r.to_dict() for r in back] == [r.to_dict() for r in reports]
    slim = json.loads(render.to_json(reports[0], maps=False))
    assert slim["version"] == 2 and all(layer["error_maps"] is None for layer in slim["reports"][0]["layers"])
    with pytest.raises(ValueError, match="reads versions 1, 2"):
        render.from_json(json.dumps({"version": 7, "reports": []}))
    with pytest.raises(ValueError, match="not an equivax report"):
        render.from_json("[]")


def test_write_picks_the_format_from_the_suffix(reports, tmp_path):
    assert render.write(reports[0], tmp_path / "r.md").read_text().startswith("# Equivariance report")
    assert render.write(reports[0], tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError, match="cannot tell the format"):
        render.write(reports[0], tmp_path / "r.pdf")
    with pytest.raises(TypeError, match="Report"):
        render.markdown(["not a report"])


def _browser():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_html_renders_in_a_headless_browser(reports, tmp_path):
    """Opens the page in headless Chromium (Debian: apt-get install chromium), checks that every
    image decoded and that the tables are in the rendered DOM, and takes a screenshot."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); see docs/reports.md")
    probe = (
        "<script>addEventListener('load', () => document.body.setAttribute('data-images-ok', "
        "[...document.images].every(i => i.complete && i.naturalWidth > 0)))</script></body>"
    )
    page = tmp_path / "report.html"
    page.write_text(render.html(reports).replace("</body>", probe), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-images-ok="true"' in dom.stdout, dom.stderr[-2000:]
    assert dom.stdout.count("<img") == 4 and "first broken layer" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_repeated_names_and_markup_characters_are_rendered_as_given():
    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 1))
    layers = [
        ("[b]block", jax.numpy.tanh),
        ("[b]block", lambda y: y * jax.numpy.arange(6.0)[:, None]),
        ("end", jax.numpy.tanh),
    ]
    found = equivax.report(None, x, groups.translations(6, 6, shifts=[(0, 1)]), layers=layers, name="[red]model")
    assert found.first_broken_index("shift(0,1)") == 1
    rows = render._common.element_rows(found)
    assert rows[0]["first_break"] == "[b]block" and rows[0]["why"].startswith("structural")
    text = render.terminal(found)
    assert "[b]block" in text and "[red]model" in text


def test_version_1_files_are_still_read(reports):
    data = json.loads(render.to_json(reports[0], maps=False))
    data["version"] = 1
    for entry in data["reports"]:
        entry["version"] = 1
        del entry["by"], entry["notes"]
        for layer in entry["layers"]:
            del layer["where"], layer["via"]
    (back,) = render.from_json(json.dumps(data))
    assert back.first_breaks == reports[0].first_breaks and back.by == "layer"


def test_html_summarises_across_models_and_says_how_many_elements_are_drawn(reports):
    page = render.html(reports)
    assert page.count('<h2 id="summary">Where each model first breaks</h2>') == 1
    assert "<th>small CNN</th><th>the same CNN again</th>" in page
    assert page.index("Where each model first breaks") < page.index("<h2>small CNN")
    total = len(reports[0].labels)
    assert f"All {total} elements are shown." in page
    assert f"<h2>{reports[0].model}" in render.html(reports[0]) and "Where each model" not in render.html(reports[0])


def test_html_with_more_elements_than_lines_says_which_are_drawn():
    group = groups.translations(6, 6)
    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 1))
    found = equivax.report(None, x, group, layers=[lambda y: y * jax.numpy.arange(6.0)[:, None]])
    page = render.html(found)
    assert len(found.labels) == 35 and "The 24 worst of 35 elements are shown; the tables list every one." in page


def test_every_renderer_shows_the_operation_that_breaks():
    def biased(x):
        return jax.numpy.tanh(x) + 0.1 * jax.numpy.arange(6.0)[:, None, None]

    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 1))
    found = equivax.report(biased, x, groups.translations(6, 6, shifts=[(1, 0)]), by="operation")
    line = next(i + 1 for i, text in enumerate(SOURCE) if "0.1 * jax.numpy.arange(6.0)[:, None, None]" in text)
    where = f"test_render.py:{line} (biased)"
    assert found.layers[found.first_broken_index("shift(1,0)")].where == where
    for text in (render.terminal(found, width=200), render.markdown(found), render.html(found)):
        assert where in text and "breaks shift(1,0); everything before it is" in text
        assert "first broken operation" in text and "note: checked" in text.lower()
    (back,) = render.from_json(render.to_json(found))
    assert (
        back.by == "operation"
        and back.layers[1].where == where
        and back.explain("shift(1,0)") == found.explain("shift(1,0)")
    )
