"""Group representations ρ(g): the matrices a field action applies to the channels of each pixel
or point (trivial, sign, vector, pseudovector, tensor products, direct sums, regular, a user table
or function, Wigner-D from a rotation matrix, irreps strings) and the homomorphism check.

Public through ``equivax.fields``, which pairs them with the spatial part of an action. One
concept, a little past the project's 450-line guide: every built-in representation is here.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from equivax.groups import Group
from equivax.precision import widest_float

Element = Any

# What kind of group a representation sees: planar (dy, dx, k, m), d × d matrices, or anything.
# ------------------------------------------------------------------------------------------------


def is_planar(group: Group) -> bool:
    return group.point_group is not None


def _matrix_size(group: Group) -> int | None:
    """``d`` when the group's elements are ``d × d`` matrices, else ``None``."""
    shape = np.asarray(group.elements).shape
    return int(shape[1]) if len(shape) == 3 and shape[1] == shape[2] else None


def group_kind(group: Group) -> str:
    if is_planar(group):
        return f"the planar group {group.name}"
    d = _matrix_size(group)
    if d is not None:
        return f"{group.name}, a group of {d}x{d} matrices"
    return f"{group.name}, whose elements have shape {np.asarray(group.elements).shape[1:]}"


def _linear_part(g: Element) -> jax.Array:
    """The 2 × 2 matrix ``A^k M^m`` of a planar element, in the ``(row, col)`` basis (integers)."""
    g = jnp.asarray(g).astype(jnp.int32)
    k, flip = g[2] % 4, 1 - 2 * (g[3] % 2)
    cos = jnp.asarray([1, 0, -1, 0], jnp.int32)[k]
    sin = jnp.asarray([0, 1, 0, -1], jnp.int32)[k]
    return jnp.stack([jnp.stack([cos, -sin * flip]), jnp.stack([sin, cos * flip])])


def _linear(g: Element) -> jax.Array:
    """The linear part of ``g``: ``A^k M^m`` for a planar element, the matrix itself otherwise."""
    g = jnp.asarray(g)
    if g.ndim == 1:
        return _linear_part(g)
    return g


def _joint(*dtypes: Any) -> Any:
    """One dtype for values of these dtypes: integers stay integers (integer-coded elements give
    integer matrices); with a float among them, the widest float (no promotion lattice, so strict
    promotion mode is no obstacle)."""
    if not any(jnp.issubdtype(d, jnp.inexact) for d in dtypes):
        return jnp.result_type(*dtypes)
    return widest_float(*dtypes)


def _det(g: Element) -> jax.Array:
    """``±1``: the determinant of the linear part (orthogonal elements)."""
    g = jnp.asarray(g)
    if g.ndim == 1:
        return 1 - 2 * (g.astype(jnp.int32)[3] % 2)
    return jnp.sign(jnp.linalg.det(g.astype(widest_float(g.dtype))))


# ------------------------------------------------------------------------------------------------
# Representations
# ------------------------------------------------------------------------------------------------


class Representation:
    """A representation ``ρ``: ``rep(g)`` is the ``(dim, dim)`` matrix of element ``g``, traceable.

    Subclasses set ``dim`` and ``name`` and implement ``__call__`` and ``validate``.
    """

    dim: int
    name: str

    def __call__(self, g: Element) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def validate(self, group: Group) -> None:
        """Raise a one-line ``ValueError`` when this representation does not fit ``group``."""


@dataclasses.dataclass(frozen=True)
class _Trivial(Representation):
    dim: int = 1
    name: str = "trivial"

    def __call__(self, g: Element) -> jax.Array:
        return jnp.ones((1, 1), jnp.int32)


@dataclasses.dataclass(frozen=True)
class _Linear(Representation):
    """``det(g)^power · L(g)`` for the linear part ``L`` (``dim = size``), or ``det(g)^power`` (``size = 0``)."""

    size: int
    power: int
    name: str

    @property
    def dim(self) -> int:
        return max(self.size, 1)

    def __call__(self, g: Element) -> jax.Array:
        det = _det(g) ** self.power
        if self.size == 0:
            return jnp.reshape(det, (1, 1))
        linear = _linear(g)
        return det.astype(_joint(det.dtype, linear.dtype)) * linear

    def validate(self, group: Group) -> None:
        if is_planar(group):
            if self.size not in (0, 2):
                raise ValueError(
                    f"the {self.name} representation of dimension {self.size} does not fit {group_kind(group)}, "
                    f"whose vectors have 2 components: use {self.name.split('(')[0]}(2)"
                )
            return
        d = _matrix_size(group)
        if d is None:
            raise ValueError(
                f"the {self.name} representation needs planar elements (dy, dx, k, m) or d x d matrices, but "
                f"{group_kind(group)}: pass fields.table(group, matrices) or fields.function(fn, dim)"
            )
        if self.size not in (0, d):
            raise ValueError(
                f"the {self.name} representation has {self.size} components but {group_kind(group)}: "
                f"use {self.name.split('(')[0]}({d})"
            )


@dataclasses.dataclass(frozen=True)
class _Regular(Representation):
    """The regular representation of a planar point group: ``ρ(g) e_h = e_{g·h}``."""

    points: tuple[tuple[int, int], ...]
    name: str = "regular"

    @property
    def dim(self) -> int:
        return len(self.points)

    def __call__(self, g: Element) -> jax.Array:
        g = jnp.asarray(g).astype(jnp.int32)
        pts = jnp.asarray(self.points, jnp.int32)
        k = (g[2] + (1 - 2 * (g[3] % 2)) * pts[:, 0]) % 4
        m = (g[3] + pts[:, 1]) % 2
        lookup = np.full((4, 2), -1, np.int32)
        for i, (pk, pm) in enumerate(self.points):
            lookup[pk, pm] = i
        target = jnp.asarray(lookup)[k, m]
        return jax.nn.one_hot(target, self.dim, dtype=jnp.int32).T

    def validate(self, group: Group) -> None:
        if not is_planar(group):
            raise ValueError(
                f"the {self.name} representation permutes planar orientations, but {group_kind(group)}: "
                "use a planar group (equivax.groups) or fields.table(group, matrices)"
            )
        outside = sorted(set(group.point_group) - set(self.points))
        if outside:
            k, m = outside[0]
            raise ValueError(
                f"the {self.name} representation has {self.dim} orientations but {group.name} contains "
                f"r{k}{'·m' if m else ''}, which has none there: build it with fields.regular({group.name})"
            )


@dataclasses.dataclass(frozen=True)
class _Tensor(Representation):
    parts: tuple[Representation, ...]

    @property
    def dim(self) -> int:
        return int(np.prod([p.dim for p in self.parts]))

    @property
    def name(self) -> str:
        return "⊗".join(p.name for p in self.parts)

    def __call__(self, g: Element) -> jax.Array:
        return functools.reduce(jnp.kron, [p(g) for p in self.parts])

    def validate(self, group: Group) -> None:
        for part in self.parts:
            part.validate(group)


@dataclasses.dataclass(frozen=True)
class _DirectSum(Representation):
    parts: tuple[Representation, ...]

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    @property
    def name(self) -> str:
        return "⊕".join(p.name for p in self.parts)

    def __call__(self, g: Element) -> jax.Array:
        blocks = [p(g) for p in self.parts]
        dtype = _joint(*[b.dtype for b in blocks])
        return jax.scipy.linalg.block_diag(*[b.astype(dtype) for b in blocks])

    def validate(self, group: Group) -> None:
        for part in self.parts:
            part.validate(group)


@dataclasses.dataclass(frozen=True, eq=False)
class _Table(Representation):
    """One matrix per element of one group; ``g`` is looked up by its nearest row (traceable)."""

    elements: np.ndarray
    matrices: np.ndarray
    group_name: str
    name: str = "table"

    @property
    def dim(self) -> int:
        return int(self.matrices.shape[1])

    def __call__(self, g: Element) -> jax.Array:
        table = jnp.asarray(self.elements)
        flat = table.reshape(len(table), -1)
        g = jnp.reshape(jnp.asarray(g), (1, -1)).astype(flat.dtype)
        index = jnp.argmin(jnp.sum((flat - g) ** 2, axis=1))
        return jnp.asarray(self.matrices)[index]

    def validate(self, group: Group) -> None:
        mine, theirs = self.elements, np.asarray(group.elements)
        if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
            raise ValueError(
                f"the table representation was built for {self.group_name} ({len(mine)} elements), not for "
                f"{group.name} ({len(theirs)} elements): build it with fields.table({group.name}, matrices)"
            )


@dataclasses.dataclass(frozen=True)
class _Function(Representation):
    fn: Callable[[Element], jax.Array]
    dim: int
    name: str

    def __call__(self, g: Element) -> jax.Array:
        return jnp.asarray(self.fn(g))

    def validate(self, group: Group) -> None:
        try:
            out = jax.eval_shape(self.fn, jax.ShapeDtypeStruct(np.asarray(group.identity).shape, group.identity.dtype))
        except Exception as err:  # noqa: BLE001 - any failure of the user's function
            raise ValueError(
                f"the representation {self.name} fails on elements of {group.name} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); make fn(g) traceable for them"
            ) from None
        if tuple(getattr(out, "shape", ())) != (self.dim, self.dim):
            raise ValueError(
                f"the representation {self.name} returns shape {tuple(getattr(out, 'shape', ()))} on elements "
                f"of {group.name}, but dim={self.dim}: return a ({self.dim}, {self.dim}) matrix"
            )


@functools.cache
def _harmonic_basis(degree: int) -> np.ndarray:
    """An orthonormal basis ``(3^l, 2l+1)`` of symmetric traceless rank-``l`` tensors in 3-D.

    ``R^{⊗l}`` preserves that subspace, and restricted to it is the irreducible representation of
    degree ``l`` (a real Wigner D-matrix, in a basis of its own).
    """
    size = 3**degree
    shape = (3,) * degree
    symmetrise = np.zeros((size, size))
    perms = list(itertools.permutations(range(degree)))
    for perm in perms:
        symmetrise += np.transpose(np.eye(size).reshape((*shape, size)), (*perm, degree)).reshape(size, size)
    symmetrise /= len(perms)
    values, vectors = np.linalg.eigh(symmetrise)
    symmetric = vectors[:, values > 0.5]  # the projector's range
    trace = np.einsum("ii...->...", np.eye(size).reshape((3, 3, *shape[2:], size))).reshape(-1, size)
    _, singular, right = np.linalg.svd(trace @ symmetric)
    rank = int(np.sum(singular > 1e-9))
    basis = symmetric @ right[rank:].T
    if basis.shape[1] != 2 * degree + 1:  # pragma: no cover - a property of the construction
        raise AssertionError(f"degree {degree}: found {basis.shape[1]} harmonic components")
    return basis


@dataclasses.dataclass(frozen=True)
class _WignerD(Representation):
    degree: int
    parity: int

    @property
    def dim(self) -> int:
        return 2 * self.degree + 1

    @property
    def name(self) -> str:
        return f"{self.degree}{'e' if self.parity == 1 else 'o'}"

    def __call__(self, g: Element) -> jax.Array:
        g = jnp.asarray(g)
        if self.degree <= 1:
            base = jnp.ones((1, 1), g.dtype) if self.degree == 0 else g
        else:
            power = functools.reduce(jnp.kron, [g] * self.degree)
            basis = jnp.asarray(_harmonic_basis(self.degree), widest_float(g.dtype))
            base = basis.T @ power @ basis
        # D(-I) = (-1)^l on R^{⊗l}; a factor det(g) makes the inversion act by the parity instead.
        if self.parity * (-1) ** self.degree == -1:
            return _det(g) * base
        return base

    def validate(self, group: Group) -> None:
        if _matrix_size(group) != 3:
            raise ValueError(
                f"wigner_d({self.degree}) needs 3x3 rotation matrices as elements, but {group_kind(group)}: "
                "use a group from equivax.matrix_groups (cube, sampled_so3, sampled_o3)"
            )


def trivial() -> Representation:
    """The trivial representation ``ρ(g) = 1``: scalars (any group)."""
    return _Trivial()


def sign() -> Representation:
    """``ρ(g) = det(g) = ±1``: pseudoscalars, flipped by mirrors (``(-1)^m`` for planar elements)."""
    return _Linear(0, 1, "sign")


def vector(dim: int = 2) -> Representation:
    """The standard representation: ``A^k M^m`` (``(row, col)`` basis) for planar groups, ``g`` for matrices.

    Args:
      dim: number of components, 2 for planar groups and O(2), 3 for point clouds in 3-D.

    Examples:
      >>> import jax.numpy as jnp
      >>> vector()(jnp.array([0, 0, 1, 0])).tolist()   # a quarter turn: (dy, dx) -> (-dx, dy)
      [[0, -1], [1, 0]]
    """
    return _Linear(_check_dim(dim), 0, f"vector({dim})")


def pseudovector(dim: int = 2) -> Representation:
    """``ρ(g) = det(g) · L(g)``: vectors that mirrors flip once more (axial vectors, e3nn's ``1e``)."""
    return _Linear(_check_dim(dim), 1, f"pseudovector({dim})")


def tensor(*reps: Representation) -> Representation:
    """The tensor product ``ρ_1 ⊗ ρ_2 ⊗ …``: ``kron`` of the matrices, components in row-major order.

    ``tensor(vector(), vector())`` acts on rank-2 tensors ``T`` flattened as ``T.reshape(..., 4)``.
    """
    return _Tensor(_check_reps(reps, "tensor"))


def direct_sum(*reps: Representation) -> Representation:
    """The direct sum ``ρ_1 ⊕ ρ_2 ⊕ …``: block-diagonal, one block of channels each, in order."""
    parts = _check_reps(reps, "direct_sum")
    return parts[0] if len(parts) == 1 else _DirectSum(parts)


def regular(group: Group) -> Representation:
    """The regular representation of a planar group's point group (4 channels for C4/p4, 8 for D4/p4m).

    Channel ``i`` belongs to the point element ``group.point_group[i]`` (index ``k + 4m``), and
    ``g`` moves channel ``h`` to ``g·h``, as ``equivax.actions.regular`` moves its orientation axis.
    """
    if not isinstance(group, Group) or not is_planar(group):
        raise ValueError(
            f"fields.regular needs a planar group with a point group (e.g. equivax.groups.dihedral()), got {group!r}"
        )
    return _Regular(tuple(group.point_group), f"regular({group.name.split('(')[0]})")


def table(group: Group, matrices: Any, *, name: str = "table") -> Representation:
    """A user representation given as one matrix per element of ``group`` (escnn-style field types).

    Args:
      group: the group; ``matrices[i]`` is ``ρ`` of ``group.elements[i]``.
      matrices: ``(|G|, d, d)`` array.
      name: a name for messages.

    Examples:
      >>> import numpy as np, equivax
      >>> c4 = equivax.groups.rotations()
      >>> rho = table(c4, [np.eye(1) * (-1) ** k for k in range(4)], name="rotation sign")
      >>> rho(c4.elements[1]).tolist()
      [[-1.0]]
    """
    stack = np.asarray(matrices)
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2] or stack.shape[0] != len(group):
        raise ValueError(
            f"matrices must be ({len(group)}, d, d), one square matrix per element of {group.name}, "
            f"got shape {stack.shape}"
        )
    return _Table(np.asarray(group.elements), stack, group.name, name)


def function(fn: Callable[[Element], Any], dim: int, *, name: str = "custom") -> Representation:
    """A user representation ``fn(g) -> (dim, dim)``, traceable in ``g``, for any group.

    Examples:
      >>> import jax.numpy as jnp
      >>> angle = function(lambda g: jnp.eye(1) * (-1) ** g[2], 1, name="rotation sign")
      >>> angle(jnp.array([0, 0, 3, 0])).tolist()
      [[-1.0]]
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable g -> (dim, dim) matrix, got {fn!r}")
    return _Function(fn, _check_dim(dim), name)


def wigner_d(degree: int, parity: int | None = None) -> Representation:
    """The irreducible representation of degree ``l`` of O(3) on ``2l+1`` components, from 3 × 3 matrices.

    Computed from the rotation matrix itself (e3nn's ``D_from_matrix`` pattern): ``R^{⊗l}``
    restricted to symmetric traceless tensors. Degree 0 is a scalar and degree 1 is ``R`` in the
    ``(x, y, z)`` coordinate basis; higher degrees use an orthonormal basis of their own (equal to
    e3nn's up to an orthogonal change of basis).

    Args:
      degree: ``l >= 0`` (up to 4).
      parity: ``+1`` (``e``) or ``-1`` (``o``): the sign the inversion ``-I`` acts by; default
        ``(-1)^l``, that of spherical harmonics (``0e``, ``1o``, ``2e``).

    Examples:
      >>> import numpy as np
      >>> turn = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
      >>> wigner_d(2)(turn).shape
      (5, 5)
    """
    if not isinstance(degree, (int, np.integer)) or isinstance(degree, bool) or not 0 <= degree <= 4:
        raise ValueError(f"degree must be an integer from 0 to 4, got {degree!r}")
    parity = (-1) ** int(degree) if parity is None else parity
    if parity not in (1, -1):
        raise ValueError(f"parity must be +1 (even) or -1 (odd), got {parity!r}")
    return _WignerD(int(degree), int(parity))


_IRREP = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+)\s*([eo])\s*$")


def irreps(spec: str) -> Representation:
    """A direct sum of O(3) irreps written as e3nn writes them, e.g. ``"8x0e + 4x1o + 1x2e"``.

    ``0e`` is a scalar, ``0o`` a pseudoscalar, ``1o`` a vector ``(x, y, z)`` (e3nn orders it
    ``(y, z, x)``), ``1e`` a pseudovector; the channels of each term follow each other, the
    ``2l+1`` components of one copy contiguous.

    Examples:
      >>> irreps("2x0e + 1x1o").dim
      5
    """
    parts: list[Representation] = []
    for term in str(spec).split("+"):
        match = _IRREP.match(term)
        if match is None:
            raise ValueError(f"cannot read the irrep {term.strip()!r} of {spec!r}: write terms like '4x1o' or '0e'")
        count, degree, parity = int(match.group(1) or 1), int(match.group(2)), 1 if match.group(3) == "e" else -1
        parts += [wigner_d(degree, parity)] * count
    if not parts:
        raise ValueError(f"{spec!r} has no irreps; write e.g. '4x0e + 2x1o'")
    return direct_sum(*parts)


def _check_dim(dim: Any) -> int:
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive integer number of components, got {dim!r}")
    return int(dim)


def _check_reps(reps: Sequence[Any], where: str) -> tuple[Representation, ...]:
    if not reps:
        raise ValueError(f"{where} needs at least one representation, e.g. {where}(fields.vector())")
    for rep in reps:
        if not isinstance(rep, Representation):
            raise TypeError(f"{where} takes representations (fields.vector(), fields.trivial(), ...), got {rep!r}")
    return tuple(reps)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _homomorphism_errors(rep: Representation, compose: Callable, elements: jax.Array, identity: jax.Array):
    mats = jax.vmap(rep)(elements).astype(jnp.float32)
    products = jax.vmap(lambda g: jax.vmap(lambda h: rep(compose(g, h)))(elements))(elements)
    expected = jnp.einsum("gij,hjk->ghik", mats, mats)
    pair = jnp.max(jnp.abs(products.astype(jnp.float32) - expected))
    return pair, jnp.max(jnp.abs(rep(identity) - jnp.eye(rep.dim)))


def homomorphism_error(rep: Representation, group: Group) -> float:
    """``max ‖ρ(gh) − ρ(g)ρ(h)‖`` over all pairs of elements, and ``‖ρ(e) − I‖``: 0 for a representation.

    For a sampled (not closed) family ``gh`` need not be a member; representations computed from
    the element (matrices, planar codes) still apply, a table does not.
    """
    rep.validate(group)
    pair, unit = _homomorphism_errors(rep, group.compose, jnp.asarray(group.elements), jnp.asarray(group.identity))
    return max(float(pair), float(unit))


# ------------------------------------------------------------------------------------------------
