"""Operation-level localisation: the planted line is named on plain functions; exact ones say "no break"."""

import pathlib
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import equivax
from equivax import groups
from equivax._localize import localize

SOURCE = pathlib.Path(__file__).read_text().splitlines()
SHIFTS = groups.translations(8, 8, shifts=[(0, 1), (1, 0), (0, 2)])
W = jax.random.normal(jax.random.key(1), (3, 3, 1, 2))
W_SYMMETRIC = sum(jnp.rot90(W + W[:, ::-1], k, axes=(0, 1)) for k in range(4))  # turns and mirrors keep it


def line_of(marker: str) -> str:
    """``"test_localize.py:N"`` of the line carrying ``# planted: marker``."""
    (number,) = [i + 1 for i, text in enumerate(SOURCE) if text.rstrip().endswith(f"# planted: {marker}")]
    return f"test_localize.py:{number}"


def images(shape=(2, 8, 8, 1)):
    return jax.random.normal(jax.random.key(0), shape)


def conv(x, w, padding):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def zero_padded(x):
    y = jnp.tanh(x)
    y = conv(y, W, "SAME")  # planted: same
    return jax.nn.relu(y)


def explicit_pad(x):
    y = jnp.tanh(x)
    y = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))  # planted: pad
    return conv(y, W, "VALID")  # planted: valid


def position_bias(x):
    y = 2.0 * x
    y = y + 0.1 * jnp.arange(8.0)[:, None, None]  # planted: bias
    return jnp.tanh(y)


def strided_pool(x):
    y = jnp.tanh(x)
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")  # planted: pool
    return jnp.mean(y, axis=(1, 2))


def one_sided_filter(x):
    y = jnp.tanh(x)
    y = y + 0.5 * jnp.roll(y, 1, axis=2)  # planted: roll
    return y * y


def circular_net(x):
    y = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
    y = jax.nn.relu(conv(y, W_SYMMETRIC, "VALID"))
    return jnp.mean(y, axis=(1, 2))


def test_zero_padding_inside_a_conv_is_named_at_its_line():
    found = localize(zero_padded, images(), SHIFTS)
    assert found.by == "operation"
    index = found.first_broken_index("shift(0,1)")
    layer = found.layers[index]
    assert "conv_general_dilated" in layer.name
    assert layer.where.startswith("test_localize.py:") and f"{line_of('same')} (zero_padded)" in layer.where
    assert all(found.first_broken_index(label) == index for label in found.labels)
    assert re.search(
        r"breaks shift\(0,1\); everything before it is (exact|equivariant to rounding)$", found.explain("shift(0,1)")
    )


def test_an_explicit_pad_is_named_as_what_feeds_the_first_broken_conv():
    found = localize(explicit_pad, images(), SHIFTS)
    layer = found.layers[found.first_broken_index("shift(1,0)")]
    assert "conv_general_dilated" in layer.name and line_of("valid") in layer.where
    assert layer.via.startswith("`pad` at " + line_of("pad"))
    assert f"(fed by the unchecked `pad` at {line_of('pad')}" in found.explain("shift(1,0)")


def test_a_position_dependent_bias_breaks_vertical_shifts_only():
    found = localize(position_bias, images(), SHIFTS)
    vertical = found.layers[found.first_broken_index("shift(1,0)")]
    assert vertical.name.endswith("add") and line_of("bias") in vertical.where
    assert found.first_breaks["shift(0,1)"] is None and found.first_breaks["shift(0,2)"] is None
    assert found.explain("shift(0,1)").startswith("shift(0,1): no break in")


def test_a_strided_pool_breaks_odd_shifts_at_its_line_and_keeps_even_ones():
    found = localize(strided_pool, images(), SHIFTS)
    pool = found.layers[found.first_broken_index("shift(0,1)")]
    assert "reduce_window" in pool.name and line_of("pool") in pool.where
    assert pool.output == "image" and pool.stride == 2
    assert found.first_breaks["shift(0,2)"] is None
    assert found.layers[-1].output == "invariant" and found.output.verdicts[2] == "equivariant"


def test_a_mirror_breaking_filter_is_named_under_flips_and_holds_under_shifts():
    mirrored = localize(one_sided_filter, images(), groups.flips())
    (label,) = mirrored.labels
    layer = mirrored.layers[mirrored.first_broken_index(label)]
    assert line_of("roll") in layer.where and "roll" in layer.name
    shifted = localize(one_sided_filter, images(), SHIFTS)
    assert shifted.ok and set(shifted.first_breaks.values()) == {None}


@pytest.mark.parametrize("group", [SHIFTS, groups.rotations()], ids=["shifts", "rotations"])
def test_exact_functions_say_no_break(group):
    found = localize(circular_net, images(), group)
    assert found.ok and set(found.first_breaks.values()) == {None}
    assert "no break: every operation holds" in found.summary()
    assert len(found.layers) >= 2  # the conv was checked, not only the output


def test_report_by_operation_and_an_nnx_module():
    model = nnx.Conv(1, 2, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    found = equivax.report(model, images(), SHIFTS, by="operation")
    assert found.model == "Conv" and found.by == "operation"
    layer = found.layers[found.first_broken_index("shift(0,1)")]
    assert "conv_general_dilated" in layer.name and "linear.py" in layer.where  # inside flax's Conv


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="by must be 'layer' or 'operation'"):
        equivax.report(jnp.tanh, images(), SHIFTS, by="op")
    with pytest.raises(ValueError, match="drop layers="):
        equivax.report(None, images(), SHIFTS, by="operation", layers=[jnp.tanh])
    with pytest.raises(ValueError, match=r"f fails on an input of shape \(2, 8, 8, 1\)"):
        localize(lambda x: x @ jnp.ones((3, 3)), images(), SHIFTS)
    with pytest.raises(ValueError, match="pass out_action"):
        localize(jnp.tanh, images(), SHIFTS, in_action=lambda g, x: x)


def scale_first_orientation(y):
    return y.at[:, :, :, 0].multiply(2.0)  # planted: orientation


def test_group_feature_maps_are_checked_as_such_and_a_planted_orientation_break_is_named():
    from equivax.nn import GlobalPool, GroupConv, GroupPool, LiftingConv

    rngs = nnx.Rngs(1)
    lift = LiftingConv(1, 2, 3, group="p4", padding="circular", rngs=rngs)
    conv = GroupConv(2, 2, 3, group="p4", padding="circular", rngs=rngs)
    pool, mean = GroupPool("max", group="p4"), GlobalPool("mean")
    x = images((2, 7, 7, 1))

    def exact(x):
        return mean(pool(conv(jnp.tanh(lift(x)))))

    def planted(x):
        return mean(pool(conv(scale_first_orientation(jnp.tanh(lift(x))))))

    turns = groups.rotations()
    held = localize(exact, x, turns)
    # a group convolution merges orientations into channels on the way: those (N, H, W, K·C) arrays
    # are not images, and are left to the (N, H, W, K, C) arrays next to them
    assert held.ok and set(held.first_breaks.values()) == {None}
    assert any(layer.output == "regular(p4)" for layer in held.layers)
    assert all(layer.shape != (2, 7, 7, 8) for layer in held.layers)  # 4 orientations x 2 channels, merged
    found = localize(planted, x, turns)
    for label in found.labels:
        layer = found.layers[found.first_broken_index(label)]
        assert line_of("orientation") in layer.where and layer.output == "regular(p4)"


@pytest.mark.slow
def test_the_command_line_localises_by_operation(tmp_path, monkeypatch, capsys):
    from equivax import cli

    (tmp_path / "biased_model.py").write_text(
        "import jax.numpy as jnp\n"
        "\n"
        "\n"
        "def build():\n"
        "    def model(x):\n"
        "        return jnp.tanh(x) + 0.1 * jnp.arange(x.shape[1])[:, None, None]\n"
        "\n"
        "    return model\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["report", "biased_model:build", "--group", "translations", "--input-shape", "8,8,1", "--by", "operation"]
    assert cli.main([*args, "--format", "markdown"]) == 1
    text = capsys.readouterr().out
    assert "first broken operation" in text and "biased_model.py:6 (model)" in text


# Channels-first code: an Equinox-style model vmapped over an NHWC batch works on (C, H, W) images.


def conv_chw(h, w, padding):
    return jax.lax.conv_general_dilated(h[None], w, (1, 1), padding, dimension_numbers=("NCHW", "OIHW", "NCHW"))[0]


W1, W2 = jax.random.normal(jax.random.key(2), (4, 1, 3, 3)), jax.random.normal(jax.random.key(3), (4, 4, 3, 3))


def per_image_net(x):
    def one(img):
        h = img.transpose(2, 0, 1)
        h = jnp.pad(h, ((0, 0), (1, 1), (1, 1)), mode="wrap")
        h = jax.nn.relu(conv_chw(h, W1, "VALID"))  # planted: chw circular
        h = conv_chw(h, W2, "SAME")  # planted: chw zero
        return h.transpose(1, 2, 0)

    return jax.vmap(one)(x)


def test_channels_first_intermediates_inside_vmap_are_checked_and_the_zero_padded_conv_is_named():
    found = localize(per_image_net, images(), SHIFTS)
    checked = {layer.name.split(" ", 1)[1]: layer for layer in found.layers}
    assert any(layer.shape == (2, 4, 8, 8) and layer.output == "image" for layer in found.layers)
    layer = found.layers[found.first_broken_index("shift(0,1)")]
    assert line_of("chw zero") in layer.where, found.explain("shift(0,1)")
    assert all(found.first_broken_index(label) == found.layers.index(layer) for label in found.labels)
    # the circular conv before it holds, and the rows of the wrap-padded image are not taken for pixels
    assert any(line_of("chw circular") in (lay.where or "") and lay.result.ok for lay in found.layers)
    assert "slice" not in checked and "concatenate" not in checked


def test_a_one_pixel_slice_of_an_image_is_not_checked_as_a_pooled_pixel():
    def first_row_then_mean(x):
        row = x[:, :1, :1, :]  # planted: corner
        return jnp.tanh(row) + jnp.mean(x, axis=(1, 2), keepdims=True)

    found = localize(first_row_then_mean, images((2, 8, 8, 3)), SHIFTS)
    names = [layer.name for layer in found.layers]
    assert not any(layer.where and line_of("corner") in layer.where for layer in found.layers), names
    assert found.layers[-1].result.verdicts == ("broken",) * 3  # the corner pixel moves under every shift
    pooled = localize(lambda x: jnp.tanh(jnp.mean(x, axis=(1, 2), keepdims=True)), images(), SHIFTS)
    assert len(pooled.layers) >= 2 and all(layer.result.ok for layer in pooled.layers)
