"""Reference models: exact invariances where promised, honest numbers where not, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import equivax
from equivax import actions, groups, nn

INVARIANT = actions.trivial()


def digits(shape=(2, 28, 28, 1), seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_p4cnn_is_exactly_invariant_to_quarter_turns(dtype):
    model = nn.P4CNN(rngs=nnx.Rngs(0))
    if dtype == "float32":
        result = equivax.check(model, digits(), groups.rotations(), out_action=INVARIANT)
    else:
        with jax.enable_x64(True):
            result = equivax.check(model, digits(dtype=jnp.float64), groups.rotations(), out_action=INVARIANT)
    assert result.ok, result
    assert nn.contract(model).group(28, 28).name == "C4"


def test_p4cnn_inside_a_jitted_apply():
    model = nn.P4CNN(rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    apply = jax.jit(lambda x: nnx.merge(graphdef, state)(x))
    assert equivax.check(apply, digits(), groups.rotations(), out_action=INVARIANT).ok


def test_p4mcnn_is_exactly_invariant_to_turns_and_mirrors():
    model = nn.P4MCNN(rngs=nnx.Rngs(0))
    result = equivax.check(model, digits(), groups.dihedral(), out_action=INVARIANT)
    assert len(result.verdicts) == 7 and result.ok, result


def test_circular_p4cnn_is_invariant_to_its_whole_promised_group():
    model = nn.P4CNN(width=3, depth=3, padding="circular", rngs=nnx.Rngs(0))
    promise = nn.contract(model)
    group = promise.group(8, 8)
    assert group.name == "p4(8x8, stride=2)"
    assert equivax.check(model, digits((2, 8, 8, 1)), group, *promise.actions()).ok


def test_p4cnn_breaks_when_the_pooling_cannot_tile_the_turned_image():
    """30x30 → pool → 15x15 tiles fine; 26x26 too. An odd size is refused with a clear error."""
    model = nn.P4CNN(width=3, depth=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible by 2"):
        jax.eval_shape(lambda x: model(x), digits((1, 27, 27, 1)))


def test_cnn_is_shift_invariant_for_multiples_of_its_stride_only():
    model = nn.CNN(padding="circular", rngs=nnx.Rngs(0))
    x = digits((2, 16, 16, 1))
    promise = nn.contract(model)
    assert promise.stride == 4
    assert equivax.check(model, x, promise.group(16, 16), out_action=INVARIANT).ok
    odd = equivax.check(model, x, groups.translations(16, 16, shifts=[(0, 1), (1, 0), (1, 1)]), out_action=INVARIANT)
    assert set(odd.verdicts) == {"broken"}


def test_cnn_is_not_rotation_invariant_and_the_check_says_by_how_much():
    model = nn.CNN(padding="circular", rngs=nnx.Rngs(0))
    result = equivax.check(model, digits(), groups.rotations(), out_action=INVARIANT)
    print("\nCNN under quarter turns:\n" + result.table())
    assert set(result.verdicts) == {"broken"}
    assert np.min(result.rel_error) > 1e-3


def test_blur_pool_reduces_the_error_under_odd_shifts():
    x = digits((4, 16, 16, 1), seed=1)
    odd = groups.translations(16, 16, shifts=[(0, 1), (1, 0), (1, 1), (0, 3), (3, 1), (1, 5)])
    errors = {}
    for pool in ("max", "blur"):
        model = nn.CNN(padding="circular", pool=pool, widths=(4, 8), rngs=nnx.Rngs(0))
        errors[pool] = equivax.check(model, x, odd, out_action=INVARIANT).rel_error
    print(
        f"\nodd shifts, median relative error: max pool {np.median(errors['max']):.3e}, "
        f"blur pool {np.median(errors['blur']):.3e}"
    )
    assert np.median(errors["blur"]) < np.median(errors["max"])
    blurred = nn.CNN(padding="circular", pool="blur", widths=(4, 8), rngs=nnx.Rngs(0))
    assert equivax.check(blurred, x, groups.translations(16, 16, stride=4), out_action=INVARIANT).ok


def test_parameter_counts_match_a_hand_computation():
    def conv(k, c_in, c_out, orientations_in=1):
        return k * k * orientations_in * c_in * c_out + c_out

    cnn = conv(3, 1, 8) + conv(3, 8, 16) + (16 * 10 + 10)
    mlp = 784 * 24 + 24 + 24 * 10 + 10
    p4cnn = conv(3, 1, 10) + 5 * conv(3, 10, 10, 4) + conv(3, 10, 10, 4)
    p4mcnn = conv(3, 1, 7) + 5 * conv(3, 7, 7, 8) + conv(3, 7, 10, 8)
    rngs = nnx.Rngs(0)
    assert nn.count_parameters(nn.CNN(rngs=rngs)) == cnn == 1418
    assert nn.count_parameters(nn.MLP(rngs=rngs)) == mlp == 19090
    assert nn.count_parameters(nn.P4CNN(rngs=rngs)) == p4cnn == 21760
    assert nn.count_parameters(nn.P4MCNN(rngs=rngs)) == p4mcnn == 22795
    wide = nn.CNN(3, 5, widths=(4,), rngs=rngs)
    assert nn.count_parameters(wide) == conv(3, 3, 4) + 4 * 5 + 5


def test_models_build_from_rngs_alone_and_accept_keywords():
    rngs = nnx.Rngs(0)
    for model in (nn.CNN(rngs=rngs), nn.MLP(rngs=rngs), nn.P4CNN(rngs=rngs), nn.P4MCNN(rngs=rngs)):
        assert jax.eval_shape(lambda x, model=model: model(x), digits()).shape == (2, 10)
    assert nn.P4CNN(3, 4, width=2, depth=3, rngs=rngs)(digits((1, 8, 8, 3))).shape == (1, 4)
    assert nn.MLP(in_features=64, hidden=(8, 8), rngs=rngs)(digits((1, 8, 8, 1))).shape == (1, 10)


def test_bad_model_input():
    rngs = nnx.Rngs(0)
    cnn, mlp = nn.CNN(rngs=rngs), nn.MLP(rngs=rngs)
    with pytest.raises(ValueError, match="1 input channels but x has 3"):
        jax.eval_shape(lambda x: cnn(x), digits((1, 28, 28, 3)))
    with pytest.raises(ValueError, match="in_features=100"):
        jax.eval_shape(lambda x: mlp(x), digits((1, 10, 10, 1)))
    with pytest.raises(ValueError, match="square"):
        equivax.check(nn.P4CNN(rngs=rngs), digits((1, 28, 32, 1)), groups.rotations(), out_action=INVARIANT)
    with pytest.raises(ValueError, match="depth"):
        nn.P4CNN(depth=2, rngs=rngs)
    with pytest.raises(ValueError, match="pool"):
        nn.CNN(pool="avg", rngs=rngs)
