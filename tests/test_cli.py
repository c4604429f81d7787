"""The command line: `equivax check` runs the built-in examples and reports honestly."""

import json
import subprocess
import sys

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
