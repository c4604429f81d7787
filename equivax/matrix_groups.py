"""Groups of orthogonal matrices for point clouds: the cube groups, and sampled SO(2), O(2), SO(3), O(3).

Elements are ``d × d`` float64 matrices: exact for the cube groups (entries 0 and ±1), orthogonal
to float64 rounding for sampled rotations. A check runs f in its own precision with the elements
rounded to it, and re-runs in float64 with the float64 elements themselves, so a sampled rotation
is no less exact than a signed permutation. Elements compose by matrix product (``g·h = g @ h``)
and invert by transposition; a sampled family is not closed under composition, and need not be.

Each group acts on the last axis of point coordinates ``(N, n, d)`` by default
(``x -> x gᵀ``, ``equivax.fields.channels(equivax.fields.vector(d))``), so
``equivax.check(f, pos, matrix_groups.cube())`` needs no action for positions.

A finite group cannot see a break that its elements leave unchanged: a term with cubic symmetry
(``x⁴ + y⁴ + z⁴``) passes all 48 symmetries of the cube and still breaks O(3). Every group here
carries a ``note`` (``matrix_groups.note(group)``) saying what it leaves out; its name ends with
``⊂ O(3)`` (or the symmetry it samples) so a printed result shows it too.

Examples:
  >>> import equivax
  >>> from equivax import matrix_groups
  >>> g = matrix_groups.cube()
  >>> len(g), g.labels[:3]
  (48, ('e', '[x,z,-y]', '[x,-z,y]'))
  >>> "also check matrix_groups.sampled_o3" in matrix_groups.note(g)
  True
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from equivax import fields
from equivax.groups import Group

__all__ = ["cube", "cube_rotations", "note", "sampled_o2", "sampled_o3", "sampled_so2", "sampled_so3"]


@dataclasses.dataclass(frozen=True)
class _OrthogonalLaw:
    """Matrix product and transpose: the group law of orthogonal matrices (closed or not)."""

    def compose(self, g, h):
        return jnp.matmul(g, h)

    def inverse(self, g):
        return jnp.swapaxes(jnp.asarray(g), -1, -2)


def _group(name: str, table: np.ndarray, labels: list[str], text: str) -> Group:
    table = np.asarray(table, dtype=np.float64)
    law = _OrthogonalLaw()
    group = Group(
        name=name,
        elements=table,
        labels=tuple(labels),
        identity=np.eye(table.shape[1]),
        compose_fn=law.compose,
        inverse_fn=law.inverse,
        image_action=fields.channels(fields.vector(table.shape[1])),
    )
    return dataclasses.replace(group, note=text)


def note(group: Group) -> str | None:
    """What ``group`` leaves out of the symmetry it stands for (``None`` when it says nothing)."""
    return group.note


# ------------------------------------------------------------------------------------------------
# The cube groups: signed permutation matrices
# ------------------------------------------------------------------------------------------------


def _axis_label(matrix: np.ndarray) -> str:
    """``[-y,x,z]``: the coordinates of ``g @ (x, y, z)``; ``e`` for the identity."""
    if np.array_equal(matrix, np.eye(len(matrix))):
        return "e"
    names = "xyz"[: len(matrix)]
    parts = []
    for row in matrix:
        col = int(np.flatnonzero(row)[0])
        parts.append(("-" if row[col] < 0 else "") + names[col])
    return "[" + ",".join(parts) + "]"


def _signed_permutations(proper_only: bool) -> np.ndarray:
    rows = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for signs in np.ndindex(2, 2, 2):
            matrix = np.zeros((3, 3))
            for i, (j, s) in enumerate(zip(perm, signs, strict=True)):
                matrix[i, j] = -1.0 if s else 1.0
            if not proper_only or np.linalg.det(matrix) > 0:
                rows.append(matrix)
    # Identity first, then by the rotation angle (cos from the trace), improper after proper.
    return np.stack(sorted(rows, key=lambda m: (np.linalg.det(m) < 0, -np.trace(m * np.sign(np.linalg.det(m))))))


def cube() -> Group:
    """O_h: the 48 symmetries of the cube (rotations and reflections), exact signed permutation matrices.

    Returns:
      A ``Group`` of 3 × 3 float64 matrices, identity first, labelled by where they send the
      coordinates (``[-y,x,z]`` is a quarter turn about z), with a ``note`` that it is a finite
      subgroup of O(3).
    """
    table = _signed_permutations(proper_only=False)
    text = (
        "the 48 symmetries of the cube are a finite subgroup of O(3): a term with cubic symmetry passes them; "
        "also check matrix_groups.sampled_o3(n=16)"
    )
    return _group("cube(48) ⊂ O(3)", table, [_axis_label(m) for m in table], text)


def cube_rotations() -> Group:
    """O: the 24 rotations of the cube, exact signed permutation matrices of determinant 1."""
    table = _signed_permutations(proper_only=True)
    text = (
        "the 24 rotations of the cube are a finite subgroup of SO(3): a term with cubic symmetry passes them; "
        "also check matrix_groups.sampled_so3(n=16)"
    )
    return _group("cube rotations(24) ⊂ SO(3)", table, [_axis_label(m) for m in table], text)


# ------------------------------------------------------------------------------------------------
# Sampled rotations
# ------------------------------------------------------------------------------------------------


def _count(n: object) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive number of sampled elements, got {n!r}")
    return int(n)


def _plane_rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def _sampled_note(what: str, n: int, seed: int) -> str:
    return (
        f"{n} rotations sampled at random from {what} (seed {seed}): a sample, not the whole group; "
        "draw more (n) or other seeds to see more of it"
    )


def sampled_so2(n: int = 16, *, seed: int = 0) -> Group:
    """``n`` rotations of the plane at uniformly random angles, as exact float64 2 × 2 matrices.

    Acts on the last axis of 2-D coordinates in the ``(x, y)`` order of the matrix (counter-clockwise
    for positive angles in that basis). The identity is added first.
    """
    n = _count(n)
    angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
    table = [np.eye(2)] + [_plane_rotation(a) for a in angles]
    labels = ["e"] + [f"rot({math.degrees(a):.1f}°)" for a in angles]
    return _group(f"sampled SO(2)({n}, seed={seed})", np.stack(table), labels, _sampled_note("SO(2)", n, seed))


def sampled_o2(n: int = 16, *, seed: int = 0) -> Group:
    """``n`` random elements of O(2): rotations, and (every other one) reflections ``R·diag(1, -1)``."""
    n = _count(n)
    angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
    mirror = np.diag([1.0, -1.0])
    table, labels = [np.eye(2), mirror], ["e", "mirror(y)"]
    for i, a in enumerate(angles):
        table.append(_plane_rotation(a) @ mirror if i % 2 else _plane_rotation(a))
        labels.append(f"rot({math.degrees(a):.1f}°){'·mirror(y)' if i % 2 else ''}")
    return _group(f"sampled O(2)({n}, seed={seed})", np.stack(table), labels, _sampled_note("O(2)", n, seed))


def _haar_rotations(n: int, seed: int) -> np.ndarray:
    """``n`` rotations uniform on SO(3): normalised Gaussian quaternions, in float64."""
    q = np.random.default_rng(seed).normal(size=(n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _rotation_label(matrix: np.ndarray) -> str:
    angle = math.acos(max(-1.0, min(1.0, (np.trace(matrix) - 1) / 2)))
    axis = np.array([matrix[2, 1] - matrix[1, 2], matrix[0, 2] - matrix[2, 0], matrix[1, 0] - matrix[0, 1]])
    axis = axis / (np.linalg.norm(axis) or 1.0)
    return f"rot({math.degrees(angle):.0f}° about [{axis[0]:.2f},{axis[1]:.2f},{axis[2]:.2f}])"


def sampled_so3(n: int = 16, *, seed: int = 0) -> Group:
    """``n`` rotations drawn uniformly (Haar) from SO(3), as float64 3 × 3 matrices; identity first."""
    n = _count(n)
    rotations = _haar_rotations(n, seed)
    table = np.concatenate([np.eye(3)[None], rotations])
    labels = ["e"] + [_rotation_label(r) for r in rotations]
    return _group(f"sampled SO(3)({n}, seed={seed})", table, labels, _sampled_note("SO(3)", n, seed))


def sampled_o3(n: int = 16, *, seed: int = 0) -> Group:
    """``n`` random elements of O(3): Haar rotations, every other one composed with the inversion ``-I``.

    The identity and the inversion ``-I`` itself come first, so parity is always checked.
    """
    n = _count(n)
    rotations = _haar_rotations(n, seed)
    signs = np.where(np.arange(n) % 2 == 1, -1.0, 1.0)
    table = np.concatenate([np.eye(3)[None], -np.eye(3)[None], rotations * signs[:, None, None]])
    names = [("-" if s < 0 else "") + _rotation_label(r) for r, s in zip(rotations, signs, strict=True)]
    labels = ["e", "inversion", *names]
    return _group(f"sampled O(3)({n}, seed={seed})", table, labels, _sampled_note("O(3)", n, seed))
