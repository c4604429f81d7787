"""The command line: `equivax check` runs the built-in examples and reports honestly."""

import json
import os
import pathlib
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


@pytest.mark.slow
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
import jax.numpy as jnp
from flax import nnx


def build(rngs):
    return equivax.nn.CNN(widths=(2,), padding="circular", rngs=rngs)


class Blur(nnx.Module):  # a class factory: NNX shows inspect.signature (*args, **kwargs)
    def __init__(self, *, rngs):
        self.conv = equivax.nn.Conv(1, 2, padding="circular", rngs=rngs)

    def __call__(self, x):
        return jnp.mean(self.conv(x), axis=(1, 2))


def pooled():  # a function factory without rngs
    return equivax.nn.GlobalPool("mean")


def broken():
    raise RuntimeError("no weights here")
"""


@pytest.mark.slow
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
            "has no 'nope'; its callables are: Blur, broken, build, pooled",
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


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A folder with ``mymodels.py`` as the current directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(MODELS)
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    return tmp_path


def _never_checked(*args, **kwargs):
    raise AssertionError("the check ran although the command line was bad")


@pytest.mark.parametrize("factory", ["mymodels:Blur", "mymodels:pooled"])
def test_report_builds_class_and_function_factories(models, capsys, factory):
    code = cli.main(["report", factory, "--group", "P4", "--input-shape", "6,6,1", "--batch", "1", "-o", "r.json"])
    assert code == 0  # both pool globally: invariant under p4
    out = capsys.readouterr().out
    assert f"{factory.partition(':')[2]} under p4(6x6): p4(6x6): " in out and "equivariant (ok" in out
    assert json.loads((models / "r.json").read_text())["reports"][0]["ok"]


def test_interrupt_prints_one_line_and_exits_130(models, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "report", interrupted)
    assert cli.main(["report", "mymodels:pooled", "--group", "p4", "--input-shape", "4,4,1"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "equivax report: interrupted"


def test_reports_are_written_to_a_temporary_file_then_renamed(models, monkeypatch, capsys):
    target = models / "r.md"
    target.write_text("the old report")
    renames = []

    def replace(source, destination):
        renames.append((pathlib.Path(source), pathlib.Path(destination), pathlib.Path(destination).read_text()))
        return os_replace(source, destination)

    os_replace = os.replace
    monkeypatch.setattr(cli.os, "replace", replace)
    assert cli.main(["report", "mymodels:pooled", "--group", "p4", "--input-shape", "4,4,1", "-o", str(target)]) == 0
    [(source, destination, before)] = renames
    assert source.parent == target.parent and source != target and destination == target
    assert before == "the old report"  # untouched until the rename
    assert target.read_text().startswith("#") and not source.exists()
    assert sorted(p.name for p in models.iterdir() if p.name.startswith(".r.md")) == []


def test_dash_writes_to_standard_output(models, capsys):
    assert (
        cli.main(
            ["report", "mymodels:pooled", "--group", "p4", "--input-shape", "4,4,1", "-o", "-", "--format", "json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["reports"][0]["ok"]
    assert cli.main(["report", "mymodels:pooled", "--group", "p4", "--input-shape", "4,4,1", "-o", "-"]) == 0
    assert "pooled: output equivariant" in capsys.readouterr().out
    assert not (models / "-").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-o", "r.pdf"],
            "cannot tell the format of 'r.pdf' from its suffix '.pdf': name it .html, .json, .md, .txt or",
        ),
        (["-o", "report"], "from its suffix '(none)'"),
        (["-o", "/no/such/folder/r.html"], "folder /no/such/folder does not exist"),
        (["-o", "."], "it is a folder; name a file inside it"),
        (
            ["--input-shape", "1,28,28"],
            "--input-shape 1,28,28 looks channels-first: use 28,28,1 (height,width,channels)",
        ),
        (["--input-shape", "3,32,32"], "looks channels-first: use 32,32,3"),
        (["--group", "p5"], "unknown group 'p5'; choose from dihedral, flips, p4, p4m, rotations, translations"),
    ],
)
def test_bad_outputs_and_shapes_are_refused_before_the_check(models, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(cli, "report", _never_checked)
    options = {"--group": "p4", "--input-shape": "8,8,1"}
    options.update(zip(argv[::2], argv[1::2], strict=True))
    command = ["report", "mymodels:build", *(part for pair in options.items() for part in pair)]
    if argv[0] == "--group":
        with pytest.raises(SystemExit) as exited:
            cli.main(command)
        assert exited.value.code == 2
    else:
        assert cli.main(command) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1]  # one line (argparse prints its usage above it)
    assert "square" not in err


def test_html_output_still_prints_the_verdict(models, capsys):
    argv = ["report", "mymodels:build", "--group", "translations", "--input-shape", "8,8,1", "--batch", "1"]
    assert cli.main([*argv, "-o", "r.html"]) == 1
    out = capsys.readouterr().out
    assert "build under translations(8x8): translations(8x8): 6 elements" in out and "NOT equivariant" in out
    assert "`2 MaxPool` breaks shift(0,1)" in out and "html report: r.html" in out  # Report.summary()
    assert (models / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_report_help_shows_the_example_the_suite_runs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    assert f"example: equivax report {cli.REPORT_EXAMPLE}" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_first_contact_commands(models, capsys):
    """What a new user types: the help's example (a class factory from equivax.nn) and a function
    factory of their own. In process: the console script's own process is covered by
    ``test_console_script_runs_end_to_end_in_a_subprocess`` and ``test_report_command_writes_html_in_a_subprocess``."""
    code = cli.main(["report", *cli.REPORT_EXAMPLE.split()])
    out = capsys.readouterr().out
    assert code in (0, 1)  # 1: P4CNN's zero padding breaks shifts, as its docstring says
    assert "P4CNN under p4m(28x28): p4m(28x28): 13 elements" in out
    assert "breaks r1;" not in out and "breaks m;" in out  # turns kept, mirrors not (p4 layers)
    assert (models / "report.html").read_text().startswith("<!DOCTYPE html>")
    argv = ["report", "mymodels:pooled", "--group", "P4M", "--input-shape", "8,8,3", "-o", "-", "--format", "json"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["reports"][0]["ok"]


@pytest.mark.slow
def test_the_readme_demo_command_runs(tmp_path, monkeypatch, capsys):
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    [line] = [line for line in readme.splitlines() if line.startswith("python -m pip install -e . && equivax demo")]
    command = line.split(" && ")[1].split()
    assert command == ["equivax", "demo"]
    monkeypatch.chdir(tmp_path)
    assert cli.main(command[1:]) == 0
    out = capsys.readouterr().out
    assert "Where each model first breaks" in out and "P4CNN" in out
    assert (tmp_path / "equivax-demo.html").read_text().startswith("<!DOCTYPE html>")
