"""Reports on models of every framework: NNX module trees, Linen, Equinox, plain callables; each
with one planted break, localised to the right layer; custom per-layer actions; never silently one
layer."""

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import equivax
from equivax import actions, groups

SHIFTS = groups.translations(6, 6, shifts=[(0, 1), (1, 0)])


def images(seed=0, shape=(2, 6, 6, 1)):
    return jax.random.normal(jax.random.key(seed), shape)


def position_bias(x):
    """The planted break: a bias that grows down the rows (breaks vertical shifts, and turns)."""
    return x + 0.5 * jnp.arange(x.shape[1], dtype=x.dtype)[:, None, None]


def circular_conv(x, w):
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
    return jax.lax.conv_general_dilated(padded, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


# ------------------------------------------------------------------------------------------------
# Flax NNX: any module tree, residual blocks, nested sub-modules
# ------------------------------------------------------------------------------------------------


class Bias(nnx.Module):
    def __call__(self, x):
        return position_bias(x)


class Block(nnx.Module):
    def __init__(self, planted: bool, rngs: nnx.Rngs):
        self.conv = nnx.Conv(2, 2, (3, 3), padding="CIRCULAR", rngs=rngs)
        self.bias = Bias() if planted else None

    def __call__(self, x):
        y = nnx.relu(self.conv(x))
        if self.bias is not None:
            y = self.bias(y)
        return x + y  # residual


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, planted: int = 1):
        self.stem = nnx.Conv(1, 2, (3, 3), padding="CIRCULAR", rngs=rngs)
        self.blocks = nnx.List([Block(i == planted, rngs) for i in range(2)])
        self.head = nnx.Linear(2, 3, rngs=rngs)

    def __call__(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


def test_nnx_module_tree_is_followed_into_nested_blocks_and_the_planted_module_is_named():
    found = equivax.report(Net(nnx.Rngs(0)), images(), SHIFTS)
    names = [layer.name for layer in found.layers]
    assert names == ["stem", "blocks.0.conv", "blocks.0", "blocks.1.conv", "blocks.1.bias", "blocks.1", "head"]
    assert found.first_breaks == {"shift(0,1)": None, "shift(1,0)": "blocks.1.bias"}
    assert [layer.output for layer in found.layers] == ["image"] * 6 + ["invariant"]
    assert not found.notes
    # before the break every layer holds; the global mean averages the planted bias away again
    vertical = found.labels.index("shift(1,0)")
    assert found.layers[5].result.verdicts[vertical] == "broken" and found.output.ok
    assert all(layer.result.verdicts[vertical] == "equivariant" for layer in found.layers[:4])


def test_nnx_planted_break_in_the_first_block_is_found_there():
    found = equivax.report(Net(nnx.Rngs(1), planted=0), images(), SHIFTS)
    assert found.first_breaks["shift(1,0)"] == "blocks.0.bias"


def test_an_nnx_module_without_submodules_says_it_was_checked_end_to_end():
    class Leaf(nnx.Module):
        def __call__(self, x):
            return position_bias(x)

    found = equivax.report(Leaf(), images(), SHIFTS, out_action=actions.image())
    assert [layer.name for layer in found.layers] == ["Leaf"]
    assert len(found.notes) == 1 and "layers=" in found.notes[0] and "by='operation'" in found.notes[0]
    assert "note: checked end to end" in found.summary()


# ------------------------------------------------------------------------------------------------
# Flax Linen: sub-module calls intercepted from apply
# ------------------------------------------------------------------------------------------------


class LinenBias(linen.Module):
    def __call__(self, x):
        return position_bias(x)


class LinenBlock(linen.Module):
    planted: bool = False

    @linen.compact
    def __call__(self, x):
        y = linen.relu(linen.Conv(2, (3, 3), padding="CIRCULAR")(x))
        return x + (LinenBias()(y) if self.planted else y)


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.Conv(2, (3, 3), padding="CIRCULAR")(x)
        x = LinenBlock()(x)
        x = LinenBlock(planted=True)(x)
        return linen.Dense(3)(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def linen_model():
    model = LinenNet()
    return model, model.init(jax.random.key(0), images())


def test_linen_model_with_variables_is_split_and_the_planted_module_is_named(linen_model):
    model, variables = linen_model
    found = equivax.report(model, images(), SHIFTS, variables=variables)
    names = [layer.name for layer in found.layers]
    assert names == [
        "Conv_0",
        "LinenBlock_0.Conv_0",
        "LinenBlock_0",
        "LinenBlock_1.Conv_0",
        "LinenBlock_1.LinenBias_0",
        "LinenBlock_1",
        "Dense_0",
    ]
    assert found.first_breaks == {"shift(0,1)": None, "shift(1,0)": "LinenBlock_1.LinenBias_0"}
    assert found.model == "LinenNet"


def test_bound_linen_model_gives_the_same_report_and_an_unbound_one_says_what_to_pass(linen_model):
    model, variables = linen_model
    found = equivax.report(model.bind(variables), images(), SHIFTS)
    assert found.first_breaks["shift(1,0)"] == "LinenBlock_1.LinenBias_0"
    with pytest.raises(ValueError, match="not bound to variables: pass variables="):
        equivax.report(model, images(), SHIFTS)


# ------------------------------------------------------------------------------------------------
# Equinox: eqx.nn.Sequential, layer lists, per-example models
# ------------------------------------------------------------------------------------------------


class EqxConv(eqx.Module):
    weight: jax.Array

    def __init__(self, cin, cout, key):
        self.weight = 0.5 * jax.random.normal(key, (3, 3, cin, cout))

    def __call__(self, x, *, key=None):
        return circular_conv(x, self.weight)


class EqxBias(eqx.Module):
    def __call__(self, x, *, key=None):
        return position_bias(x)


def test_equinox_sequential_is_split_and_the_planted_layer_is_named():
    k1, k2 = jax.random.split(jax.random.key(0))
    model = eqx.nn.Sequential([EqxConv(1, 2, k1), eqx.nn.Lambda(jax.nn.relu), EqxBias(), EqxConv(2, 2, k2)])
    found = equivax.report(model, images(), SHIFTS)
    assert [layer.name for layer in found.layers] == ["layers.0", "layers.1", "layers.2", "layers.3"]
    assert found.first_breaks == {"shift(0,1)": None, "shift(1,0)": "layers.2"}
    assert found.model == "Sequential"


class EqxNet(eqx.Module):
    layers: list
    head: eqx.nn.Linear

    def __init__(self, key):
        keys = jax.random.split(key, 3)
        self.layers = [EqxConv(1, 2, keys[0]), EqxBias(), EqxConv(2, 2, keys[1])]
        self.head = eqx.nn.Linear(2, 3, key=keys[2])

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
        return jax.vmap(self.head)(jnp.mean(x, axis=(1, 2)))


def test_equinox_module_with_a_layer_list_and_head():
    found = equivax.report(EqxNet(jax.random.key(1)), images(), SHIFTS)
    # the head runs inside the model's own jax.vmap, so the model's output stands for it
    assert [layer.name for layer in found.layers] == ["layers.0", "layers.1", "layers.2", "output"]
    assert [layer.output for layer in found.layers] == ["image", "image", "image", "invariant"]
    assert found.first_breaks == {"shift(0,1)": None, "shift(1,0)": "layers.1"}


def test_equinox_per_example_model_is_vmapped():
    class OneConv(eqx.Module):
        weight: jax.Array

        def __call__(self, x):  # (H, W, C): one example
            return circular_conv(x[None], self.weight)[0]

    class OneBias(eqx.Module):
        def __call__(self, x):
            return x + 0.5 * jnp.arange(x.shape[0], dtype=x.dtype)[:, None, None]

    class OneImage(eqx.Module):
        conv: OneConv
        bias: OneBias

        def __call__(self, x):
            return self.bias(self.conv(x))

    model = OneImage(OneConv(0.5 * jax.random.normal(jax.random.key(2), (3, 3, 1, 2))), OneBias())
    found = equivax.report(model, images(), SHIFTS, vmap=True)
    assert [(layer.name, layer.shape) for layer in found.layers] == [("conv", (2, 6, 6, 2)), ("bias", (2, 6, 6, 2))]
    assert found.first_breaks == {"shift(0,1)": None, "shift(1,0)": "bias"}


def test_user_listed_sub_layers_of_an_equinox_model():
    model = EqxNet(jax.random.key(1))
    layers = [("conv", model.layers[0]), ("bias", model.layers[1]), ("relu", jax.nn.relu)]
    found = equivax.report(model, images(), SHIFTS, layers=layers)
    assert found.first_breaks == {"shift(0,1)": None, "shift(1,0)": "bias"}


# ------------------------------------------------------------------------------------------------
# Pytree layers and custom (field) actions
# ------------------------------------------------------------------------------------------------


def test_layers_may_take_and_return_pytrees():
    layers = [
        ("split", lambda x: {"features": jnp.tanh(x), "energy": jnp.sum(x**2, axis=(1, 2, 3))}),
        ("bias", lambda d: {**d, "features": position_bias(d["features"])}),
    ]
    found = equivax.report(None, images(), SHIFTS, layers=layers)
    assert [(layer.name, layer.output) for layer in found.layers] == [
        ("split['energy']", "invariant"),
        ("split['features']", "image"),
        ("bias['energy']", "invariant"),
        ("bias['features']", "image"),
    ]
    assert found.first_breaks == {"shift(0,1)": None, "shift(1,0)": "bias['features']"}


def rotate_vectors(g, x):
    """A field action: move the pixels, and turn each pixel's (dy, dx) vector with them."""
    moved = actions.image()(g, x)
    turned = groups.rotate_vector(g[2], g[3], jnp.moveaxis(moved, -1, 0))
    return jnp.moveaxis(turned, 0, -1).astype(x.dtype)


def scale_by_length(v):
    return v * jnp.sqrt(jnp.sum(v**2, axis=-1, keepdims=True))


def add_east_wind(v):
    """The planted break: a constant vector does not turn with the field."""
    return v + jnp.asarray([0.0, 0.3], v.dtype)


def test_custom_field_actions_are_given_per_layer_and_the_break_is_localised():
    fields = images(3, (1, 6, 6, 2))
    layers = [("scale", scale_by_length), ("wind", add_east_wind), ("tanh", jnp.tanh)]
    found = equivax.report(
        None,
        fields,
        groups.rotations(),
        rotate_vectors,
        layers=layers,
        layer_actions=lambda name, shape: rotate_vectors,
    )
    assert [layer.source for layer in found.layers] == ["given"] * 3
    assert found.first_breaks == {"r1": "wind", "r2": "wind", "r3": "wind"}
    assert found.layers[0].result.ok


def test_custom_actions_on_an_nnx_tree_by_name():
    class Scale(nnx.Module):
        def __call__(self, v):
            return scale_by_length(v)

    class Wind(nnx.Module):
        def __call__(self, v):
            return add_east_wind(v)

    class Flow(nnx.Module):
        def __init__(self):
            self.scale, self.wind = Scale(), Wind()

        def __call__(self, v):
            return jnp.tanh(self.wind(self.scale(v)))

    fields, turns, act = images(3, (1, 6, 6, 2)), groups.rotations(), rotate_vectors
    found = equivax.report(Flow(), fields, turns, act, act, layer_actions={"scale": act, "wind": act})
    assert [layer.name for layer in found.layers] == ["scale", "wind", "output"]
    assert found.first_breaks == dict.fromkeys(("r1", "r2", "r3"), "wind")
    with pytest.raises(ValueError, match=r"actions on 'wind' cannot be inferred.*follow .*layer_actions="):
        equivax.report(Flow(), fields, turns, act, act, layer_actions={"scale": act})
    with pytest.raises(ValueError, match="'sclae', which is not a layer of the model; its layers: 'scale', 'wind'"):
        equivax.report(Flow(), fields, turns, act, act, layer_actions={"sclae": act})


def test_custom_actions_with_layers_are_never_silently_collapsed():
    fields = images(3, (1, 6, 6, 2))
    with pytest.raises(ValueError, match=r"actions on 'scale', 'wind' cannot be inferred"):
        equivax.report(
            None, fields, groups.rotations(), rotate_vectors, rotate_vectors,
            layers=[("scale", scale_by_length), ("wind", add_east_wind), ("tanh", jnp.tanh)],
        )  # fmt: skip


def test_a_given_action_overrides_inference_for_one_layer():
    layers = [("tanh", jnp.tanh), ("bias", position_bias)]
    found = equivax.report(None, images(), SHIFTS, layers=layers, layer_actions={"bias": actions.trivial()})
    assert [(layer.output, layer.source) for layer in found.layers] == [("image", "inferred"), ("given", "given")]
    assert found.first_breaks == {"shift(0,1)": "bias", "shift(1,0)": "bias"}  # a map is no invariant
    assert found.layers[0].result.ok


class LinenScale(linen.Module):
    def __call__(self, v):
        return scale_by_length(v)


class LinenWind(linen.Module):
    def __call__(self, v):
        return add_east_wind(v)


class LinenFlow(linen.Module):
    @linen.compact
    def __call__(self, v):
        return jnp.tanh(LinenWind()(LinenScale()(v)))


def test_custom_field_actions_on_a_linen_model():
    fields, act = images(3, (1, 6, 6, 2)), rotate_vectors
    model = LinenFlow()
    variables = model.init(jax.random.key(0), fields)
    given = {"LinenScale_0": act, "LinenWind_0": act}
    found = equivax.report(model, fields, groups.rotations(), act, act, variables=variables, layer_actions=given)
    assert [layer.name for layer in found.layers] == ["LinenScale_0", "LinenWind_0", "output"]
    assert found.first_breaks == dict.fromkeys(("r1", "r2", "r3"), "LinenWind_0")


class EqxWind(eqx.Module):
    def __call__(self, v, *, key=None):
        return add_east_wind(v)


def test_custom_field_actions_on_an_equinox_model():
    fields, act = images(3, (1, 6, 6, 2)), rotate_vectors
    model = eqx.nn.Sequential([eqx.nn.Lambda(scale_by_length), EqxWind(), eqx.nn.Lambda(jnp.tanh)])
    found = equivax.report(model, fields, groups.rotations(), act, layer_actions=lambda name, shape: act)
    assert [layer.name for layer in found.layers] == ["layers.0", "layers.1", "layers.2"]
    assert found.first_breaks == dict.fromkeys(("r1", "r2", "r3"), "layers.1")


def test_a_model_whose_sub_modules_all_run_inside_its_own_vmap_says_so():
    class PerExample(eqx.Module):
        bias: EqxBias

        def __call__(self, x):
            return jax.vmap(self.bias)(x[:, None])[:, 0]

    found = equivax.report(PerExample(EqxBias()), images(), SHIFTS)
    assert [layer.name for layer in found.layers] == ["output"]
    assert "none of PerExample's sub-module calls could be recorded" in found.notes[0] and "layers=" in found.notes[0]
