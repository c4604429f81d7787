"""The traced kernel: equal outputs measured stacked, a chunked loop's outputs packed per dtype,
and both restored on the host to exactly what one measurement per output gives."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equivax
from equivax import actions, groups, zoo
from equivax._kernel import Packed, leaf_groups, unpacked

P4 = groups.p4(8)
ELEMENTS = np.asarray(P4.elements)[1::37]  # seven shifts, with every turn


def images(shape=(2, 8, 8, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def weights(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) / np.sqrt(np.prod(shape[:-1])), jnp.float32)


def turned(w):
    """A filter invariant under quarter turns (summed in float64, so exactly so once rounded)."""
    w = np.asarray(w, np.float64)
    return jnp.asarray(sum(np.rot90(w, k, axes=(0, 1)) for k in range(4)) / 4, jnp.float32)


CONV = zoo.circular_conv(turned(weights((3, 3, 3, 3))))
LIFT = zoo.p4_lifting(weights((3, 3, 3, 2), seed=1))


def fields(x):
    """Seven outputs: four equal-shaped image maps (one leaking), a regular map, a vector, a scalar."""
    conv, lift = CONV, LIFT
    a = conv(x)
    leak = a + 1e-3 * x[:, 2:3, 5:6]
    return {
        "a": a,
        "b": jnp.tanh(a),
        "leak": leak,
        "c": jax.nn.relu(a),
        "lifted": lift(x),
        "pooled": jnp.mean(a, axis=(1, 2)),
        "total": jnp.sum(a, axis=(1, 2, 3)),
    }


OUT = {
    "a": actions.image(),
    "b": actions.image(),
    "leak": actions.image(),
    "c": actions.image(),
    "lifted": actions.regular(P4),
    "pooled": actions.trivial(),
    "total": actions.trivial(),
}


def same(a, b):
    """Two results of one output from different programs: equal verdicts, and equal numbers
    wherever the error is structural (XLA may fuse, and so round, two programs differently)."""
    assert a.verdicts == b.verdicts
    broken = np.asarray([v == "broken" for v in a.verdicts])
    for field in ("rel_error", "abs_error"):
        np.testing.assert_allclose(getattr(a, field)[broken], getattr(b, field)[broken], rtol=1e-4, err_msg=field)
    if a.error_maps is None:
        assert b.error_maps is None
    else:
        np.testing.assert_allclose(np.asarray(a.error_maps)[broken], np.asarray(b.error_maps)[broken], 1e-4, 1e-6)


@pytest.fixture
def ungrouped(monkeypatch):
    """Checks that measure each output by itself (the path before grouping), on fresh programs."""
    from equivax import _kernel

    equivax.clear_cache()
    monkeypatch.setattr(_kernel, "leaf_groups", lambda out_action, y: None)
    yield
    equivax.clear_cache()


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_grouped_and_packed_outputs_equal_one_measurement_per_output(chunk_size, request):
    x = images()
    out_action = actions.tree(OUT)
    grouped = equivax.check_outputs(fields, x, P4, out_action=out_action, elements=ELEMENTS, chunk_size=chunk_size)
    assert list(grouped) == [f"['{k}']" for k in sorted(OUT)]
    assert not grouped["['leak']"].ok and grouped["['a']"].ok and grouped["['lifted']"].ok
    request.getfixturevalue("ungrouped")
    alone = equivax.check_outputs(fields, x, P4, out_action=out_action, elements=ELEMENTS, chunk_size=chunk_size)
    for key in grouped:
        same(grouped[key], alone[key])


def test_chunked_and_whole_programs_agree():
    x = images(seed=1)
    whole = equivax.check_outputs(fields, x, P4, out_action=actions.tree(OUT), elements=ELEMENTS)
    chunked = equivax.check_outputs(fields, x, P4, out_action=actions.tree(OUT), elements=ELEMENTS, chunk_size=3)
    assert chunked["['a']"].chunk_size == 3
    for key in whole:
        same(whole[key], chunked[key])


def test_leaves_are_grouped_by_shape_dtype_and_action():
    y = {
        "a": jnp.zeros((2, 4, 4, 3)),
        "b": jnp.zeros((2, 4, 4, 3)),
        "half": jnp.zeros((2, 4, 4, 3), jnp.float16),
        "other_shape": jnp.zeros((2, 4, 4, 5)),
        "strided": jnp.zeros((2, 4, 4, 3)),
        "mine": jnp.zeros((2, 4, 4, 3)),
        "mine_too": jnp.zeros((2, 4, 4, 3)),
        "lambda": jnp.zeros((2, 4, 4, 3)),
    }
    mine = lambda g, v: v  # noqa: E731
    acts = {
        "a": actions.image(),
        "b": actions.image(),  # equal dataclass: grouped with "a"
        "half": actions.image(),
        "other_shape": actions.image(),
        "strided": actions.strided(2),
        "mine": mine,
        "mine_too": mine,  # the same function: grouped
        "lambda": lambda g, v: v,  # an equal-looking but distinct function: alone
    }
    groups_found = leaf_groups(actions.tree(acts), y)
    names = sorted(y)  # dict leaves are in sorted key order
    found = sorted(sorted(names[i] for i in members) for _, members in groups_found)
    assert found == sorted([["a", "b"], ["half"], ["other_shape"], ["strided"], ["mine", "mine_too"], ["lambda"]])


def test_an_action_on_a_subtree_as_a_whole_is_not_split():
    def swap(g, pair):  # moves a (positions, features) pair together: not leafwise
        positions, features = pair
        return features, positions

    y = {"pair": (jnp.zeros((2, 3)), jnp.ones((2, 3))), "map": jnp.zeros((2, 4, 4, 1))}
    assert leaf_groups(actions.tree({"pair": swap, "map": actions.image()}), y) is None
    assert leaf_groups(swap, y["pair"]) is None
    # A leafwise action over a subtree moves each leaf by itself.
    assert leaf_groups(actions.tree({"pair": actions.trivial(), "map": actions.image()}), y) is not None


def test_a_subtree_action_still_checks_every_leaf():
    def swapped(x):  # f(g·x) for a pair swapped by every element: the pair leaves trade places
        a = jnp.mean(x, axis=(1, 2))
        return {"pair": (a, a), "map": x}

    def swap(g, pair):
        return pair[1], pair[0]

    results = equivax.check_outputs(
        swapped, images(), groups.translations(8, 8), out_action=actions.tree({"pair": swap, "map": actions.image()})
    )
    assert all(r.ok for r in results.values()) and len(results) == 3


def test_packed_round_trip_keeps_dtypes_shapes_and_empty_leaves():
    tree = {
        "rel": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3),
        "where": jnp.asarray(7, jnp.int32),
        "finite": jnp.asarray([True, False]),
        "map": None,
        "half": jnp.full((2, 2), 0.5, jnp.float16),
        "more": jnp.ones((1, 2, 1), jnp.float32),
    }
    arrays, layout = Packed.pack(tree)
    # leaves in pytree order (sorted keys): finite, half, (map: none), more, rel, where
    assert [a.dtype for a in arrays] == [jnp.bool_, jnp.float16, jnp.float32, jnp.int32]
    assert [a.shape for a in arrays] == [(2,), (4,), (8,), (1,)]
    # With leading axes (elements, as a loop stacks them), each leaf gets them in front.
    stacked = Packed(tuple(np.stack([np.asarray(a)] * 3) for a in arrays), layout)
    back = unpacked({"parts": stacked})["parts"]
    assert back["map"] is None
    for key, value in tree.items():
        if value is not None:
            assert back[key].shape == (3, *value.shape) and back[key].dtype == value.dtype
            np.testing.assert_array_equal(back[key][1], value)


def test_packed_nodes_survive_tree_maps_like_the_sharded_reshape():
    arrays, layout = Packed.pack({"a": jnp.ones((2,)), "b": jnp.zeros((), jnp.int32)})
    packed = Packed(tuple(jnp.stack([a] * 4).reshape(2, 2, -1) for a in arrays), layout)
    reshaped = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), packed)
    out = unpacked(reshaped)
    assert out["a"].shape == (4, 2) and out["b"].shape == (4,)


def test_groups_compile_fewer_kernels_than_one_measurement_per_output():
    """The point of grouping and packing: XLA compiles per kernel, and a report has many outputs."""
    from equivax import _kernel

    x = images()
    kernel = _kernel.Kernel(lambda params, v: fields(v), None, actions.tree(OUT), 2, each_output=True)
    kernel = dataclasses.replace(kernel, in_action=actions.image())
    elements = jnp.asarray(np.asarray(P4.elements)[:4])

    def kernels(k):
        return jax.jit(k).lower(None, x, elements).compile().as_text().count("dynamic-update-slice(")

    assert kernels(kernel) <= 4  # one per dtype of the packed loop outputs


@dataclasses.dataclass(frozen=True)
class Scaled:
    """An action holding an array (as an Equinox module would): == on it returns arrays."""

    scale: jax.Array

    def __call__(self, g, v):
        return v * self.scale


def test_actions_whose_equality_is_an_array_are_compared_safely():
    y = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 3))}
    found = leaf_groups(actions.tree({"a": Scaled(jnp.ones(3)), "b": Scaled(jnp.ones(3))}), y)
    assert sorted(members for _, members in found) == [[0], [1]]  # not provably equal: apart
    shared = Scaled(jnp.ones(3))
    assert [members for _, members in leaf_groups(actions.tree({"a": shared, "b": shared}), y)] == [[0, 1]]


def test_an_action_given_a_one_leaf_subtree_receives_the_subtree():
    seen = []

    def on_dict(g, part):  # not leafwise: expects the dict it was declared for
        seen.append(type(part))
        return {"v": part["v"]}

    y = {"inner": {"v": jnp.ones((2, 3))}, "map": jnp.ones((2, 4, 4, 1))}
    assert leaf_groups(actions.tree({"inner": on_dict, "map": actions.image()}), y) is None
    results = equivax.check_outputs(
        lambda x: {"inner": {"v": jnp.mean(x, axis=(1, 2))}, "map": x},
        images((2, 4, 4, 1)),
        groups.translations(4, 4),
        out_action=actions.tree({"inner": on_dict, "map": actions.image()}),
    )
    assert all(r.ok for r in results.values()) and seen and all(t is dict for t in seen)


def test_each_leaf_keeps_its_own_domain_when_a_subtree_moves_as_a_whole():
    def swap(g, pair):
        return pair[1], pair[0]

    def f(x):
        pooled = x[:, ::2, ::2]  # a stride-2 output: odd shifts are outside its action
        return {"pair": (jnp.mean(x, axis=(1, 2)),) * 2, "pooled": pooled}

    out_action = actions.tree({"pair": swap, "pooled": actions.strided(2)})
    results = equivax.check_outputs(f, images((2, 8, 8, 1)), groups.translations(8, 8), out_action=out_action)
    pooled, pair = results["['pooled']"], results["['pair'][0]"]
    odd = [i for i, e in enumerate(pooled.elements) if e[0] % 2 or e[1] % 2]
    assert odd and all(pooled.methods[i] == "stride" for i in odd)
    assert all(pair.methods[i] != "stride" for i in odd) and pair.ok


def test_a_non_finite_output_is_named_among_finite_ones():
    def two(x):
        return {"fine": CONV(x), "spoiled": jnp.log(CONV(x))}  # log of negatives: NaN

    results = equivax.check_outputs(two, images(), groups.rotations())
    assert results["['fine']"].ok, results
    spoiled = results["['spoiled']"]
    assert not spoiled.ok and all("f(x) has NaN or inf" in r for r in spoiled.reasons), spoiled.reasons
