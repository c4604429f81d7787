"""The check's contract: exact layers pass, structural breaks fail, bad input explains itself."""

import dataclasses
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from layers import deep_circular_cnn, p4_network, weights

import equivax
from equivax import actions, groups, zoo

pytestmark = pytest.mark.usefixtures("strict_promotion")

C4 = groups.rotations()
REGULAR_C4 = actions.regular(C4)


def images(shape=(2, 8, 8, 3), seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype=dtype)


def verdict_set(result):
    return set(result.verdicts)


@pytest.fixture(params=["plain", "jit"])
def wrap(request):
    """The checker must see through a user's own jax.jit."""
    return (lambda f: f) if request.param == "plain" else jax.jit


# ------------------------------------------------------------------------------------------------
# Exact layers are never flagged, in float32 and float64, with no tolerance.
# ------------------------------------------------------------------------------------------------


def test_circular_conv_is_equivariant_under_every_shift(dtype, wrap):
    x = images(dtype=dtype)
    f = wrap(zoo.circular_conv(weights((3, 3, 3, 5)).astype(dtype)))
    result = equivax.check(f, x, groups.translations(8, 8))
    assert len(result.verdicts) == 63
    assert verdict_set(result) == {"equivariant"}, result
    assert set(result.methods) <= {"exact", "float64"}
    assert result.dtype == jnp.dtype(dtype).name


def test_global_mean_is_invariant_under_p4m(dtype):
    x = images((2, 6, 6, 3), dtype=dtype)
    result = equivax.check(zoo.global_mean, x, groups.p4m(6), out_action=actions.trivial())
    assert len(result.verdicts) == 6 * 6 * 8 - 1
    assert result.ok, result


def test_p4_lifting_is_equivariant_with_the_regular_action(dtype, wrap):
    x = images((2, 7, 7, 3), dtype=dtype)
    f = wrap(zoo.p4_lifting(weights((3, 3, 3, 4)).astype(dtype)))
    result = equivax.check(f, x, C4, out_action=REGULAR_C4)
    assert result.ok, result


def test_p4_lifting_is_equivariant_under_p4m_translations_part():
    x = images((1, 6, 6, 2))
    g = groups.p4(6)
    result = equivax.check(zoo.p4_lifting(weights((3, 3, 2, 3))), x, g, out_action=actions.regular(g))
    assert len(result.verdicts) == 6 * 6 * 4 - 1
    assert result.ok, result


def test_deep_circular_cnn_with_large_activations(dtype):
    x = images((2, 8, 8, 3), dtype=dtype) * 10
    f = deep_circular_cnn(depth=6, gain=3.0)
    assert float(jnp.max(f(x))) > 1e3  # the activations really are large
    result = equivax.check(f, x, groups.translations(8, 8))
    assert result.ok, result


# ------------------------------------------------------------------------------------------------
# Exact layers with large float32 rounding are never flagged.
# ------------------------------------------------------------------------------------------------


def test_mean_after_large_offset_has_large_rounding_but_passes():
    w = weights((3, 3, 3, 4))
    conv = zoo.circular_conv(w)

    def f(x):
        return jnp.mean(conv(x) + 3e3, axis=(1, 2)) - 3e3

    x = images((2, 16, 16, 3))
    result = equivax.check(f, x, groups.translations(16, 16), out_action=actions.trivial())
    assert np.max(result.rel_error) > 1e-4, "the float32 error should be large for this test to mean anything"
    assert result.ok, result
    assert result.rounding > 1e-5


def test_eight_layer_p4_tanh_network():
    x = images((1, 6, 6, 3))
    result = equivax.check(p4_network(depth=8, width=4), x, C4, out_action=REGULAR_C4)
    assert np.max(result.rel_error) > 1e-8
    assert result.ok, result


def test_closure_over_float32_weights_with_lax_conv_directly():
    w = weights((3, 3, 3, 4))  # float32, closed over; lax.conv demands equal dtypes

    def f(x):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
        y = lax.conv_general_dilated(xp, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jnp.tanh(y), axis=(1, 2))  # the sum's order changes with the shift

    result = equivax.check(f, images(), groups.translations(8, 8), out_action=actions.trivial())
    assert result.ok and "float64" in result.methods, result


# ------------------------------------------------------------------------------------------------
# Structural breaks are always flagged, including small ones.
# ------------------------------------------------------------------------------------------------


def test_zero_padded_conv_breaks_under_circular_shifts(dtype):
    x = images(dtype=dtype)
    result = equivax.check(zoo.zero_padded_conv(weights((3, 3, 3, 4)).astype(dtype)), x, groups.translations(8, 8))
    assert verdict_set(result) == {"broken"}
    assert np.all(result.rel_error > 1e-2)


def test_stride_two_max_pool_breaks_for_odd_shifts_only():
    x = images()
    result = equivax.check(zoo.max_pool(2), x, groups.translations(8, 8), out_action=actions.strided(2))
    odd = (result.elements[:, 0] % 2 == 1) | (result.elements[:, 1] % 2 == 1)
    assert all(v == "broken" for v in np.asarray(result.verdicts)[odd])
    assert all(r == actions.OUTSIDE_STRIDE for r in np.asarray(result.reasons)[odd])
    assert all(v == "equivariant" for v in np.asarray(result.verdicts)[~odd])
    assert odd.sum() == 48 and (~odd).sum() == 15


def test_stride_two_max_pool_is_broken_under_odd_shifts_with_plain_action_too():
    x = images()
    evens = groups.translations(8, 8, stride=2)
    assert equivax.check(zoo.max_pool(2), x, evens, out_action=actions.strided(2)).ok
    # an odd shift before the pool, followed by a global readout, shows the error numerically
    f = lambda x: jnp.sum(zoo.max_pool(2)(x), axis=(1, 2))  # noqa: E731
    result = equivax.check(f, x, groups.translations(8, 8, shifts=[(0, 1)]), out_action=actions.trivial())
    assert result.verdicts == ("broken",) and result.rel_error[0] > 1e-3


def test_tiny_fixed_bump_at_one_pixel_is_broken():
    conv = zoo.circular_conv(weights((3, 3, 3, 4)))
    bump = jnp.zeros((8, 8, 4)).at[2, 5].set(1e-4)
    result = equivax.check(lambda x: conv(x) + bump, images(), groups.translations(8, 8))
    assert verdict_set(result) == {"broken"}, result
    assert np.max(result.rel_error) < 1e-3  # small, yet structural


def test_one_pixel_leak_of_1e5_is_broken_at_relative_error_1e6():
    conv = zoo.circular_conv(weights((3, 3, 3, 4), scale=10.0))

    def f(x):
        return conv(x) + 1e-5 * x[:, 3:4, 3:4, :1]

    result = equivax.check(f, images(), groups.translations(8, 8))
    assert np.median(result.rel_error) < 1e-5
    assert verdict_set(result) == {"broken"}, result


def test_wrong_way_p4_lifting_breaks_quarter_turns_but_not_the_half_turn(wrap):
    f = wrap(zoo.p4_lifting(weights((3, 3, 3, 4)), clockwise=True))
    result = equivax.check(f, images((2, 7, 7, 3)), C4, out_action=REGULAR_C4)
    assert dict(zip(result.labels, result.verdicts, strict=True)) == {
        "r1": "broken",
        "r2": "equivariant",
        "r3": "broken",
    }


def test_per_orientation_bias_is_broken():
    lift = zoo.p4_lifting(weights((3, 3, 3, 4)))
    bias = jnp.asarray([0.0, 1e-5, 0.0, 0.0])[:, None]
    result = equivax.check(lambda x: lift(x) + bias, images((2, 7, 7, 3)), C4, out_action=REGULAR_C4)
    assert verdict_set(result) == {"broken"}, result


def test_nan_for_some_inputs_is_nonfinite_never_a_pass():
    conv = zoo.circular_conv(weights((3, 3, 3, 4)))
    result = equivax.check(lambda x: jnp.log(conv(x)), images(), groups.translations(8, 8))
    assert verdict_set(result) == {"nonfinite"}
    assert not result.ok
    rows = [row for row in result.table().splitlines()[1:] if not row.startswith("...")]
    assert rows and all("NaN/inf" in row and "0.00e+00" not in row for row in rows)
    with pytest.raises(AssertionError, match="NaN or inf"):
        equivax.assert_equivariant(lambda x: jnp.log(conv(x)), images(), groups.translations(8, 8))


def test_nan_only_after_the_transform_is_flagged_for_that_element():
    def f(x):  # finite unless the top-left pixel is exactly zero
        return 1.0 / x[:, :1, :1, :] + 0 * x

    x = jnp.ones((1, 4, 4, 1)).at[0, 2, 2, 0].set(0.0)
    result = equivax.check(f, x, groups.translations(4, 4, shifts=[(2, 2), (1, 0)]))
    assert dict(zip(result.labels, result.verdicts, strict=True))["shift(2,2)"] == "nonfinite"


# ------------------------------------------------------------------------------------------------
# Options: elements, chunks, tolerances, modules, pytrees, caching.
# ------------------------------------------------------------------------------------------------


def test_elements_restricts_the_check():
    g = groups.translations(8, 8)
    result = equivax.check(zoo.zero_padded_conv(weights((3, 3, 3, 2))), images(), g, elements=[jnp.array([0, 1, 0, 0])])
    assert result.labels == ("shift(0,1)",)
    with pytest.raises(ValueError, match="not in translations"):
        equivax.check(zoo.global_mean, images(), g, elements=[jnp.array([0, 9, 0, 0])])


def test_chunking_gives_the_same_numbers():
    f = zoo.zero_padded_conv(weights((3, 3, 3, 2)))
    g = groups.translations(8, 8)
    whole = equivax.check(f, images(), g)
    chunked = equivax.check(f, images(), g, chunk_size=5)
    np.testing.assert_allclose(chunked.rel_error, whole.rel_error, rtol=1e-6)
    assert chunked.verdicts == whole.verdicts


def test_automatic_chunks_on_cpu_give_the_same_numbers(monkeypatch):
    f = zoo.zero_padded_conv(weights((3, 3, 3, 2)))
    g = groups.translations(8, 8)
    whole = equivax.check(f, images(seed=3), g, chunk_size=63)
    assert whole.chunk_size == 63
    monkeypatch.setattr(importlib.import_module("equivax._cache"), "CPU_CHUNK_BYTES", 4096)
    equivax.clear_cache()
    auto = equivax.check(f, images(seed=3), g)
    assert auto.chunk_size is not None and 1 <= auto.chunk_size < 63
    chunks = -(-63 // auto.chunk_size)
    assert chunks * auto.chunk_size - 63 < chunks  # balanced: padding is less than one element per chunk
    np.testing.assert_allclose(auto.rel_error, whole.rel_error, rtol=1e-6)
    assert auto.verdicts == whole.verdicts


def test_tolerance_mode_skips_the_float64_run_and_reports_approximate():
    f = zoo.zero_padded_conv(weights((3, 3, 3, 2)))
    g = groups.translations(8, 8, shifts=[(0, 1)])
    loose = equivax.check(f, images(), g, rtol=10.0)
    tight = equivax.check(f, images(), g, rtol=1e-6)
    assert loose.verdicts == ("approximate",) and loose.methods == ("tolerance",)
    assert tight.verdicts == ("broken",)
    assert np.isnan(loose.rel_error64[0])
    exact = equivax.check(zoo.circular_conv(weights((3, 3, 3, 2))), images(), g, atol=1e-3)
    assert exact.verdicts == ("equivariant",)


def test_nnx_module_is_accepted_directly():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), padding="CIRCULAR", rngs=rngs)

        def __call__(self, x):
            return jnp.mean(nnx.relu(self.conv(x)), axis=(1, 2))

    result = equivax.check(Net(nnx.Rngs(0)), images(), groups.translations(8, 8), out_action=actions.trivial())
    assert result.ok, result
    zero = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    assert not equivax.check(zero, images(), groups.translations(8, 8)).ok


def test_pytree_outputs_with_a_tree_of_actions():
    conv = zoo.circular_conv(weights((3, 3, 3, 2)))

    def f(x):
        y = conv(x)
        return {"features": y, "pooled": jnp.mean(y, axis=(1, 2))}

    g = groups.translations(8, 8)
    result = equivax.check(f, images(), g, out_action={"features": actions.image(), "pooled": actions.trivial()})
    assert result.ok, result
    wrong = equivax.check(f, images(), g, out_action={"features": actions.trivial(), "pooled": actions.trivial()})
    assert not wrong.ok
    assert wrong.locations[wrong.worst][0] == "['features']"


def test_second_call_with_the_same_shapes_does_not_compile_again():
    traces = []
    w = weights((3, 3, 3, 2))
    conv = zoo.circular_conv(w)

    def f(x):
        traces.append(1)  # f's closure changes as it is traced: each check traces again, to be sure
        return conv(x)

    g = groups.translations(8, 8)

    def run(seed):
        equivax.check(f, images(seed=seed), g)
        equivax.check(f, images(seed=seed), g, elements=[jnp.array([0, 1, 0, 0])])

    equivax.clear_cache()
    run(0)
    first = len(traces)
    # two programs (63 and 1 elements), each tracing f once (f(x) with every f(g·x)), and f alone once
    # for 63 elements, to size automatic chunks
    assert first == 3
    programs = equivax.cache_info().programs
    for seed in range(1, 4):
        run(seed)
    assert equivax.cache_info().programs == programs  # traced again and found the same: not compiled
    assert equivax.cache_info().hits == 6


def test_user_float64_input_is_decided_by_a_float32_rerun():
    with jax.enable_x64(True):
        x = images(dtype=jnp.float64)
        bump = jnp.zeros((8, 8, 2), jnp.float64).at[0, 0].set(1e-9)
        conv = zoo.circular_conv(weights((3, 3, 3, 2)).astype(jnp.float64))
        pooled = equivax.check(lambda x: jnp.mean(conv(x), axis=(1, 2)), x, groups.p4(8), out_action=actions.trivial())
        broken = equivax.check(lambda x: conv(x) + bump, x, groups.translations(8, 8))
    assert pooled.ok and pooled.rounding > 0 and "float64" in pooled.methods
    assert not broken.ok  # a 1e-9 bump is invisible to float32 but structural in float64


def test_no_second_precision_is_undecided_never_a_pass(monkeypatch):
    from equivax.precision import RetypeError

    def refuse(closed, dtype, move_literals=None, patches=False):
        raise RetypeError("primitive 'mystery' carries a program that cannot be re-typed")

    monkeypatch.setattr(importlib.import_module("equivax._program"), "retyped", refuse)
    equivax.clear_cache()
    leak = lambda x: jnp.tanh(x) + 3e-5 * x[:, 3:4, 5:6]  # noqa: E731 - a real break
    result = equivax.check(leak, images(), groups.translations(8, 8, shifts=[(0, 1)]))
    assert result.verdicts == ("undecided",) and result.methods == ("undecided",)
    assert not result.ok and "mystery" in result.reasons[0] and "rtol" in result.reasons[0]
    assert "UNDECIDED" in result.summary()
    with pytest.raises(AssertionError):
        equivax.assert_equivariant(leak, images(), groups.translations(8, 8, shifts=[(0, 1)]))


def test_bitwise_exact_elements_need_no_second_run():
    conv = zoo.circular_conv(weights((3, 3, 3, 2)))
    result = equivax.check(conv, images(), groups.translations(8, 8, shifts=[(0, 1), (3, 2)]))
    assert result.methods == ("exact", "exact") and result.ok
    assert result.rounding is None and np.all(np.isnan(result.rel_error64))


def test_result_serialises_to_json_and_reads_well():
    result = equivax.check(zoo.zero_padded_conv(weights((3, 3, 3, 2))), images(), groups.translations(8, 8))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ok"] is False and len(data["elements"]) == 63
    assert data["elements"][0]["verdict"] == "broken"
    text = repr(result)
    assert "broken" in text and "more elements" in text
    assert result.worst == int(np.argmax(result.rel_error))


def test_assertion_message_names_element_errors_floor_location_and_reproduction():
    f = zoo.zero_padded_conv(weights((3, 3, 3, 2)))
    with pytest.raises(AssertionError) as info:
        equivax.assert_equivariant(f, images(), groups.translations(8, 8))
    message = str(info.value)
    for needle in (
        "Worst element: shift(",
        "relative error",
        "float64 re-run",
        "rounding floor",
        "output[",
        "Reproduce",
    ):
        assert needle in message, message
    assert equivax.assert_equivariant(zoo.circular_conv(weights((3, 3, 3, 2))), images(), groups.translations(8, 8)).ok


# ------------------------------------------------------------------------------------------------
# Bad input: one sentence naming the cause and the fix.
# ------------------------------------------------------------------------------------------------


def test_rotating_a_non_square_image():
    with pytest.raises(ValueError, match="square"):
        equivax.check(jnp.tanh, images((1, 6, 8, 1)), C4)
    with pytest.raises(ValueError, match="square"):
        groups.p4(6, 8)


def test_shift_group_larger_than_the_image():
    with pytest.raises(ValueError, match="acts on 16x16 images but x is 8x8"):
        equivax.check(jnp.tanh, images(), groups.translations(16, 16))
    with pytest.raises(ValueError, match="does not fit a 8x8 image"):
        groups.translations(8, 8, shifts=[(9, 0)])


def test_action_whose_output_shape_differs_from_f():
    with pytest.raises(ValueError, match=r"out_action\(g, f\(x\)\) returned shape"):
        equivax.check(zoo.global_mean, images(), C4, out_action=lambda g, y: y[:, :1])


def test_output_size_that_the_stride_cannot_divide():
    with pytest.raises(ValueError, match="expects 4x4 outputs"):
        equivax.check(zoo.max_pool(3), images((1, 8, 8, 1)), groups.translations(8, 8), out_action=actions.strided(2))


def test_non_traceable_f():
    def f(x):
        return jnp.asarray(np.tanh(np.asarray(x)))

    with pytest.raises(TypeError, match="not traceable"):
        equivax.check(f, images(), groups.translations(8, 8))


def test_integer_inputs_are_moved_exactly_and_their_outputs_measured():
    """Token ids through an embedding: a bag of tokens is invariant under permutations."""
    table = jnp.asarray(np.random.default_rng(0).normal(size=(50, 8)), jnp.float32)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 50, size=(3, 6)), jnp.int32)
    bag = lambda t: jnp.tanh(jnp.tanh(table[t]).sum(1))  # noqa: E731
    perms = equivax.sets.sampled_permutations(6, 5)
    result = equivax.check(bag, tokens, perms, equivax.sets.permutation(1), actions.trivial())
    assert result.ok and "undecided" not in result.verdicts, result.summary()
    first = lambda t: jnp.tanh(table[t[:, 0]])  # noqa: E731 - the first token is not a bag's
    assert not equivax.check(first, tokens, perms, equivax.sets.permutation(1), actions.trivial()).ok


def test_mismatched_dtypes():
    with pytest.raises(TypeError, match="pass numeric inputs"):
        equivax.check(lambda k: jnp.ones((1, 2)), jax.random.split(jax.random.key(0), 1), C4)
    with pytest.raises(TypeError, match="returned dtype float16"):
        equivax.check(jnp.tanh, images(), C4, out_action=lambda g, y: y.astype(jnp.float16))
    with pytest.raises(TypeError, match="f must return numbers"):  # a PRNG key array is not a number
        equivax.check(lambda x: jax.random.split(jax.random.key(0), x.shape[0]), images(), C4)


def test_integer_and_boolean_outputs_are_compared_exactly():
    """Class ids beside logits, per-pixel labels, masks and large counts: integers are measured
    without rounding (two different integers never compare equal, however large)."""
    table = jax.random.normal(jax.random.key(1), (4, 5))
    nodes = jax.random.normal(jax.random.key(0), (3, 6, 4))
    perms, on_nodes = equivax.sets.sampled_permutations(6, 8), equivax.sets.permutation(1)
    both = actions.tree((actions.trivial(), actions.trivial()))

    def classify(x):
        logits = jnp.tanh(x @ table).sum(1)
        return logits, jnp.argmax(logits, -1)

    assert equivax.check(classify, nodes, perms, on_nodes, both).ok
    positional = lambda x: jnp.argmax((jnp.tanh(x @ table) * jnp.arange(6.0)[:, None]).sum(1), -1)  # noqa: E731
    assert "broken" in equivax.check(positional, nodes, perms, on_nodes, actions.trivial()).verdicts
    big = jnp.int32(2**27)  # float32 cannot tell 2**27 from 2**27 + 1
    count = lambda x: big + jnp.argmax(x.sum(1), -1).astype(jnp.int32)  # noqa: E731
    assert equivax.check(count, nodes, perms, on_nodes, actions.trivial()).ok
    off_by_one = lambda x: big + (x[:, 0, 0] > x[:, 1, 0]).astype(jnp.int32)  # noqa: E731
    result = equivax.check(off_by_one, nodes, perms, on_nodes, actions.trivial())
    moved = [off_by_one(on_nodes(jnp.asarray(p), nodes)) for p in result.elements]
    flips = [bool(jnp.any(y != off_by_one(nodes))) for y in moved]
    assert [v == "broken" for v in result.verdicts] == flips and any(flips)
    masks = equivax.check(lambda x: x[..., 0] > 0, nodes, perms, on_nodes, on_nodes)
    assert masks.ok and set(masks.methods) == {"exact"}
    x = images()
    assert equivax.check(lambda x: jnp.argmax(jnp.tanh(x), -1).astype(jnp.uint8), x, C4).ok
    tilted = lambda x: jnp.argmax(jnp.tanh(x) + 0.3 * jnp.arange(8.0)[:, None] * jnp.arange(3.0), -1)  # noqa: E731
    assert not equivax.check(tilted, x, C4).ok


def test_nonfinite_input_and_missing_action():
    with pytest.raises(ValueError, match="NaN or inf"):
        equivax.check(jnp.tanh, images().at[0, 0, 0, 0].set(jnp.nan), C4)
    user = groups.finite([np.eye(2, dtype=int)] * 1)
    with pytest.raises(ValueError, match="no natural image action"):
        equivax.check(jnp.tanh, images(), user)


def test_filter_symmetrised_in_float32_is_approximate_not_broken():
    w = np.random.default_rng(0).normal(size=(3, 3, 3, 3)).astype(np.float32)
    symmetric = (w + np.rot90(w, 1) + np.rot90(w, 2) + np.rot90(w, 3)) / np.float32(4)  # 1-ulp asymmetric
    result = equivax.check(zoo.circular_conv(jnp.asarray(symmetric)), images(), groups.p4(8))
    assert result.ok, result
    assert "approximate" in result.verdicts and "broken" not in result.verdicts
    assert any("measured resolution" in reason for reason in result.reasons)


def test_float32_computation_under_float64_input_is_judged_by_a_float64_rerun():
    blur = zoo.circular_conv(jnp.ones((3, 3, 1, 1)) / 9)
    with jax.enable_x64(True):
        x = images((2, 8, 8, 1), dtype=jnp.float64)
        result = equivax.check(lambda x: blur(x.astype(jnp.float32)).astype(jnp.float64), x, groups.p4(8))
        leaky = equivax.check(
            lambda x: (blur(x.astype(jnp.float32)) + 1e-5 * x[:, :1, :1].astype(jnp.float32)).astype(jnp.float64),
            x,
            groups.translations(8, 8),
        )
    assert result.ok and result.rounding > 0, result
    assert not leaky.ok


def test_chaotic_program_measures_float64_sensitivity_directly():
    blur = zoo.circular_conv(jnp.ones((3, 3, 3, 3)) / 27)  # symmetric under all of D4

    def logistic(x):
        y = jax.nn.sigmoid(blur(x)) * 0.8 + 0.1
        for _ in range(40):
            y = 3.9 * y * (1 - y)
        return y

    result = equivax.check(logistic, images(), groups.p4(8))
    assert result.rounding > 1e-3  # float32 has lost the trajectory
    assert result.ok, result


def test_unhashable_callables_and_keys_in_module_state():
    @dataclasses.dataclass
    class Blur:
        weight: jax.Array

        def __call__(self, x):
            return self.weight * (x + jnp.roll(x, 1, 1) + jnp.roll(x, 1, 2))

    assert equivax.check(Blur(jnp.float32(1 / 3)), images(), groups.translations(8, 8)).ok

    class Leaky(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 3, (3, 3), padding="CIRCULAR", rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.conv(x)) + 1e-5 * x[:, :1, :1, :]

    model = Leaky(nnx.Rngs(0))
    model.eval()
    result = equivax.check(model, images(), groups.translations(8, 8))
    assert not result.ok and set(result.methods) == {"float64"}


def test_int64_elements_of_a_user_group():
    group = groups.finite(np.arange(4), compose=lambda a, b: (a + b) % 4, action=lambda k, x: jnp.roll(x, k, axis=1))
    x = images((2, 4, 3))
    mix = weights((3, 3))

    def f(x):
        return jnp.tanh(x @ mix + x.mean(1, keepdims=True)) + 1e-5 * x[:, :1]

    result = equivax.check(f, x, group)
    assert set(result.verdicts) == {"broken"} and set(result.methods) == {"float64"}


def test_orientations_a_regular_action_lacks_are_refused_on_inputs_and_broken_on_outputs():
    lifting = zoo.p4_lifting(weights((3, 3, 1, 2)))
    result = equivax.check(lifting, images((1, 6, 6, 1)), groups.p4m(6), out_action=actions.regular(groups.p4(6)))
    mirrors = [i for i, e in enumerate(result.elements) if e[3] == 1]
    assert mirrors and all(result.verdicts[i] == "broken" for i in mirrors)
    assert all("orientation axis lacks" in result.reasons[i] for i in mirrors)
    assert all(result.verdicts[i] == "equivariant" for i in range(len(result.elements)) if i not in mirrors)
    with pytest.raises(ValueError, match="orientation"):
        equivax.check(lambda x: x, images((1, 6, 6, 4, 1)), groups.p4m(6), actions.regular(groups.p4(6)))


def test_pytree_input_is_checked_leaf_by_leaf():
    x = {"a": images(), "b": images(seed=1)}
    assert equivax.check(lambda d: d["a"] * d["b"], x, C4).ok
    assert not equivax.check(lambda d: d["a"] * d["b"][:, ::-1], x, C4).ok
    with pytest.raises(ValueError, match=r"x\['b'\] has 1 examples but x\['a'\] has 2"):
        equivax.check(lambda d: d["a"], {"a": images(), "b": images()[:1]}, C4)


def test_histogram_counts_of_distances_on_bin_edges_are_not_called_broken():
    """Positions on a grid of 1/8 put pair distances exactly on bin edges (0.5, 0.75): any rotation
    rounds some of them to the other side, in float64 as in float32. The nudge of x shows those
    examples jump under 4 float64 ulps: they are set aside, never evidence of structure."""
    edges = 0.25

    def histogram(p):
        r = jnp.sqrt(jnp.sum((p[:, :, None] - p[:, None]) ** 2, -1))[:, *np.triu_indices(p.shape[1], 1)]
        bins = jnp.clip(jnp.floor(r / edges).astype(jnp.int32), 0, 23)
        return jax.vmap(lambda b: jnp.zeros(24, jnp.int32).at[b].add(1))(bins), r.mean(-1)

    grid = jnp.asarray(np.random.default_rng(0).integers(-12, 13, (3, 16, 3)) / 8.0, jnp.float32)
    on_points, both = equivax.fields.channels(equivax.fields.vector(3)), actions.tree((actions.trivial(),) * 2)
    rotations = equivax.matrix_groups.sampled_so3(8)
    result = equivax.check(histogram, grid, rotations, on_points, both)
    assert "broken" not in result.verdicts, result.summary()
    shifted = lambda p: histogram(p * jnp.where(p[..., :1] > 0, jnp.float32(1.3), jnp.float32(1.0)))  # noqa: E731
    assert "broken" in equivax.check(shifted, grid, rotations, on_points, both).verdicts
    # the same bins as float one-hots (a distogram): the jump is inside f, the output is floating
    onehot = lambda p: jax.nn.one_hot(histogram(p)[0].argmax(-1), 24)  # noqa: E731
    distogram = lambda p: jnp.floor(jnp.sqrt(jnp.sum((p[:, :, None] - p[:, None]) ** 2, -1)) / edges)  # noqa: E731
    for g in (onehot, distogram):
        assert "broken" not in equivax.check(g, grid, rotations, on_points, actions.trivial()).verdicts


def test_a_radius_cutoff_on_lattice_points_is_not_called_broken(monkeypatch):
    """A hard cutoff written with ``jnp.where`` (a radius graph) on points of a 1/8 lattice:
    squared distances sit exactly on the cutoff, and a rotation moves some across in float64 as in
    float32. The comparison is a threshold, so the nudge of x runs and sets those examples aside;
    without it (the comparison not read as one) the same check calls the model broken."""
    from equivax import _program

    def radius_graph(p):
        d2 = jnp.sum((p[:, :, None] - p[:, None]) ** 2, -1)
        return jnp.sum(jnp.where(d2 < 9 / 64, jnp.exp(-d2), 0.0), axis=-1)

    lattice = jnp.asarray(np.random.default_rng(0).integers(-4, 5, (3, 32, 3)) / 8.0, jnp.float32)
    args = (lattice, equivax.matrix_groups.sampled_so3(8), equivax.fields.channels(equivax.fields.vector(3)))
    result = equivax.check(radius_graph, *args, actions.trivial())
    assert "broken" not in result.verdicts, result.summary()
    monkeypatch.setattr(_program, "_COMPARISONS", frozenset())
    equivax.clear_cache()
    assert "broken" in equivax.check(radius_graph, *args, actions.trivial()).verdicts


def test_a_chaotic_output_beside_a_broken_one_says_to_split_them():
    """(a head with a planted 1e-3 bias, a chaotic map of an invariant): measured as one, the chaotic
    output amplifies the float32 rotations' rounding as far as the head's bug goes, and the result
    says so; check_outputs decides each array, and the head is broken."""
    wind = jnp.asarray([0.3, -0.2, 0.9])

    def f(p):
        head = p + 1e-3 * wind
        r = jax.nn.sigmoid(jnp.sum(p**2, axis=(1, 2)))
        chaos = lax.fori_loop(0, 200, lambda _, v: 3.99 * v * (1 - v), r)
        return head, 100.0 * chaos  # the larger part of every example

    vectors = equivax.fields.channels(equivax.fields.vector(3))
    p = jax.random.normal(jax.random.key(0), (2, 5, 3))
    outputs = actions.tree((vectors, actions.trivial()))
    together = equivax.check(f, p, equivax.matrix_groups.sampled_so3(4), vectors, outputs)
    assert "broken" not in together.verdicts  # the rotations' float32 rounding, amplified, is as large
    assert any("equivax.check_outputs decides each array" in note for note in together.notes), together.notes
    each = equivax.check_outputs(f, p, equivax.matrix_groups.sampled_so3(4), vectors, outputs)
    assert set(each["[0]"].verdicts) == {"broken"}


def test_complex_inputs_are_nudged_as_complex():
    """A complex program with a step (here a floor that changes nothing) runs the float64 nudge of x:
    complex inputs are nudged as complex numbers, not cast to real."""
    keys = jax.random.split(jax.random.key(0), 4)
    w = lax.complex(jax.random.normal(keys[0], (4, 4)), jax.random.normal(keys[1], (4, 4))) / 4
    z = lax.complex(jax.random.normal(keys[2], (2, 5, 4)), jax.random.normal(keys[3], (2, 5, 4)))

    def turn(g, v):
        t = (np.pi / 4) * g.astype(jnp.float32)
        return v * lax.complex(jnp.cos(t), jnp.sin(t)).astype(v.dtype)

    phases = groups.finite(list(range(8)), compose=lambda a, b: (a + b) % 8, name="C8 phases", action=turn)

    def layer(v):
        gain = jnp.tanh(jnp.abs(v @ w)) + 0 * jnp.floor(jnp.abs(v))
        return (v * gain.astype(v.dtype)) @ w

    result = equivax.check(layer, z, phases)
    assert result.ok and "broken" not in result.verdicts, result.summary()
