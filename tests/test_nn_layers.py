"""Every equivax layer keeps the promise of its contract, checked with equivax's own check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import equivax
from equivax import groups, nn


def images(shape, seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype=dtype)


def feature_maps(group, size=6, channels=3, seed=0, dtype=jnp.float32):
    k = {"p4": 4, "p4m": 8}[group]
    return images((2, size, size, k, channels), seed, dtype)


def full_group(name, size, stride=None):
    return (groups.p4 if name == "p4" else groups.p4m)(size, stride=stride)


def check_contract(layer, x, group=None, **kwargs):
    """Check ``layer`` under the group its contract promises (or ``group``), with its actions."""
    promise = nn.contract(layer)
    group = group or promise.group(x.shape[1], x.shape[2])
    return equivax.check(layer, x, group, *promise.actions(), **kwargs)


@pytest.mark.parametrize("name", ["p4", "p4m"])
def test_lifting_conv_keeps_its_promise(name, dtype):
    layer = nn.LiftingConv(3, 4, group=name, padding="circular", rngs=nnx.Rngs(0))
    result = check_contract(layer, images((2, 6, 6, 3), dtype=dtype))
    assert len(result.verdicts) == len(full_group(name, 6)) - 1
    assert result.ok, result


@pytest.mark.parametrize("name", ["p4", "p4m"])
def test_group_conv_keeps_its_promise(name, dtype):
    layer = nn.GroupConv(3, 2, group=name, padding="circular", rngs=nnx.Rngs(1))
    result = check_contract(layer, feature_maps(name, dtype=dtype))
    assert result.ok, result


@pytest.mark.parametrize("name", ["p4", "p4m"])
def test_group_layers_inside_a_users_jit(name):
    layer = nn.GroupConv(3, 2, group=name, padding="circular", rngs=nnx.Rngs(1))
    x = feature_maps(name)
    promise = nn.contract(layer)
    result = equivax.check(jax.jit(lambda x: layer(x)), x, promise.group(6, 6), *promise.actions())
    assert result.ok, result


@pytest.mark.parametrize("name", ["p4", "p4m"])
def test_zero_padding_keeps_turns_and_mirrors_and_breaks_shifts(name):
    layer = nn.GroupConv(3, 2, group=name, padding="zeros", rngs=nnx.Rngs(1))
    x = feature_maps(name)
    in_action, out_action = nn.contract(layer).actions()
    assert nn.contract(layer).group(6, 6).name in ("C4", "D4")
    assert check_contract(layer, x).ok
    shifted = equivax.check(layer, x, groups.translations(6, 6), in_action, out_action)
    assert set(shifted.verdicts) == {"broken"}
    print(f"zero-padded {name} group conv under shifts: median rel error {np.median(shifted.rel_error):.2e}")


def test_strided_group_conv_promises_shifts_only():
    layer = nn.LiftingConv(2, 3, group="p4", padding="circular", stride=2, rngs=nnx.Rngs(0))
    x = images((1, 8, 8, 2))
    promise = nn.contract(layer)
    assert promise.group(8, 8).name == "translations(8x8, stride=2)"
    assert check_contract(layer, x).ok
    turned = equivax.check(layer, x, groups.rotations(), *promise.actions())
    assert not turned.ok  # the subsampling grid is not symmetric under a quarter turn of 8x8


def test_plain_conv_circular_and_zero_padding():
    circular = nn.Conv(3, 4, padding="circular", rngs=nnx.Rngs(0))
    zeros = nn.Conv(3, 4, padding="zeros", rngs=nnx.Rngs(0))
    x = images((2, 8, 8, 3))
    assert check_contract(circular, x).ok
    assert nn.contract(zeros).group(8, 8) is None
    result = equivax.check(zeros, x, groups.translations(8, 8))
    assert set(result.verdicts) == {"broken"}
    assert not equivax.check(circular, x, groups.rotations()).ok  # a random filter is not isotropic


@pytest.mark.parametrize("group", [None, "p4", "p4m"])
def test_max_and_average_pooling(group):
    x = images((2, 8, 8, 3)) if group is None else feature_maps(group, size=8)
    for layer in (nn.MaxPool(2, group=group), nn.AvgPool(2, group=group)):
        promise = nn.contract(layer)
        g = promise.group(8, 8)
        assert g.name == f"{'p4m' if group is None else group}(8x8, stride=2)"
        assert check_contract(layer, x).ok


def test_pooling_breaks_odd_shifts_with_the_reason():
    layer = nn.MaxPool(2)
    result = equivax.check(layer, images((1, 8, 8, 1)), groups.translations(8, 8), *nn.contract(layer).actions())
    odd = [r for r, e in zip(result.reasons, result.elements, strict=True) if e[0] % 2 or e[1] % 2]
    assert odd and all(r == equivax.actions.OUTSIDE_STRIDE for r in odd)


def test_overlapping_max_pool_keeps_every_shift():
    layer = nn.MaxPool(2, stride=1)
    assert check_contract(layer, images((2, 8, 8, 3))).ok
    assert nn.contract(layer).group(8, 8).name == "translations(8x8)"


@pytest.mark.parametrize("group", [None, "p4"])
def test_blur_pool_is_exact_for_even_shifts(group):
    x = images((2, 8, 8, 3)) if group is None else feature_maps(group, size=8)
    layer = nn.BlurPool(3, 2, group=group)
    assert check_contract(layer, x).ok
    np.testing.assert_allclose(nn.pool.binomial_filter(3), [0.25, 0.5, 0.25])


@pytest.mark.parametrize("name", ["p4", "p4m"])
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_group_pool_gives_invariant_fibres(name, mode):
    layer = nn.GroupPool(mode, group=name)
    result = check_contract(layer, feature_maps(name))
    assert result.ok, result


@pytest.mark.parametrize("group", [None, "p4m"])
def test_global_pool_is_invariant(group):
    x = images((2, 6, 6, 3)) if group is None else feature_maps(group)
    layer = nn.GlobalPool("mean", group=group)
    assert check_contract(layer, x, group=groups.p4m(6)).ok


def test_group_batch_norm_shares_statistics_over_orientations():
    x = feature_maps("p4") * 3 + 1
    layer = nn.GroupBatchNorm(3, group="p4", rngs=nnx.Rngs(0))
    assert check_contract(layer, x).ok  # training mode: batch statistics
    layer.eval()
    layer.norm.mean[...] = jnp.asarray([0.5, -1.0, 2.0])
    assert check_contract(layer, x).ok  # evaluation mode: running statistics

    # the tempting alternative, a scale per (orientation, channel), breaks the rotations once trained
    per_orientation = PerOrientationNorm()
    per_orientation.norm.scale[...] = jnp.linspace(0.5, 1.5, 12)
    result = equivax.check(per_orientation, x, groups.rotations(), *nn.contract(layer).actions())
    assert set(result.verdicts) == {"broken"}
    # a closure over a module in training mode cannot update it from inside the check
    norm = PerOrientationNorm()
    with pytest.raises(TypeError, match="pass the module itself"):
        equivax.check(lambda x: norm(x), x, groups.rotations(), *nn.contract(layer).actions())


class PerOrientationNorm(nnx.Module):
    def __init__(self):
        self.norm = nnx.BatchNorm(4 * 3, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.norm(x.reshape(*x.shape[:3], 12)).reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_wrong_channel_count():
    with pytest.raises(ValueError, match="built for 3 input channels but x has 1"):
        nn.Conv(3, 4, rngs=nnx.Rngs(0))(jnp.ones((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="built for 2 input channels"):
        nn.GroupConv(2, 4, rngs=nnx.Rngs(0))(jnp.ones((1, 8, 8, 4, 3)))


def test_wrong_layout():
    with pytest.raises(ValueError, match=r"p4m feature maps \(N, H, W, 8, C\)"):
        nn.GroupPool(group="p4m")(jnp.ones((1, 8, 8, 4, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        nn.Conv(3, 4, rngs=nnx.Rngs(0))(jnp.ones((8, 8, 3)))


def test_size_the_pooling_cannot_divide():
    with pytest.raises(ValueError, match="divisible by 2, got 7x7"):
        nn.MaxPool(2)(jnp.ones((1, 7, 7, 1)))
    with pytest.raises(ValueError, match="divisible by 2"):
        nn.BlurPool()(jnp.ones((1, 9, 8, 1)))


def test_even_kernel_for_a_rotation_group_and_bad_options():
    with pytest.raises(ValueError, match="even"):
        nn.LiftingConv(1, 2, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding"):
        nn.Conv(1, 2, padding="reflect", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="group must be"):
        nn.GroupConv(1, 2, group="p6", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mode"):
        nn.GroupPool("sum")


def test_non_square_input_for_a_rotation_group():
    layer = nn.LiftingConv(1, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="square"):
        equivax.check(layer, jnp.ones((1, 6, 8, 1)), groups.rotations(), *nn.contract(layer).actions())
    assert nn.contract(layer).group(6, 8) is None


def test_contract_helper():
    with pytest.raises(TypeError, match="declares no equivariance contract"):
        nn.contract(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    lift = nn.contract(nn.LiftingConv(1, 2, group="p4m", padding="circular", rngs=nnx.Rngs(0)))
    assert lift.exact_for == "circular shifts, quarter turns and mirrors"
    assert lift.then(nn.contract(nn.GroupPool(group="p4m"))).output == "image"
    with pytest.raises(ValueError, match="cannot chain"):
        lift.then(nn.contract(nn.Conv(1, 2, rngs=nnx.Rngs(0))))
