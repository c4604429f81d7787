"""The pytest plugin collects the checks of a session and prints (and writes) a summary."""

import json

import pytest

USER_TESTS = """
import jax, jax.numpy as jnp, pytest
from hypothesis import given, settings
import equivax
from equivax import actions, groups, zoo
from equivax import strategies as eqst

SHIFTS = groups.translations(8, 8)
CONV = zoo.circular_conv(jnp.ones((3, 3, 1, 2)) / 9)

def circular_conv(x):
    return CONV(x)

@settings(max_examples=5, deadline=None, database=None)
@given(case=eqst.cases(SHIFTS, (1, 8, 8, 1)))
def test_conv_is_shift_equivariant(case):
    equivax.assert_equivariant(circular_conv, case.x, SHIFTS, elements=[case.g])

@pytest.mark.equivax
def test_pooling_loses_odd_shifts():
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 1))
    result = equivax.check(zoo.max_pool(2), x, SHIFTS, out_action=actions.strided(2))
    assert not result.ok
"""


def test_summary_table_and_json(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    path = pytester.path / "equivax.json"
    run = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider", "--equivax-summary", f"--equivax-json={path}")
    run.assert_outcomes(passed=2)
    run.stdout.fnmatch_lines(
        [
            "*equivax summary*",
            "test*layer*group*checks*worst element*rel error*verdict*",
            "*test_conv_is_shift_equivariant*circular_conv*translations(8x8)*5*equivariant*",
            "*test_pooling_loses_odd_shifts*translations(8x8)*1*shift(0,1)*broken*",
        ]
    )
    data = json.loads(path.read_text())
    assert data["version"] == 1 and len(data["rows"]) == 2
    pooling = next(r for r in data["rows"] if "pooling" in r["test"])
    assert pooling["worst"] == {"element": "shift(0,1)", "rel_error": None, "verdict": "broken"}


def test_marker_alone_opts_in_only_marked_tests(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    run = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=2)
    run.stdout.fnmatch_lines(["*equivax summary*", "*test_pooling_loses_odd_shifts*broken*"])
    assert "test_conv_is_shift_equivariant" not in run.stdout.str().split("equivax summary")[1]


def test_no_summary_without_opting_in(pytester):
    pytester.makepyfile(test_plain="def test_nothing():\n    assert 1 + 1 == 2\n")
    run = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=1)
    assert "equivax summary" not in run.stdout.str()


@pytest.mark.slow  # pytest-xdist starts worker processes
def test_rows_of_xdist_workers_reach_the_summary(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    path = pytester.path / "equivax.json"
    run = pytester.runpytest_subprocess(
        "-n", "2", "-p", "no:cacheprovider", "--equivax-summary", f"--equivax-json={path}"
    )
    run.assert_outcomes(passed=2)
    assert "no equivariance checks were made" not in run.stdout.str()
    run.stdout.fnmatch_lines(
        [
            "*equivax summary*",
            "*test_conv_is_shift_equivariant*circular_conv*translations(8x8)*5*equivariant*",
            "*test_pooling_loses_odd_shifts*translations(8x8)*1*shift(0,1)*broken*",
        ]
    )
    rows = json.loads(path.read_text())["rows"]
    assert sorted(r["test"].split("::")[1] for r in rows) == [
        "test_conv_is_shift_equivariant",
        "test_pooling_loses_odd_shifts",
    ]
    assert sum(r["checks"] for r in rows) == 6  # five property examples and one marked check


@pytest.mark.slow  # pytest-xdist starts worker processes
def test_marker_alone_reaches_the_summary_under_xdist(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    run = pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider")  # one worker: rows still travel
    run.assert_outcomes(passed=2)
    run.stdout.fnmatch_lines(["*equivax summary*", "*test_pooling_loses_odd_shifts*broken*"])
    assert "test_conv_is_shift_equivariant" not in run.stdout.str().split("equivax summary")[1]
