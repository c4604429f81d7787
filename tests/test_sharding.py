"""Checks sharded over devices with jax.sharding: same verdicts, really partitioned, bounded memory.

The multi-device tests run in a subprocess whose CPU backend pretends to have 4 devices
(``--xla_force_host_platform_device_count=4``): the device count is fixed when JAX starts.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp

import equivax
from equivax import groups

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    import equivax
    from equivax import actions, groups, zoo

    assert len(jax.devices()) == 4, jax.devices()
    one = jax.devices()[:1]
    w = jax.random.normal(jax.random.key(1), (3, 3, 2, 4)) / 4
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))

    def same(a, b):
        assert a.verdicts == b.verdicts and a.methods == b.methods, (a, b)
        assert a.labels == b.labels and a.devices == 4 and b.devices == 1, (a.devices, b.devices)
        np.testing.assert_allclose(a.rel_error, b.rel_error, rtol=1e-5)  # float32 rounding of other batch sizes
        np.testing.assert_allclose(a.rel_error64, b.rel_error64, rtol=1e-9)

    # zero padding under p4 (255 elements, padded to 256): broken shifts, exact turns
    padded = lambda x: jnp.tanh(zoo.zero_padded_conv(w)(x))
    group = groups.p4(8)
    for chunk in (None, 5):
        sharded = equivax.check(padded, x, group, chunk_size=chunk)
        same(sharded, equivax.check(padded, x, group, chunk_size=chunk, devices=one))
    # exact everywhere: bit for bit, sharded or not
    circular = zoo.circular_conv(w)
    a = equivax.check(circular, x, groups.translations(8, 8))
    b = equivax.check(circular, x, groups.translations(8, 8), devices=one)
    assert a.ok and set(a.methods) == {"exact"} and np.array_equal(a.rel_error, b.rel_error) and a.devices == 4
    # fewer elements than devices: split over as many devices as there are elements
    three = equivax.check(padded, x, group, elements=group.elements[1:4])
    assert three.devices == 3 and len(three.labels) == 3
    # reports shard too, and name the same layers
    model = equivax.nn.CNN(widths=(2,), padding="circular", rngs=nnx.Rngs(0))
    shifts = groups.translations(8, 8, shifts=[(0, 1), (0, 2), (1, 1), (2, 2)])
    sharded = equivax.report(model, x[..., :1], shifts)
    single = equivax.report(model, x[..., :1], shifts, devices=one)
    assert sharded.first_breaks == single.first_breaks == {
        "shift(0,1)": "2 MaxPool", "shift(0,2)": None, "shift(1,1)": "2 MaxPool", "shift(2,2)": None}
    assert {layer.result.devices for layer in sharded.layers} == {4}
    # memory per device: a quarter of the elements each
    total = equivax.compiled_memory(padded, x, group, devices=one, chunk_size=256)
    split = equivax.compiled_memory(padded, x, group, chunk_size=64)
    assert split < 0.4 * total, (split, total)
    # Lie derivatives split the batch (6 examples, padded to 8): the same numbers
    lie = equivax.lie_derivative(model, x[..., :1][:2].repeat(3, axis=0), "rotation")
    lie_one = equivax.lie_derivative(model, x[..., :1][:2].repeat(3, axis=0), "rotation", devices=one)
    assert lie.shape == (6, 10)
    np.testing.assert_allclose(lie, lie_one, rtol=1e-5, atol=1e-6)
    layers = equivax.layer_lie_errors(model, x[..., :1], "translate_x")
    layers_one = equivax.layer_lie_errors(model, x[..., :1], "translate_x", devices=one)
    np.testing.assert_allclose(layers.total, layers_one.total, rtol=1e-5)
    # a user's group of 2x2 matrices (elements are not vectors)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    matrices = groups.finite([np.eye(2), swap, -np.eye(2), -swap], name="swaps")
    act = lambda g, v: v @ g.T  # noqa: E731
    vectors = jax.random.normal(jax.random.key(3), (3, 2))
    same_matrices = equivax.check(lambda v: 2 * v, vectors, matrices, act, act)
    assert same_matrices.ok and same_matrices.devices == 3
    # a batch of 6 on 4 devices: 3 parts, no padding, so a model that mixes examples sees its own batch
    ramp = jnp.arange(8.0)[:, None]  # not rotation invariant: a derivative well above rounding
    mixing = lambda z: jnp.sum(z * jnp.mean(z, axis=0) * ramp, axis=(1, 2, 3))  # noqa: E731
    six = x[..., :1].repeat(3, axis=0)
    np.testing.assert_allclose(
        equivax.lie_derivative(mixing, six, "rotation"), equivax.lie_derivative(mixing, six, "rotation", devices=one),
        rtol=1e-5,
    )
    print("sharded checks agree")
    """
)


def test_sharded_checks_agree_with_one_device_and_are_partitioned():
    flags = os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0")  # the suite's (conftest.py)
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=4"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "sharded checks agree" in done.stdout


def test_chunked_memory_grows_with_the_chunk_not_with_the_group():
    x = jnp.zeros((2, 16, 16, 4))
    f = jnp.tanh

    def memory(n, chunk):
        group = groups.translations(16, 16)
        return equivax.compiled_memory(f, x, group, elements=group.elements[1 : n + 1], chunk_size=chunk)

    small, large = memory(32, 8), memory(128, 8)
    assert large < 1.5 * small, (small, large)  # same chunk, 4x the elements
    assert memory(128, 128) > 3 * large  # all at once: 4x the elements, about 4x the memory


def test_the_result_counts_the_devices_that_computed_it():
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 1))
    assert equivax.check(jnp.tanh, x, groups.rotations()).devices == min(3, len(jax.devices()))
    assert equivax.check(jnp.tanh, x, groups.rotations(), devices=jax.devices()[:1]).devices == 1
