"""Group axioms, property-tested for every built-in group and for user groups."""

import ast
import inspect
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import equivax
import equivax._planar
from equivax import groups

GROUPS = {
    "translations": groups.translations(5, 7),
    "translations-stride": groups.translations(6, 6, stride=2),
    "C4": groups.rotations(),
    "flips": groups.flips(),
    "D4": groups.dihedral(),
    "p4": groups.p4(5),
    "p4m": groups.p4m(4),
    "p4m-stride": groups.p4m(6, stride=3),
}


def members(group):
    return {tuple(np.asarray(g).tolist()) for g in group.elements}


def pick(group):
    return st.integers(0, len(group) - 1).map(lambda i: group.elements[i])


@pytest.mark.parametrize("name", GROUPS)
@given(data=st.data())
def test_axioms(name, data):
    group = GROUPS[name]
    g, h, k = data.draw(pick(group)), data.draw(pick(group)), data.draw(pick(group))
    compose = group.compose
    assert tuple(np.asarray(compose(g, h)).tolist()) in members(group)  # closure
    np.testing.assert_array_equal(compose(compose(g, h), k), compose(g, compose(h, k)))  # associativity
    np.testing.assert_array_equal(compose(group.identity, g), g)
    np.testing.assert_array_equal(compose(g, group.identity), g)
    np.testing.assert_array_equal(compose(g, group.inverse(g)), group.identity)
    np.testing.assert_array_equal(compose(group.inverse(g), g), group.identity)


@pytest.mark.parametrize("name", GROUPS)
def test_operations_trace_with_a_traced_element(name):
    group = GROUPS[name]
    products = jax.jit(jax.vmap(lambda g: group.compose(g, group.inverse(g))))(group.elements)
    np.testing.assert_array_equal(products, np.broadcast_to(group.identity, products.shape))


def test_sizes_labels_and_identity_first():
    assert [len(GROUPS[n]) for n in GROUPS] == [35, 9, 4, 2, 8, 100, 128, 32]
    for group in GROUPS.values():
        assert group.labels[0] == "e"
        assert len(set(group.labels)) == len(group)
        np.testing.assert_array_equal(group.elements[0], group.identity)
    assert groups.dihedral().labels == ("e", "r1", "r2", "r3", "m", "r1·m", "r2·m", "r3·m")
    assert groups.translations(4, 4).label(np.array([3, 1, 0, 0])) == "shift(-1,1)"
    assert groups.p4(4).label(np.array([0, 1, 2, 0])) == "shift(0,1)·r2"


def test_dihedral_relations():
    d4 = groups.dihedral()
    r, m = jnp.array([0, 0, 1, 0]), jnp.array([0, 0, 0, 1])
    np.testing.assert_array_equal(d4.compose(m, r), d4.compose(d4.inverse(r), m))  # m r = r⁻¹ m
    np.testing.assert_array_equal(d4.compose(m, m), d4.identity)


def test_conjugating_a_shift_by_a_turn_turns_the_shift():
    p4 = groups.p4(8)
    r, t = jnp.array([0, 0, 1, 0]), jnp.array([0, 1, 0, 0])  # t = shift one column
    conj = p4.compose(p4.compose(r, t), p4.inverse(r))
    assert p4.label(conj) == "shift(-1,0)"  # a quarter turn moves (dy, dx) to (-dx, dy)


def test_translation_arguments_are_validated():
    with pytest.raises(ValueError, match="must divide"):
        groups.translations(7, stride=2)
    with pytest.raises(ValueError, match="either shifts or stride"):
        groups.translations(4, shifts=[(1, 1)], stride=2)
    with pytest.raises(ValueError, match="positive integer"):
        groups.translations(0)
    with pytest.raises(ValueError, match="pair"):
        groups.translations(4, shifts=[(1, 2, 3)])
    assert groups.translations(4, shifts=[(-1, 0)]).labels == ("e", "shift(-1,0)")


def test_index_rejects_non_members_and_wrong_shapes():
    g = groups.translations(4, 4)
    with pytest.raises(ValueError, match="not in translations"):
        g.index(np.array([0, 0, 1, 0]))
    with pytest.raises(ValueError, match="has shape"):
        g.index(np.array([0, 0]))


def test_group_is_a_pytree_of_its_elements():
    p4 = groups.p4(3)
    leaves, treedef = jax.tree.flatten(p4)
    assert len(leaves) == 1 and leaves[0].shape == (36, 4)
    again = jax.tree.unflatten(treedef, leaves)
    assert again.name == p4.name and again.labels == p4.labels


# ---------------------------------------------------------------------------------------------
# User groups
# ---------------------------------------------------------------------------------------------


def cyclic_permutations(n):
    return [np.roll(np.eye(n, dtype=np.int32), k, axis=0) for k in range(n)]


@given(n=st.integers(2, 6), data=st.data())
def test_finite_group_of_permutation_matrices(n, data):
    group = groups.finite(cyclic_permutations(n), name=f"Z{n}")
    assert len(group) == n
    np.testing.assert_array_equal(group.identity, np.eye(n))
    g = data.draw(pick(group))
    np.testing.assert_array_equal(group.compose(g, group.inverse(g)), group.identity)
    np.testing.assert_array_equal(group.inverse(g), np.asarray(g).T)


def test_finite_group_with_integer_codes_and_custom_compose():
    z5 = groups.finite([np.array([k]) for k in range(5)], compose=lambda g, h: (g + h) % 5, name="Z5")
    np.testing.assert_array_equal(z5.inverse(np.array([2])), [3])
    assert z5.label(np.array([4])) == "s1⁴"  # the shortest word in the generator picked first


def test_finite_group_validation():
    with pytest.raises(ValueError, match="not closed"):
        groups.finite(cyclic_permutations(4)[:3])
    with pytest.raises(ValueError, match="no identity"):
        groups.finite([np.array([0]), np.array([1])], compose=lambda g, h: g)
    with pytest.raises(ValueError, match="no inverse"):
        groups.finite([np.eye(2, dtype=int), np.zeros((2, 2), dtype=int)])
    with pytest.raises(ValueError, match="not square matrices"):
        groups.finite([np.array([0]), np.array([1])])
    with pytest.raises(ValueError, match="not distinct"):
        groups.finite([np.eye(2), np.eye(2)])
    with pytest.raises(ValueError, match="labels"):
        groups.finite([np.eye(2)], labels=["a", "b"])


def test_user_group_works_in_a_check():
    """Z4 acting on the channel axis by cyclic permutation: a channel-wise tanh commutes with it."""
    perms = cyclic_permutations(4)
    group = groups.finite(perms, name="Z4 on channels", action=lambda g, x: x @ g.T.astype(x.dtype))
    x = jax.random.normal(jax.random.key(0), (3, 4))
    assert equivax.check(jnp.tanh, x, group).ok
    mix = jnp.arange(16.0).reshape(4, 4) / 10  # a dense layer does not commute with permutations
    assert not equivax.check(lambda x: x @ mix, x, group).ok


# ---------------------------------------------------------------------------------------------
# finite(): generators, words, float elements, speed, non-members
# ---------------------------------------------------------------------------------------------


def rotation(angle, dtype=np.float32):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype)


QUARTER = np.array([[0, -1], [1, 0]])
MIRROR = np.array([[1, 0], [0, -1]])


def add_mod(n):
    return lambda g, h: (g + h) % n


def test_labels_are_shortest_words_in_the_generators():
    d4 = groups.finite(generators={"r": QUARTER, "m": MIRROR}, name="D4")
    assert d4.labels == ("e", "r", "m", "r²", "r·m", "m·r", "r³", "r²·m")
    np.testing.assert_array_equal(d4.identity, np.eye(2))
    for label, element in zip(d4.labels, d4.elements, strict=True):  # every word evaluates to its element
        product = np.eye(2, dtype=int)
        for part in label.split("·") if label != "e" else []:
            letter, power = part[0], {"": 1, "²": 2, "³": 3}[part[1:]]
            product = product @ np.linalg.matrix_power({"r": QUARTER, "m": MIRROR}[letter], power)
        np.testing.assert_array_equal(product, element)
    unnamed = groups.finite(generators=[QUARTER, MIRROR])
    assert unnamed.labels[:3] == ("e", "s1", "s2") and unnamed.label(QUARTER @ MIRROR) == "s1·s2"


def test_labels_from_elements_alone_use_generators_picked_in_list_order():
    cyclic = groups.finite([np.linalg.matrix_power(QUARTER, k) for k in range(4)], name="C4")
    assert cyclic.labels == ("e", "s1", "s1²", "s1³")
    assert not any(label.startswith("g") for label in cyclic.labels)
    both = groups.finite([np.linalg.matrix_power(QUARTER, k) for k in range(4)], generators={"r": QUARTER})
    assert both.labels == ("e", "r", "r²", "r³")  # the given order is kept, the words come from r
    with pytest.raises(ValueError, match="generate 2 of the 4 elements"):
        groups.finite([np.linalg.matrix_power(QUARTER, k) for k in range(4)], generators=[QUARTER @ QUARTER])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_rotation_matrices_are_accepted(dtype):
    """C8 as float rotation matrices: products differ from the listed elements by rounding only."""
    c8 = groups.finite([rotation(2 * np.pi * k / 8, dtype) for k in range(8)], name="C8")
    assert len(c8) == 8 and c8.elements.dtype == dtype
    assert 0 < c8.tolerance < 1e-3
    g = c8.elements[3]
    np.testing.assert_allclose(c8.inverse(g), c8.elements[5], atol=1e-6)
    assert c8.index(g.astype(np.float64) + c8.tolerance / 2) == 3  # matched within the dtype-scaled tolerance
    with pytest.raises(ValueError, match="is not in"):
        c8.index(g + 2 * c8.tolerance)
    # Traced (in float32 without x64), a product is still found and inverted.
    traced = jax.jit(lambda g, h: c8.inverse(c8.compose(g, h)))(c8.elements[1], c8.elements[2])
    np.testing.assert_allclose(traced, c8.elements[5], atol=1e-6)
    generated = groups.finite(generators={"r": rotation(2 * np.pi / 8, dtype)})
    assert generated.labels[:3] == ("e", "r", "r²") and len(generated) == 8


@given(data=st.data())
def test_axioms_of_a_float_group_built_from_generators(data):
    group = groups.finite(generators={"r": rotation(2 * np.pi / 6), "m": MIRROR.astype(np.float32)})
    assert len(group) == 12
    g, h, k = data.draw(pick(group)), data.draw(pick(group)), data.draw(pick(group))
    assert group.index(np.asarray(group.compose(g, h))) >= 0  # closure, within the tolerance
    np.testing.assert_allclose(group.compose(group.compose(g, h), k), group.compose(g, group.compose(h, k)), atol=1e-5)
    np.testing.assert_allclose(group.compose(g, group.inverse(g)), group.identity, atol=1e-5)


def test_a_cyclic_group_of_1024_elements_builds_in_seconds():
    """Measured on a 2-core machine shared by several jobs: about 0.5 s from elements, 2 s from a
    generator (n² = 1M products, looked up vectorised); the loop it replaced took 30-77 s."""
    start = time.perf_counter()
    from_elements = groups.finite([np.array([k]) for k in range(1024)], compose=add_mod(1024), name="Z1024")
    from_generator = groups.finite(generators={"t": np.array([1])}, compose=add_mod(1024), name="Z1024")
    seconds = time.perf_counter() - start
    assert len(from_elements) == len(from_generator) == 1024
    assert from_generator.labels[:3] == ("e", "t", "t²") and from_generator.label(np.array([1023])) == "t¹⁰²³"
    np.testing.assert_array_equal(from_generator.inverse(np.array([5])), [1019])
    assert seconds < 30, seconds


def test_finite_refuses_empty_and_malformed_input_in_one_line():
    cases = [
        (lambda: groups.finite([]), "empty list of elements"),
        (lambda: groups.finite(), "needs its elements or its generators"),
        (lambda: groups.finite(generators=[]), "empty list of generators"),
        (lambda: groups.finite([np.eye(2), np.eye(3)]), "one shape"),
        (lambda: groups.finite(generators={"r": rotation(1.0)}, max_size=50), "without closing"),
        (lambda: groups.finite([np.array([0])], compose=lambda g, h: jnp.concatenate([g, h])), "same shape"),
        (lambda: groups.finite([np.eye(2)], tolerance=-1.0), "tolerance"),
        (lambda: groups.finite([np.eye(2)], generators=[QUARTER]), "not an element"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            build()
        assert "\n" not in str(info.value)


def test_a_closed_but_non_associative_table_is_refused():
    loop = jnp.asarray([[0, 1, 2, 3, 4], [1, 0, 3, 4, 2], [2, 4, 0, 1, 3], [3, 2, 4, 0, 1], [4, 3, 1, 2, 0]])
    with pytest.raises(ValueError, match="not associative"):
        groups.finite([np.array([k]) for k in range(5)], compose=lambda g, h: loop[g[0], h[0]][None])


def test_non_members_are_refused_everywhere():
    z4 = groups.finite([np.linalg.matrix_power(QUARTER, k) for k in range(4)])
    for act in (z4.index, z4.label, z4.inverse):
        with pytest.raises(ValueError, match="is not in"):
            act(MIRROR)
    strided = groups.translations(4, stride=2)
    with pytest.raises(ValueError, match="is not in"):
        strided.inverse(np.array([1, 0, 0, 0]))
    # Traced, a non-member cannot raise: its inverse is a value no lookup accepts.
    inverses = jax.jit(jax.vmap(z4.inverse))(jnp.stack([jnp.asarray(QUARTER), jnp.asarray(MIRROR)]))
    np.testing.assert_array_equal(inverses[0], QUARTER.T)
    assert np.all(inverses[1] == np.iinfo(inverses.dtype).min)
    c4 = groups.finite([rotation(np.pi / 2 * k) for k in range(4)])
    traced = jax.jit(c4.inverse)(jnp.asarray(MIRROR, jnp.float32))
    assert np.all(np.isnan(traced))


def test_groups_does_not_import_actions():
    """The planar law lives in equivax._planar; groups -> actions would be a cycle (actions -> groups)."""
    for module in (groups, equivax._planar):
        tree = ast.parse(inspect.getsource(module))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {
            f"{node.module}.{alias.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert not any("actions" in name for name in imported), imported


@pytest.mark.slow
def test_the_finite_groups_page_runs_and_prints_what_it_shows(capsys):
    """docs/how-to/finite-groups.md: every python block, run in order as one script, prints the text
    block that follows it."""
    page = (pathlib.Path(__file__).parents[1] / "docs" / "how-to" / "finite-groups.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```\n\n```text\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 6
    namespace: dict = {}
    for code, shown in blocks:
        exec(compile(code, "finite-groups.md", "exec"), namespace)
        assert capsys.readouterr().out == shown
