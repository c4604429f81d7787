"""assert_equivariant: a failure saves its input and element and prints a command that runs as pasted."""

import re
import subprocess
import sys

import numpy as np
import pytest

import equivax
from equivax import actions, groups, testing

USER_TESTS = """
import numpy as np
import equivax
from equivax import actions, groups, zoo

SHIFTS = groups.translations(8, 8)
POOL = zoo.max_pool(2)
X = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8, 1) ** 2


def test_pool_with_module_names():
    equivax.assert_equivariant(POOL, X, SHIFTS, out_action=actions.strided(2))


def test_pool_with_a_local_action():
    stride = actions.strided(2)
    equivax.assert_equivariant(POOL, X + 1, SHIFTS, out_action=stride, rtol=1e-3)
"""


@pytest.fixture
def failures(pytester, monkeypatch):
    """Run the user's failing tests; their saved inputs go to a folder of the test's own."""
    folder = pytester.path / "failures"
    monkeypatch.setenv(testing.FAILURE_DIR_VARIABLE, str(folder))
    pytester.makepyfile(test_user=USER_TESTS)
    run = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    run.assert_outcomes(failed=2)
    return run.stdout.str().replace("\nE   ", "\n").replace("\nE ", "\n"), folder


def _command(output: str, test: str) -> str:
    section = output.split(f"_ {test} _")[1]
    return re.search(r"\n\s*(cd .*)\n", section).group(1)


def test_failure_prints_a_command_with_the_module_names_and_the_saved_input(failures, pytester):
    output, folder = failures
    assert "equivax.check(f, x, group" not in output  # no placeholders
    command = _command(output, "test_pool_with_module_names")
    assert command.startswith(f"cd {pytester.path} && python -c ")
    assert "from test_user import POOL, SHIFTS" in command
    assert "print(equivax.check(POOL, x, SHIFTS, out_action=actions.strided(2), elements=[g]))" in command
    [path] = re.findall(r"load_failure\('([^']+)'\)", command)
    assert path.startswith(str(folder)) and "test_pool_with_module_names-" in path
    x, g = testing.load_failure(path)
    np.testing.assert_array_equal(x, np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8, 1) ** 2)
    assert groups.translations(8, 8).label(g) == "shift(0,1)"  # the worst element, and only it


def test_the_printed_program_reruns_the_check_on_the_failing_element(failures, pytester, monkeypatch, capsys):
    output, _ = failures
    program = _command(output, "test_pool_with_module_names").split(" && python -c ")[1]
    monkeypatch.syspath_prepend(str(pytester.path))
    exec(program[1:-1].replace('\\"', '"'), {})  # the shell's double quotes, undone
    printed = capsys.readouterr().out
    assert "1 elements, 1 broken" in printed and "shift(0,1)" in printed


def test_local_names_are_kept_and_their_place_named(failures):
    output, _ = failures
    section = output.split("_ test_pool_with_a_local_action _")[1]
    assert re.search(r"where the names are as at \S*test_user.py:\d+", section)
    assert "equivax.check(POOL, x, SHIFTS, out_action=stride, elements=[g], rtol=0.001)" in section
    assert "x, g = equivax.testing.load_failure(" in section


def test_failure_outside_source_code_still_saves_the_input(tmp_path, monkeypatch):
    monkeypatch.setenv(testing.FAILURE_DIR_VARIABLE, str(tmp_path))
    namespace = {"equivax": equivax, "actions": actions, "groups": groups, "np": np}
    code = "equivax.assert_equivariant(lambda x: x[:, ::2, ::2], np.ones((1, 4, 4, 1)) * np.arange(4), "
    code += "groups.translations(4, 4), out_action=actions.strided(2))"
    with pytest.raises(AssertionError, match=r"with your f, group and actions:\n    x, g = equivax"):
        exec(compile(code, "<no source>", "exec"), namespace)
    [saved] = tmp_path.iterdir()
    x, g = testing.load_failure(saved)
    assert x.shape == (1, 4, 4, 4) and g.shape == (4,)


@pytest.mark.slow
def test_the_printed_command_runs_as_pasted_in_a_shell(failures):
    output, _ = failures
    done = subprocess.run(
        ["bash", "-c", _command(output, "test_pool_with_module_names").replace("python -c", f"{sys.executable} -c")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "1 elements, 1 broken" in done.stdout
