"""Strategies: validated arguments, compile-once property runs, shrinking to minimal counterexamples."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import equivax
from equivax import actions, groups, nn, zoo
from equivax import strategies as eqst

FIND = settings(database=None, max_examples=300, deadline=None)


def test_images_render_every_family_with_the_requested_shape_and_dtype():
    for family in eqst.FAMILIES:
        x = find(eqst.images((2, 8, 8, 3), families=[family]), lambda x: True)
        assert x.shape == (2, 8, 8, 3) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert find(eqst.images((1, 4, 4, 1), dtype=np.float64), lambda x: True).dtype == np.float64


def test_strategies_validate_their_arguments():
    with pytest.raises(InvalidArgument, match="tuple of positive ints"):
        eqst.images((8, 8, 3)).example()
    with pytest.raises(InvalidArgument, match="subset"):
        eqst.images((1, 8, 8, 1), families=["fractal"]).example()
    with pytest.raises(InvalidArgument, match="floating"):
        eqst.images((1, 8, 8, 1), dtype=np.int32).example()
    with pytest.raises(InvalidArgument, match="only the identity"):
        eqst.elements(groups.translations(1, 1)).example()
    with pytest.raises(InvalidArgument, match="positive ints"):
        eqst.shapes(sizes=[0]).example()


def test_elements_shrink_toward_the_simplest_non_identity_element():
    p4 = groups.p4(8)
    assert p4.label(find(eqst.elements(p4), lambda g: True)) in ("shift(0,1)", "shift(1,0)", "r1")
    assert groups.translations(8, 8).label(find(eqst.elements(groups.translations(8, 8)), lambda g: True)) == (
        "shift(0,1)"
    )
    sparse = groups.translations(8, 8, shifts=[(3, 3), (0, 2)])
    assert sparse.label(find(eqst.elements(sparse), lambda g: True)) == "shift(0,2)"
    assert groups.rotations().label(find(eqst.elements(groups.rotations()), lambda g: True)) == "r1"
    drawn = [p4.label(find(eqst.elements(p4), lambda g, k=k: g[2] == k, settings=FIND)) for k in (1, 3)]
    assert drawn == ["r1", "r3"]
    assert find(eqst.shapes(), lambda s: True) == (1, 8, 8, 1)


PROGRAMS = []
CONV = zoo.circular_conv(jax.random.normal(jax.random.key(0), (3, 3, 2, 3)) / 4)


def circular_conv(x):
    return CONV(x)


@settings(max_examples=200, deadline=None, database=None)
@given(case=eqst.cases(groups.translations(8, 8), (2, 8, 8, 2)))
def test_a_200_example_property_run_compiles_once(case):
    equivax.assert_equivariant(circular_conv, case.x, groups.translations(8, 8), elements=[case.g])
    # a plain function is re-traced on every check (so a changed closure is never judged by a stale
    # program), but one program serves every drawn input and element: nothing is compiled again
    PROGRAMS.append(equivax.cache_info().programs)
    assert PROGRAMS[-1] == PROGRAMS[0]


def test_shrinks_stride_two_pooling_to_a_one_pixel_shift():
    shifts = groups.translations(8, 8)
    pool = zoo.max_pool(2)
    case = find(
        eqst.cases(shifts, (1, 8, 8, 1)),
        lambda c: not equivax.check(pool, c.x, shifts, out_action=actions.strided(2), elements=[c.g]).ok,
        settings=FIND,
    )
    assert shifts.label(case.g) == "shift(0,1)"

    def pooled_sum(x):  # the numeric version: odd shifts change the pooled sum
        return jnp.sum(pool(x), axis=(1, 2))

    case = find(
        eqst.cases(shifts, (1, 8, 8, 1)),
        lambda c: not equivax.check(pooled_sum, c.x, shifts, out_action=actions.trivial(), elements=[c.g]).ok,
        settings=FIND,
    )
    assert shifts.label(case.g) == "shift(0,1)"
    assert len(np.unique(case.x)) > 1  # a constant image cannot show it; shrinking stops before one


def test_shrinks_a_wrong_way_p4_lifting_to_a_quarter_turn():
    c4 = groups.rotations()
    lift = zoo.p4_lifting(jax.random.normal(jax.random.key(1), (3, 3, 1, 2)), clockwise=True)
    case = find(
        eqst.cases(c4, (1, 8, 8, 1)),
        lambda c: not equivax.check(lift, c.x, c4, out_action=actions.regular(c4), elements=[c.g]).ok,
        settings=FIND,
    )
    assert c4.label(case.g) == "r1"  # not the half turn, which it keeps


def test_shrinks_a_mirror_symmetric_layer_under_d4_to_a_rotation():
    d4 = groups.dihedral()

    def mirror_invariant(x):
        return x + jnp.flip(x, axis=2)

    case = find(
        eqst.cases(d4, (1, 8, 8, 1)),
        lambda c: not equivax.check(mirror_invariant, c.x, d4, out_action=actions.trivial(), elements=[c.g]).ok,
        settings=FIND,
    )
    assert d4.label(case.g) == "r1"


@settings(max_examples=500, deadline=None, database=None)
@given(case=eqst.cases(groups.p4(8), (2, 8, 8, 1)))
def test_exact_layers_raise_no_false_alarm_on_500_cases(case):
    p4 = groups.p4(8)
    result = equivax.check(EXACT, case.x, p4, *nn.contract(EXACT).actions(), elements=[case.g])
    assert result.ok, result


EXACT = nn.GroupConv(4, 2, group="p4", padding="circular", rngs=nnx.Rngs(0))
EXACT = nnx.Sequential(nn.LiftingConv(1, 4, group="p4", padding="circular", rngs=nnx.Rngs(1)), jnp.tanh, EXACT)
EXACT.contract = nn.contract(EXACT.layers[0]).then(nn.contract(EXACT.layers[2]))


@given(st.data())
def test_digits_family_uses_real_handwritten_digits(data):
    x = data.draw(eqst.images((1, 16, 16, 1), families=["digits"], scales=[1.0]))
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5


def test_ci_profile_has_no_deadline_and_bounded_examples():
    profile = settings.get_profile("equivax-ci")
    assert profile.deadline is None and profile.max_examples == 50


def test_digits_are_loaded_once_per_process(monkeypatch):
    import sklearn.datasets

    eqst._digit_pictures.cache_clear()
    loads = []
    real = sklearn.datasets.load_digits
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: loads.append(1) or real())
    for seed in range(5):
        eqst.image("digits", seed=seed, scale=1.0, shape=(2, 8, 8, 1))
    assert len(loads) == 1


def test_image_rebuilds_what_the_strategy_drew():
    drawn = find(eqst.images((2, 8, 8, 3), families=["noise"], scales=[1e-3]), lambda x: x.max() > 2e-3)
    rebuilds = (s for s in range(2**16 + 1) if np.array_equal(eqst.image("noise", s, 1e-3, (2, 8, 8, 3)), drawn))
    seed = next(rebuilds, None)  # the first seed that rebuilds it (shrinking draws small ones)
    assert seed is not None, "no seed of image() gives the drawn array"
    group_map = eqst.image("smooth", seed=4, scale=1.0, shape=(1, 4, 4, 4, 2), dtype="float64")
    assert group_map.shape == (1, 4, 4, 4, 2) and group_map.dtype == np.float64
    with pytest.raises(InvalidArgument, match="family must be one of"):
        eqst.image("fractal", seed=0, scale=1.0, shape=(1, 4, 4, 1))


FAILING_PROPERTY = """
from hypothesis import given, settings
from equivax import groups, strategies as eqst

@settings(database=None, deadline=None, max_examples=5)
@given(case=eqst.cases(groups.p4(4), (1, 4, 4, 2)))
def test_fails(case):
    assert case.x.sum() < -1, f"sum={float(case.x.sum())!r} g={case.g.tolist()}"
"""


def test_failing_examples_print_as_public_calls_that_rebuild_them(pytester):
    pytester.makepyfile(test_user=FAILING_PROPERTY)
    run = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    run.assert_outcomes(failed=1)
    output = run.stdout.str().replace("\nE ", "\n")
    assert "_render" not in output and "_Image" not in output and "lambda" not in output
    lines = output.split("Failing test case: test_fails(")[1].splitlines()[1:]
    printed = "\n".join(line.split("#")[0] for line in lines[: [line.strip() for line in lines].index(")")])
    namespace = {}
    exec("from numpy import array, int32\nfrom equivax.strategies import Case, image", namespace)
    case = eval(f"dict({printed})", namespace)["case"]  # pasted as printed
    expected = re.search(r"sum=(\S+) g=(\[[^\]]*\])", output)
    assert float(case.x.sum()) == float(expected.group(1)) and case.g.tolist() == eval(expected.group(2))
