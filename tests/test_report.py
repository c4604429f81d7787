"""Reports: the first layer where equivariance breaks, actions declared or inferred, plain data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import equivax
from equivax import actions, groups
from equivax._report import Report
from equivax.nn import CNN, GlobalPool, GroupConv, GroupPool, LiftingConv

SHIFTS = [(0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 2)]


@pytest.fixture(scope="module")
def cnn_report():
    """One circular CNN with a single stride-2 max pool, under odd and even shifts."""
    model = CNN(widths=(3,), padding="circular", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    return equivax.report(model, x, groups.translations(8, 8, shifts=SHIFTS))


def test_stride2_pool_is_the_first_break_for_odd_shifts_and_nothing_breaks_for_even(cnn_report):
    names = [layer.name for layer in cnn_report.layers]
    assert names == ["0 Conv", "1 relu", "2 MaxPool", "3 GlobalPool", "4 Linear"]
    breaks = cnn_report.first_breaks
    for label in ("shift(0,1)", "shift(1,0)", "shift(1,1)"):
        assert breaks[label] == "2 MaxPool"
    for label in ("shift(0,2)", "shift(2,0)", "shift(2,2)"):
        assert breaks[label] is None
    odd = cnn_report.labels.index("shift(0,1)")
    pool = cnn_report.layers[2].result
    assert pool.methods[odd] == "stride" and np.isnan(pool.rel_error[odd])
    # the logits really are off for odd shifts (aliasing), and exact-to-rounding for even ones
    out = cnn_report.output
    assert out.verdicts[odd] == "broken" and out.rel_error[odd] > 1e-3
    assert all(out.verdicts[cnn_report.labels.index(f"shift{s}".replace(" ", ""))] == "equivariant" for s in SHIFTS[3:])


def test_actions_come_from_contracts_and_strides_accumulate(cnn_report):
    kinds = [(layer.output, layer.stride, layer.source) for layer in cnn_report.layers]
    assert kinds == [
        ("image", 1, "contract"),
        ("image", 1, "inferred"),
        ("image", 2, "contract"),
        ("invariant", 2, "contract"),
        ("invariant", 2, "inferred"),
    ]


def scale_first_orientation(y):
    """A planted break: weights orientation 0 of a p4 feature map differently from the others."""
    return y.at[:, :, :, 0].multiply(2.0)


def test_a_wrong_layer_inside_a_p4_model_is_named():
    rngs = nnx.Rngs(1)
    model = nnx.Sequential(
        LiftingConv(1, 2, 3, group="p4", padding="circular", rngs=rngs),
        jnp.tanh,
        scale_first_orientation,
        GroupConv(2, 2, 3, group="p4", padding="circular", rngs=rngs),
        GroupPool("max", group="p4"),
        GlobalPool("mean"),
    )
    x = jax.random.normal(jax.random.key(2), (2, 7, 7, 1))
    found = equivax.report(model, x, groups.rotations())
    assert found.labels == ("r1", "r2", "r3")
    assert set(found.first_breaks.values()) == {"2 scale_first_orientation"}
    assert [layer.output for layer in found.layers[:3]] == ["regular(p4)"] * 3
    for layer in found.layers[:2]:
        assert layer.result.ok, layer.name
    assert not found.ok  # and the break propagates to the logits
    broken = found.layers[2].result
    assert np.all(broken.rel_error > 1e-2)


def test_plain_flax_layers_get_inferred_strided_actions():
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        nnx.Conv(1, 2, (3, 3), strides=2, padding="CIRCULAR", rngs=rngs),
        nnx.relu,
        lambda y: jnp.mean(y, axis=(1, 2)),
    )
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    found = equivax.report(model, x, groups.translations(8, 8, shifts=[(0, 1), (0, 2)]))
    assert [(layer.output, layer.stride, layer.source) for layer in found.layers] == [
        ("image", 2, "inferred"),
        ("image", 2, "inferred"),
        ("invariant", 2, "inferred"),
    ]
    assert found.first_breaks == {"shift(0,1)": "0 Conv", "shift(0,2)": None}
    assert found.layers[-1].name == "2 function"


def test_a_custom_layer_with_given_actions_is_one_row_per_element():
    def blur(x):
        return (x + jnp.roll(x, 1, axis=1)) / 2

    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 2))
    found = equivax.report(blur, x, groups.rotations(), out_action=actions.image())
    assert [layer.name for layer in found.layers] == ["blur"] and found.layers[0].source == "given"
    assert found.model == "blur"
    assert found.first_breaks == {"r1": "blur", "r2": "blur", "r3": "blur"}  # the blur is one-sided
    # a plain function is never silently one layer: the report says so and how to split it
    assert "blur is a plain function" in found.notes[0] and "layers=[...]" in found.notes[0]


def test_error_maps_locate_zero_padding_errors_at_the_borders():
    model = nnx.Sequential(equivax.nn.Conv(1, 2, 3, padding="zeros", rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    found = equivax.report(model, x, groups.translations(8, 8, shifts=[(0, 3)]))
    maps = found.layers[0].result.error_maps
    assert maps.shape == (1, 8, 8)
    inside = maps[0][1:-1, :]
    border_columns = maps[0][:, [0, 2, 3, 7]]  # the zero pad enters next to columns 0/7, moved by 3
    assert np.max(maps[0][:, 4:7]) == 0 and np.max(border_columns) > 0 and np.max(inside) > 0


def test_dict_round_trip_and_version_check(cnn_report):
    data = cnn_report.to_dict()
    assert data["version"] == 2 and data["first_breaks"]["shift(0,1)"] == "2 MaxPool" and data["by"] == "layer"
    again = Report.from_dict(data)
    assert again.to_dict() == data
    np.testing.assert_array_equal(again.layers[0].result.error_maps, cnn_report.layers[0].result.error_maps)
    with pytest.raises(ValueError, match="version-3 report; equivax reads versions 1, 2"):
        Report.from_dict({**data, "version": 3})


def test_version_1_reports_are_still_read(cnn_report):
    data = cnn_report.to_dict()
    old = {key: value for key, value in data.items() if key not in ("by", "notes")}
    old["version"] = 1
    old["layers"] = [{k: v for k, v in layer.items() if k not in ("where", "via")} for layer in data["layers"]]
    again = Report.from_dict(old)
    assert again.by == "layer" and again.notes == () and again.layers[0].where is None
    assert again.first_breaks == cnn_report.first_breaks


def test_bad_arguments_say_what_to_do():
    x = jnp.zeros((1, 8, 8, 1))
    with pytest.raises(TypeError, match="equivax Group"):
        equivax.report(lambda x: x, x, "p4")
    with pytest.raises(ValueError, match="pass out_action"):
        equivax.report(lambda x: x, x, groups.rotations(), in_action=lambda g, x: x)
    with pytest.raises(TypeError, match="variables= is for Flax Linen modules"):
        equivax.report(jnp.tanh, x, groups.rotations(), variables={})
    with pytest.raises(ValueError, match="layers is empty"):
        equivax.report(None, x, groups.rotations(), layers=[])
    with pytest.raises(ValueError, match=r"fails on an input of shape \(1, 8, 8, 1\)"):
        equivax.report(nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0))), x, groups.rotations())
    with pytest.raises(KeyError, match="was not checked"):
        Report("m", "g", (1,), ("r1",), ()).first_broken_layer("r2")


def test_regular_input_and_one_pixel_outputs_carry_the_right_actions():
    group = groups.p4(8)
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4, 2))
    keep = lambda y: jnp.max(y, axis=(1, 2), keepdims=True)  # noqa: E731 - (1, 1, 1, 4, 2): orientations left
    found = equivax.report(
        None, x, group, actions.regular(group), layers=[jnp.tanh, keep], elements=groups.basic_elements(group)
    )
    assert [layer.output for layer in found.layers] == ["regular(p4)", "regular(p4)"]
    assert found.ok and found.first_breaks == dict.fromkeys(found.labels)
    images = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    pooled = equivax.report(
        None,
        images,
        groups.translations(8, 8, shifts=[(0, 1), (1, 1)]),
        layers=[jnp.tanh, lambda y: jnp.mean(y, axis=(1, 2), keepdims=True)],
    )
    assert pooled.ok and pooled.first_breaks == {"shift(0,1)": None, "shift(1,1)": None}


def test_continuous_actions_act_on_each_output_by_default():
    from equivax import continuous

    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 1))
    results = equivax.check_outputs(lambda x: (jnp.tanh(x), 2 * x), x, continuous.rotations(n=4))
    assert list(results) == ["[0]", "[1]"] and all(r.ok for r in results.values())
