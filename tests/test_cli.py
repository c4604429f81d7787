"""The command line: `equivax check` runs the built-in examples and reports honestly."""

import json
import subprocess
import sys

import pytest

from equivax import cli


def test_check_one_example_prints_a_table(capsys):
    assert cli.main(["check", "--example", "p4-lifting-wrong-way"]) == 0
    out = capsys.readouterr().out
    assert "p4-lifting-wrong-way" in out and "as expected" in out
    assert "r1" in out and "broken" in out and "1 of 1 examples behaved as expected" in out


def test_check_json_output(capsys):
    assert cli.main(["check", "--example", "stride2-maxpool", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["example"] == "stride2-maxpool"
    assert records[0]["counts"] == {"equivariant": 63, "broken": 192}


def test_unknown_example_is_an_error(capsys):
    assert cli.main(["check", "--example", "nope"]) == 2
    assert "choose from" in capsys.readouterr().err


def test_console_script_runs_end_to_end_in_a_subprocess():
    done = subprocess.run(
        [sys.executable, "-m", "equivax.cli", "check", "--example", "circular-conv", "--example", "global-mean"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "2 of 2 examples behaved as expected" in done.stdout


# -- equivax report / equivax demo -------------------------------------------------------------

MODELS = """
import equivax
from flax import nnx


def build(rngs):
    return equivax.nn.CNN(widths=(2,), padding="circular", rngs=rngs)


def broken():
    raise RuntimeError("no weights here")
"""


def test_report_command_writes_html_in_a_subprocess(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODELS)
    out = tmp_path / "report.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "equivax.cli",
            "report",
            "mymodels:build",
            "--group",
            "translations",
            "--input-shape",
            "8,8,1",
            "--batch",
            "1",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # odd shifts alias through the pooling: not equivariant
    assert "checking mymodels:build under translations(8x8): 6 elements" in done.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "build under translations(8x8)" in page
    assert "2 MaxPool" in page


def test_report_command_prints_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels2.py").write_text("import equivax\n\ndef pool():\n    return equivax.nn.GlobalPool('mean')\n")
    code = cli.main(["report", "mymodels2:pool", "--group", "p4m", "--input-shape", "4,4,2", "--format", "json"])
    assert code == 0  # global mean pooling is invariant to every element of p4m
    data = json.loads(capsys.readouterr().out)
    assert data["reports"][0]["ok"] and len(data["reports"][0]["labels"]) == 6 + 7  # basic: 6 shifts, 7 turns/mirrors


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_module:build", "--group", "p4", "--input-shape", "8,8,1"], "cannot import module 'no_such_module'"),
        (
            ["mymodels:nope", "--group", "p4", "--input-shape", "8,8,1"],
            "has no 'nope'; its callables are: broken, build",
        ),
        (["mymodels:broken", "--group", "p4", "--input-shape", "8,8,1"], "RuntimeError: no weights here"),
        (["mymodels:build", "--group", "p4", "--input-shape", "8,10,1"], "needs a square input, got 8x10"),
        (["mymodels:build", "--group", "p4", "--input-shape", "8,8"], "three positive integers"),
        (["mymodels", "--group", "p4", "--input-shape", "8,8,1"], "expected MODULE:FACTORY"),
    ],
)
def test_report_command_errors_name_the_fix(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(MODELS)
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    assert cli.main(["report", *argv]) == 2
    assert message in capsys.readouterr().err


def test_demo_prints_where_models_break_and_writes_html(tmp_path, monkeypatch, capsys):
    from equivax.nn import CNN, MLP

    monkeypatch.setattr(
        cli,
        "DEMO_MODELS",
        (
            ("CNN", lambda size, rngs: CNN(widths=(2,), padding="circular", rngs=rngs)),
            ("MLP", lambda size, rngs: MLP(size * size, hidden=(4,), rngs=rngs)),
        ),
    )
    out = tmp_path / "demo.html"
    assert cli.main(["demo", "--size", "8", "--batch", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert "equivariant — never" in rows["shift(0,2)"] and "broken — 2 MaxPool" in rows["shift(0,1)"]  # the CNN
    assert "broken — 0 Conv" in rows["r1"] and "broken — 0 flatten" in rows["r1"]
    assert out.read_text().count("<h2>") == 2
    assert cli.main(["demo", "--size", "10"]) == 2


def test_bad_numbers_and_unwritable_outputs_are_usage_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--batch", "0"])
    assert exited.value.code == 2 and "positive integer" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(MODELS)
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    argv = ["report", "mymodels:build", "--group", "p4", "--input-shape", "8,8,1", "-o", "/no/such/folder/r.html"]
    assert cli.main(argv) == 2
    assert "folder /no/such/folder does not exist" in capsys.readouterr().err
