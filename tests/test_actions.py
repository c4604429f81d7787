"""Actions: consistency with jnp.roll/rot90/flip, and the homomorphism law ρ(gh) = ρ(g)ρ(h)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import equivax
from equivax import actions, continuous, groups

P4M = groups.p4m(6)


def feature_map(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


CASES = {
    "image-p4m": (P4M, actions.image(), (2, 6, 6, 3)),
    "image-rect-translations": (groups.translations(4, 6), actions.image(), (1, 4, 6, 2)),
    "image-flips-rect": (groups.flips(), actions.image(), (1, 3, 5, 1)),
    "regular-p4": (groups.p4(5), actions.regular(groups.p4(5)), (1, 5, 5, 4, 2)),
    "regular-p4m": (P4M, actions.regular(P4M), (1, 6, 6, 8, 2)),
    "regular-D4": (groups.dihedral(), actions.regular(groups.dihedral()), (1, 3, 3, 8, 1)),
    "regular-flips": (groups.flips(), actions.regular(groups.flips()), (1, 3, 3, 2, 1)),
    "strided-p4m": (groups.p4m(6, stride=2), actions.strided(2), (1, 3, 3, 2)),
    "regular-strided": (groups.p4(8, stride=4), actions.regular(groups.p4(8), stride=4), (1, 2, 2, 4, 1)),
    "trivial": (P4M, actions.trivial(), (2, 3)),
    "tree": (P4M, actions.tree((actions.image(), actions.trivial())), None),
}


def sample(shape, seed=0):
    if shape is None:
        return (feature_map((1, 6, 6, 2), seed), feature_map((1, 3), seed + 1))
    return feature_map(shape, seed)


@pytest.mark.parametrize("name", CASES)
@given(data=st.data())
def test_homomorphism(name, data):
    group, act, shape = CASES[name]
    i, j = data.draw(st.integers(0, len(group) - 1)), data.draw(st.integers(0, len(group) - 1))
    g, h = group.elements[i], group.elements[j]
    x = sample(shape, seed=data.draw(st.integers(0, 3)))
    left = act(group.compose(g, h), x)
    right = act(g, act(h, x))
    jax.tree.map(np.testing.assert_array_equal, left, right)


@pytest.mark.parametrize("name", CASES)
def test_identity_acts_trivially_and_vmaps_over_elements(name):
    group, act, shape = CASES[name]
    x = sample(shape)
    jax.tree.map(np.testing.assert_array_equal, act(group.identity, x), x)
    out = jax.jit(jax.vmap(act, in_axes=(0, None)))(group.elements, x)
    assert jax.tree.leaves(out)[0].shape[0] == len(group)


def test_image_action_matches_numpy_conventions():
    x = feature_map((1, 6, 6, 1))
    act = actions.image()
    np.testing.assert_array_equal(act(jnp.array([0, 0, 1, 0]), x), jnp.rot90(x, 1, axes=(1, 2)))
    np.testing.assert_array_equal(act(jnp.array([0, 0, 3, 0]), x), jnp.rot90(x, 3, axes=(1, 2)))
    np.testing.assert_array_equal(act(jnp.array([0, 0, 0, 1]), x), jnp.flip(x, axis=2))
    np.testing.assert_array_equal(act(jnp.array([2, 5, 0, 0]), x), jnp.roll(x, (2, 5), axis=(1, 2)))
    expected = jnp.roll(jnp.rot90(jnp.flip(x, 2), 1, axes=(1, 2)), (1, 2), axis=(1, 2))
    np.testing.assert_array_equal(act(jnp.array([1, 2, 1, 1]), x), expected)


def test_odd_sized_rotation_about_the_centre_pixel():
    x = jnp.zeros((1, 5, 5, 1)).at[0, 2, 2, 0].set(1.0)
    turned = actions.image()(jnp.array([0, 0, 1, 0]), x)
    np.testing.assert_array_equal(turned, x)


def test_regular_action_permutes_orientations_cyclically():
    x = jnp.broadcast_to(jnp.arange(4.0)[:, None], (1, 3, 3, 4, 1))
    turned = actions.regular(groups.rotations())(jnp.array([0, 0, 1, 0]), x)
    np.testing.assert_array_equal(turned[0, 0, 0, :, 0], [3.0, 0.0, 1.0, 2.0])


def test_strided_action_divides_shifts_and_knows_its_domain():
    act = actions.strided(2)
    x = feature_map((1, 4, 4, 1))
    np.testing.assert_array_equal(act(jnp.array([2, 4, 0, 0]), x), jnp.roll(x, (1, 2), axis=(1, 2)))
    assert bool(act.defined(jnp.array([2, 4, 0, 0])))
    assert not bool(act.defined(jnp.array([1, 0, 0, 0])))
    assert not bool(actions.tree((actions.trivial(), act)).defined(jnp.array([0, 3, 0, 0])))


def test_equal_constructions_hash_alike():
    assert actions.image() == actions.image() and hash(actions.strided(2)) == hash(actions.image(2))
    assert actions.regular(groups.p4(4)) == actions.regular(groups.p4(4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        actions.strided(0)
    with pytest.raises(ValueError, match="no point group"):
        actions.regular(groups.finite([np.eye(2, dtype=int)]))
    with pytest.raises(ValueError, match="orientation axis"):
        actions.regular(groups.rotations())(jnp.zeros(4, jnp.int32), jnp.zeros((1, 3, 3, 8, 1)))
    with pytest.raises(ValueError, match="spatial axes"):
        actions.image()(jnp.zeros(4, jnp.int32), jnp.zeros((3, 3)))
    with pytest.raises(TypeError, match="every leaf"):
        actions.tree((actions.image(), 3))


# ---------------------------------------------------------------------------------------------
# Validation: each action checks its own fit, in one line
# ---------------------------------------------------------------------------------------------


def spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def refused(action, group, x, role, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        actions.validate(action, group, x, role)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


@pytest.mark.parametrize("group", [groups.flips(), groups.rotations(), groups.p4(32), groups.translations(28)])
def test_channels_first_input_is_refused_even_without_an_image_size(group):
    size = 28 if group.shape == (28, 28) else 32
    refused(actions.image(), group, spec(8, 3, size, size), "in_action", r"looks NCHW.*x\.transpose\(0, 2, 3, 1\)")
    refused(actions.image(), group, spec(8, 1, size, size), "in_action", "looks NCHW")


def test_layout_messages():
    image, p4 = actions.image(), groups.p4(28)
    refused(image, p4, spec(28, 28, 1), "in_action", r"add a batch axis \(x\[None\]\)")
    refused(image, p4, spec(28, 28), "in_action", "add batch and channel axes")
    message = refused(image, p4, spec(2, 32, 32, 1), "in_action", r"groups\.p4\(32\)")
    assert "translations" not in message
    refused(image, groups.p4m(28, stride=2), spec(2, 32, 32, 1), "in_action", r"groups\.p4m\(32, stride=2\)")
    refused(image, groups.translations(6, 8), spec(2, 5, 8, 1), "in_action", r"groups\.translations\(5, 8\)")
    refused(image, groups.rotations(), spec(2, 6, 8, 1), "in_action", "square")
    refused(image, p4, spec(2, 14, 14, 4), "out_action", r"actions\.strided\(2\)")
    refused(actions.strided(2), p4, spec(2, 28, 28, 4), "out_action", "expects 14x14")
    regular = actions.regular(groups.p4(8))
    refused(regular, groups.p4(8), spec(8, 8, 4, 3), "in_action", r"add a batch axis")
    refused(regular, groups.p4(8), spec(2, 4, 8, 8, 3), "in_action", "orientation axis to position 3")
    refused(actions.regular(groups.p4(8)), groups.p4m(8), spec(2, 8, 8, 4, 3), "in_action", "r0·m")


def test_planar_actions_refuse_non_planar_groups():
    z2 = groups.finite([np.eye(2, dtype=int), np.array([[0, 1], [1, 0]])])
    refused(actions.image(), z2, spec(1, 4, 4, 1), "in_action", "not a planar group")
    refused(actions.RegularAction(groups.POINT_C4), z2, spec(1, 4, 4, 4, 1), "in_action", "not a planar group")


def test_valid_inputs_pass_and_plain_functions_have_nothing_to_check():
    cases = [
        (actions.image(), groups.p4(8), spec(2, 8, 8, 3), "in_action"),
        (actions.image(), groups.flips(), spec(2, 3, 5, 1), "in_action"),
        (actions.image(), groups.translations(28), spec(2, 28, 28, 3), "in_action"),  # NHWC wins on size
        (actions.strided(2), groups.p4(8, stride=2), spec(2, 4, 4, 3), "out_action"),
        (actions.regular(groups.p4m(6)), groups.p4m(6), spec(2, 6, 6, 8, 3), "in_action"),
        (actions.trivial(), groups.p4(8), spec(2, 10), "out_action"),
        (lambda g, x: x, groups.p4(8), spec(3), "in_action"),
        (
            actions.tree((actions.image(), actions.trivial())),
            groups.p4(8),
            (spec(1, 8, 8, 2), spec(1, 3)),
            "out_action",
        ),
    ]
    for action, group, x, role in cases:
        actions.validate(action, group, x, role)
    actions.validate(actions.image(), groups.p4(8), jnp.zeros((1, 8, 8, 1)), "in_action")  # arrays too


def test_pytrees_name_the_leaf_at_fault_and_trees_must_match():
    x = {"image": spec(1, 8, 8, 1), "mask": spec(8, 8, 1)}
    refused(actions.image(), groups.p4(8), x, "in_action", r"leaf \['mask'\]: .*add a batch axis")
    both = actions.tree((actions.image(), actions.trivial()))
    refused(both, groups.p4(8), spec(1, 8, 8, 1), "out_action", "structure")
    refused(both, groups.p4(8), (spec(1, 8, 8, 1), spec(1, 3), spec(1)), "out_action", "one action per part")
    refused(both, groups.p4(8), (spec(1, 6, 6, 1), spec(1, 3)), "out_action", "6x6")
    with pytest.raises(ValueError, match="role"):
        actions.validate(actions.image(), groups.p4(8), spec(1, 8, 8, 1), "input")


def test_optional_members_are_read_through_module_functions():
    plain = lambda g, x: x  # noqa: E731
    assert not actions.acts_leafwise(plain) and actions.acts_leafwise(actions.image())
    assert actions.resampling_tolerance(plain) is None and actions.resampling_tolerance(actions.image()) is None
    assert bool(actions.is_defined(plain, jnp.zeros(4)))
    both = actions.tree((continuous.rotate(), continuous.rotate(0.05)))
    assert actions.resampling_tolerance(both) == 0.05
    x = {"a": feature_map((1, 4, 4, 1)), "b": feature_map((1, 4, 4, 2), 1)}
    moved = actions.apply(actions.image(), jnp.array([0, 1, 0, 0]), x)
    np.testing.assert_array_equal(moved["b"], jnp.roll(x["b"], 1, axis=2))


# ---------------------------------------------------------------------------------------------
# The homomorphism probe
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["image-p4m", "regular-p4m", "strided-p4m", "trivial", "tree", "regular-flips"])
def test_probe_accepts_the_built_in_actions(name):
    group, act, shape = CASES[name]
    x = jax.tree.map(lambda leaf: leaf[:1], sample(shape))
    actions.probe(act, group, x, pairs=4)
    a, others = actions.probe_elements(group)
    gs, hs = np.stack([a, a, *others[:3]]), np.stack([a, *others[:3], a])
    identity, errors = actions.law_errors(act, group, x, gs, hs)
    assert float(identity) == 0 and np.all(np.asarray(errors) == 0)  # permutations: exact


def test_probe_catches_functions_that_are_not_group_actions():
    group, x = groups.translations(8), feature_map((1, 8, 8, 1))
    cases = {
        "ignores g": (lambda g, x: jnp.roll(x, 1, axis=2), r"act\(e, x\) ≠ x"),
        "shifts by g²": (lambda g, x: jnp.roll(x, g[1] ** 2 + g[0] ** 2, axis=2), r"act\(g·h, x\)"),
    }
    for name, (act, message) in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            actions.probe(act, group, x, role="in_action")
        assert "\n" not in str(info.value) and "in_action <lambda>" in str(info.value), name
    p4m = groups.p4m(4)
    inverse_first = lambda g, x: actions.image()(p4m.inverse(g), x)  # noqa: E731  (an anti-homomorphism)
    with pytest.raises(ValueError, match="not a group action"):
        actions.probe(inverse_first, p4m, feature_map((1, 4, 4, 1)))
    actions.probe(lambda g, x: jnp.roll(x, 2 * g[1], axis=2), group, x)  # shifting by 2t is an action: accepted


def test_law_errors_trace_under_jit():
    group = groups.p4(4)
    a, others = actions.probe_elements(group)
    assert group.label(a) == "r1" and len(others) == 16 and group.index(group.identity) not in map(group.index, others)
    gs, hs = np.stack([a, others[0], others[1]]), np.stack([others[0], a, others[2]])
    run = jax.jit(lambda x: actions.law_errors(actions.image(), group, x, gs, hs))
    identity, errors = run(feature_map((1, 4, 4, 2)))
    assert errors.shape == (3,) and float(identity) == 0 and float(jnp.max(errors)) == 0
    assert len(actions.probe_elements(groups.finite([np.eye(2)]))[1]) == 0  # nothing to pair in {e}
    actions.probe(lambda g, x: x + 0 * g.sum(), groups.finite([np.eye(2)]), feature_map((1, 3)))  # only act(e, x) = x


@pytest.mark.parametrize("stride", [1, 2])
def test_channels_first_image_action_is_the_transposed_nhwc_action(stride):
    group = groups.p4m(8)
    nhwc, nchw = actions.image(stride), actions.image(stride, channels_first=True)
    x = jax.random.normal(jax.random.key(0), (2, 8 // stride, 8 // stride, 3))
    for g in np.asarray(group.elements)[:: max(1, len(group) // 40)]:
        want = nhwc(jnp.asarray(g), x).transpose(0, 3, 1, 2)
        assert np.array_equal(np.asarray(nchw(jnp.asarray(g), x.transpose(0, 3, 1, 2))), np.asarray(want))
        assert bool(nchw.defined(jnp.asarray(g))) == bool(nhwc.defined(jnp.asarray(g)))
    assert actions.image(channels_first=True) == actions.image(channels_first=True)
    assert actions.image(channels_first=True) != actions.image()


def test_channels_first_inputs_are_checked_and_wrong_layouts_refused_in_one_line():
    w = jax.random.normal(jax.random.key(1), (2, 3, 3, 3))

    def circular(x):  # (N, C, H, W), as Equinox and PyTorch-style code lay images out
        x = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="wrap")
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def zero_padded(x):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))

    shifts = groups.translations(8, 6)
    act = actions.image(channels_first=True)
    x = jax.random.normal(jax.random.key(0), (2, 3, 8, 6))
    result = equivax.check(circular, x, shifts, act, act)
    assert result.ok and not equivax.check(zero_padded, x, shifts, act, act).ok
    found = equivax.report(zero_padded, x, shifts, act, act, by="operation")
    (maps,) = [layer.result.error_maps for layer in found.layers if layer.shape == (2, 2, 8, 6)]
    assert maps.shape[1:] == (8, 6) and maps.max() > 0  # one (H, W) map per element
    with pytest.raises(ValueError, match=r"channels_first=True\)") as err:
        equivax.check(circular, x.transpose(0, 2, 3, 1), shifts, act, act)  # NHWC given to the NCHW action
    assert "\n" not in str(err.value) and "looks NHWC" in str(err.value)
    with pytest.raises(ValueError, match=r"actions.image\(channels_first=True\)"):
        equivax.check(circular, x, shifts)  # NCHW given to the default NHWC action
    with pytest.raises(TypeError, match="channels_first must be True or False"):
        actions.image(channels_first="yes")


@pytest.mark.parametrize(
    "shape, channels_first",
    [((2, 6, 6, 3), False), ((2, 5, 7, 3), False), ((2, 3, 6, 6), True), ((3, 7, 7), False), ((2, 6, 6, 4, 2), False)],
)
def test_the_pixel_gather_equals_jax_indexing(shape, channels_first):
    from equivax._planar import source_pixels, take_pixels

    x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    h, w = shape[-2:] if channels_first else shape[1:3]
    turns = range(4) if h == w else (0, 2)
    for g in [(dy, dx, k, m) for dy in (-3, 0, 2, 5) for dx in (-1, 0, 4) for k in turns for m in (0, 1)]:
        rows, cols = source_pixels(jnp.array(g), h, w)
        want = x[..., rows, cols] if channels_first else x[:, rows, cols]
        got = take_pixels(x, rows, cols, x.ndim - 2 if channels_first else 1)
        assert got.shape == want.shape and bool(jnp.all(got == want)), g
