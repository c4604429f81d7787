"""Actions: pure functions ``act(g, x) -> x`` that accept a traced group element.

An action is any callable with that signature (the ``Action`` protocol); one ``jax.vmap`` over
the elements of a group then transforms a whole batch of inputs at once. The built-ins act on
arrays laid out as NHWC images (spatial axes 1 and 2; NCHW with ``image(channels_first=True)``)
or as ``(N, H, W, |K|, C)`` group feature maps, with planar elements ``(dy, dx, k, m)`` as
described in ``equivax.groups``.

Besides ``__call__``, an action may define optional members. Read them through the module
functions here, never directly, so that a plain function stays a valid action:

- ``defined(g) -> bool``, read with ``is_defined(action, g)``: ``g`` lies in the subgroup the
  action can represent (a 1-pixel shift after a stride-2 layer does not); traceable.
- ``leafwise: bool``, read with ``acts_leafwise(action)`` and used by ``apply(action, g, x)``:
  given a pytree of arrays, the action acts on each leaf by itself.
- ``validate(group, x, role) -> None``, called by ``validate(action, group, x, role)``: refuse, in
  one line (``ValueError`` or ``TypeError``), a group or an input the action does not fit. ``x`` is
  an array or a ``jax.ShapeDtypeStruct`` (or a pytree of them); ``role`` is ``"in_action"`` or
  ``"out_action"``, for the message.
- ``resampling_tolerance: float | None``, read with ``resampling_tolerance(action)``: for
  interpolating actions (not exact group actions on a pixel grid), the relative error up to which
  a structural error is ``"approximate"``; ``None`` when exact.

``probe(action, group, x)`` tests the two laws that make a function an action,
``act(e, x) = x`` and ``act(g, act(h, x)) = act(g·h, x)``, on a few pairs of elements.

Every built-in is a frozen dataclass, so two equal constructions hash alike and a check compiled
for one is reused for the other.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from equivax._planar import ImageAction, RegularAction
from equivax._xla import jit
from equivax.groups import Group
from equivax.precision import widest_float

__all__ = [
    "ROLES",
    "Action",
    "ImageAction",
    "RegularAction",
    "TreeAction",
    "TrivialAction",
    "acts_leafwise",
    "apply",
    "image",
    "is_defined",
    "law_errors",
    "probe",
    "probe_elements",
    "regular",
    "resampling_tolerance",
    "strided",
    "tree",
    "trivial",
    "validate",
]


class Action(Protocol):
    """The interface: ``act(g, x) -> x``, traceable in both arguments (``g`` is traced under ``vmap``).

    Optional members (``defined``, ``leafwise``, ``validate``, ``resampling_tolerance``) are listed
    in the module docstring; a plain function ``lambda g, x: ...`` is an action.
    """

    def __call__(self, g: Any, x: Any) -> Any: ...


#: The roles an action plays in a check, as ``validate`` names them.
ROLES = ("in_action", "out_action")

OUTSIDE_STRIDE = (
    "outside the subgroup the output action represents (a shift its stride drops, or a turn or mirror "
    "its orientation axis lacks)"
)


# ------------------------------------------------------------------------------------------------
# Reading the optional members
# ------------------------------------------------------------------------------------------------


def is_defined(action: Action, g: Any) -> jax.Array:
    """Whether ``action`` can represent element ``g`` (true unless it says otherwise)."""
    defined = getattr(action, "defined", None)
    return jnp.asarray(True) if defined is None else jnp.asarray(defined(g))


def acts_leafwise(action: Action) -> bool:
    """Whether ``action``, given a pytree, acts on each array leaf by itself (built-in array actions do)."""
    return bool(getattr(action, "leafwise", False))


def _is_leaf(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def apply(action: Action, g: Any, x: Any) -> Any:
    """``action(g, x)``; a leafwise action given a pytree acts on each leaf."""
    if acts_leafwise(action) and not _is_leaf(x):
        return jax.tree.map(lambda leaf: action(g, leaf), x)
    return action(g, x)


def resampling_tolerance(action: Action) -> float | None:
    """The relative error an interpolating action introduces by itself (``None`` for exact actions)."""
    value = getattr(action, "resampling_tolerance", None)
    return None if value is None else float(value)


def validate(action: Action, group: Group, x: Any, role: str) -> None:
    """Let ``action`` check that it fits ``group`` and ``x`` (an array, a ``jax.ShapeDtypeStruct`` or a
    pytree of them); a one-line ``ValueError``/``TypeError`` when it does not, nothing when it has no
    ``validate``. A leafwise action given a pytree checks each leaf and names the one at fault.

    Examples:
      >>> import jax, equivax
      >>> x = jax.ShapeDtypeStruct((8, 3, 32, 32), "float32")
      >>> validate(image(), equivax.groups.flips(), x, "in_action")
      Traceback (most recent call last):
      ...
      ValueError: image() acts on NHWC images, but x of shape (8, 3, 32, 32) looks NCHW ...x.transpose(0, 2, 3, 1)
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    check = getattr(action, "validate", None)
    if check is None:
        return
    if _is_leaf(x) or not acts_leafwise(action):
        check(group, x, role)
        return
    for path, leaf in jax.tree_util.tree_flatten_with_path(x)[0]:
        try:
            check(group, leaf, role)
        except (ValueError, TypeError) as err:
            raise type(err)(f"leaf {jax.tree_util.keystr(path)}: {err}") from None


# ------------------------------------------------------------------------------------------------
# Built-ins
# ------------------------------------------------------------------------------------------------


def _check_stride(stride: int) -> int:
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    return int(stride)


def image(stride: int = 1, *, channels_first: bool = False) -> ImageAction:
    """The natural action of a planar group on NHWC images (NCHW with ``channels_first=True``).

    With ``stride = s`` the action is the one carried by an output subsampled by ``s``: a shift by
    ``t`` acts as a shift by ``t / s``, and shifts not divisible by ``s`` are outside its domain.
    With ``channels_first`` the spatial axes are the last two, ``(N, C, H, W)``: Equinox and
    PyTorch-style models.

    Examples:
      >>> import jax.numpy as jnp, equivax
      >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
      >>> act = equivax.actions.image()
      >>> bool(jnp.all(act(jnp.array([0, 0, 1, 0]), x) == jnp.rot90(x, 1, axes=(1, 2))))
      True
      >>> nchw, g = equivax.actions.image(channels_first=True), jnp.array([0, 0, 1, 0])
      >>> bool(jnp.all(nchw(g, x.transpose(0, 3, 1, 2)) == act(g, x).transpose(0, 3, 1, 2)))
      True
    """
    if not isinstance(channels_first, bool):
        raise TypeError(f"channels_first must be True or False, got {channels_first!r}")
    return ImageAction(_check_stride(stride), channels_first)


def strided(stride: int) -> ImageAction:
    """The image action on an output subsampled by ``stride`` (``image(stride=stride)``)."""
    return image(stride)


def regular(group: Group, stride: int = 1) -> RegularAction:
    """The regular action of a planar group on ``(N, H, W, |K|, C)`` group feature maps.

    The orientation axis has one entry per element of the group's point group ``K`` (4 for C4/p4,
    8 for D4/p4m, index ``k + 4 m``); an element ``g`` moves entry ``h`` to ``g·h`` while the
    spatial axes are transformed as by ``image``.
    """
    if getattr(group, "point_group", None) is None:
        raise ValueError(
            f"{group.name} has no point group, so it has no regular action on feature maps; pass your own action(g, x)"
        )
    return RegularAction(group.point_group, _check_stride(stride), group.name)


@dataclasses.dataclass(frozen=True)
class TrivialAction:
    """Leaves its input unchanged: use as the output action to check invariance."""

    leafwise: ClassVar[bool] = True

    def __call__(self, g: Any, x: Any) -> Any:
        return x


def trivial() -> TrivialAction:
    """The trivial action ``x -> x``: ``f(g·x) = f(x)`` is invariance."""
    return TrivialAction()


@dataclasses.dataclass(frozen=True)
class TreeAction:
    """One action per leaf of a pytree output (the structure may stop above the arrays; an action
    at a leaf of the structure given a subtree acts as ``apply`` does)."""

    treedef: Any
    leaves: tuple[Any, ...]

    def __call__(self, g: Any, y: Any) -> Any:
        parts = self._parts(y, "the value")
        moved = [apply(act, g, part) for act, part in zip(self.leaves, parts, strict=True)]
        return jax.tree.unflatten(self.treedef, moved)

    def _parts(self, y: Any, what: str) -> list[Any]:
        try:
            return self.treedef.flatten_up_to(y)
        except (ValueError, TypeError):
            raise ValueError(
                f"the action tree has the structure {self.treedef}, but {what} has {jax.tree.structure(y)}; give one "
                "action per part of it, e.g. actions.tree((actions.image(), actions.trivial())) for (maps, logits)"
            ) from None

    def defined(self, g: Any) -> jax.Array:
        return jnp.all(jnp.stack([is_defined(a, g) for a in self.leaves]))

    def validate(self, group: Group, y: Any, role: str) -> None:
        """The structure must match ``y``'s; then each action validates its part."""
        parts = self._parts(y, "f's output" if role == "out_action" else "x")
        for act, part in zip(self.leaves, parts, strict=True):
            validate(act, group, part, role)

    @property
    def resampling_tolerance(self) -> float | None:
        """The largest tolerance among the leaves' (``None`` if every leaf is exact)."""
        found = [t for t in map(resampling_tolerance, self.leaves) if t is not None]
        return max(found) if found else None


def tree(actions: Any) -> TreeAction:
    """Combine actions for a pytree output, e.g. ``tree((image(), trivial()))`` for
    ``f(x) = (features, logits)``; the structure must be a prefix of the output's."""
    leaves, treedef = jax.tree.flatten(actions)
    for leaf in leaves:
        if not callable(leaf):
            raise TypeError(f"every leaf of an action tree must be an action act(g, x), got {leaf!r}")
    return TreeAction(treedef, tuple(leaves))


# ------------------------------------------------------------------------------------------------
# The homomorphism probe
# ------------------------------------------------------------------------------------------------


def _describe(action: Any) -> str:
    name = getattr(action, "__name__", None)
    return name if isinstance(name, str) else repr(action)


def probe_elements(group: Group, count: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``(a, others)``: the first non-identity element and up to ``count`` seeded random non-identity
    elements, from which ``probe`` forms its pairs. ``others`` is empty for the trivial group."""
    table = np.asarray(group.elements)
    rest = np.flatnonzero(np.arange(len(table)) != group.index(group.identity))
    if rest.size == 0:
        return table[0], table[:0]
    others = np.random.default_rng(0).permutation(rest)[:count]
    return table[rest[0]], table[others]


def _pairs(group: Group, a: jax.Array, others: jax.Array, pairs: int) -> tuple[jax.Array, jax.Array]:
    """Traceable: ``(a, a), (a, b), (b, a)``, then ``(others[i], others[i + 1])``, with ``b`` the first of
    ``others`` that does not commute with ``a`` (the first of them in an abelian group)."""
    ab = jax.vmap(lambda c: group.compose(a, c))(others)
    ba = jax.vmap(lambda c: group.compose(c, a))(others)
    gap = jnp.abs(ab.astype(jnp.float32) - ba.astype(jnp.float32)).reshape(len(others), -1)
    b = others[jnp.argmax(jnp.any(gap > group.tolerance, axis=1))]
    rolled = jnp.roll(others, -1, axis=0)
    gs = jnp.concatenate([jnp.stack([a, a, b]), others])[:pairs]
    hs = jnp.concatenate([jnp.stack([a, b, a]), rolled])[:pairs]
    return gs, hs


def _relative(a: Any, b: Any) -> jax.Array:
    """‖a − b‖ / ‖b‖ over every leaf (0 when both vanish)."""
    left = [jnp.ravel(leaf).astype(widest_float(jnp.asarray(leaf).dtype)) for leaf in jax.tree.leaves(a)]
    right = [jnp.ravel(leaf).astype(widest_float(jnp.asarray(leaf).dtype)) for leaf in jax.tree.leaves(b)]
    if len(left) != len(right) or any(p.shape != q.shape for p, q in zip(left, right, strict=True)):
        return jnp.asarray(jnp.inf)
    num = jnp.sqrt(sum(jnp.sum(jnp.abs(p - q) ** 2) for p, q in zip(left, right, strict=True)))
    den = jnp.sqrt(sum(jnp.sum(jnp.abs(q) ** 2) for q in right))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.where(num > 0, jnp.inf, 0.0))


def law_errors(action: Action, group: Group, x: Any, gs: Any, hs: Any) -> tuple[jax.Array, jax.Array]:
    """Relative errors of the two laws, traceable: ``‖act(e, x) − x‖ / ‖x‖`` and, for each pair,
    ``‖act(g, act(h, x)) − act(g·h, x)‖ / ‖act(g·h, x)‖`` (an array over the pairs)."""
    identity = _relative(apply(action, jnp.asarray(group.identity), x), x)

    def one(g: Any, h: Any) -> jax.Array:
        return _relative(apply(action, g, apply(action, h, x)), apply(action, group.compose(g, h), x))

    pair_errors = jax.vmap(one)(jnp.asarray(gs), jnp.asarray(hs)) if len(gs) else jnp.zeros((0,))
    return identity, pair_errors


def _law_tolerance(x: Any) -> float:
    floats = [leaf.dtype for leaf in jax.tree.leaves(x) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    eps = max((float(jnp.finfo(d).eps) for d in floats), default=float(jnp.finfo(jnp.float32).eps))
    return 100 * eps


def _probe_run(action: Action, group: Group, pairs: int, x: Any, a: Any, others: Any) -> tuple[Any, ...]:
    gs, hs = _pairs(group, a, others, pairs)
    return (*law_errors(action, group, x, gs, hs), gs, hs)


_probe_cached = jit(_probe_run, static_argnums=(0, 1, 2))


def probe(action: Action, group: Group, x: Any, pairs: int = 3, *, role: str = "action") -> None:
    """Check cheaply that ``action`` is a group action: ``act(e, x) = x`` and
    ``act(g, act(h, x)) = act(g·h, x)`` for ``pairs`` pairs of elements: ``(a, a), (a, b), (b, a)``,
    then seeded random ones, where ``a`` is the first non-identity element and ``b`` one that does
    not commute with it when the group has such an element (an action that composes in the wrong
    order is caught).

    One compiled call, cached for a hashable action and group; pass one example (``x[:1]``) to keep
    it cheap. Exact actions (permutations of pixels, entries or points) pass with an error of 0; a
    relative error of ``100 · eps`` of ``x``'s dtype (1.2e-5 in float32) is allowed for rounding.
    Interpolating actions (with a ``resampling_tolerance``) compose only approximately, so for them
    only ``act(e, x) = x`` is tested.

    Raises:
      ValueError: one line naming the action (as ``role``, e.g. ``"in_action"``) and the law it breaks.

    Examples:
      >>> import jax.numpy as jnp, equivax
      >>> group = equivax.groups.translations(8)
      >>> x = jnp.arange(64.0).reshape(1, 8, 8, 1)
      >>> probe(equivax.actions.image(), group, x)  # a group action: nothing to say
      >>> squared = lambda g, x: jnp.roll(x, g[1] ** 2, axis=2)
      >>> probe(squared, group, x, role="in_action")
      Traceback (most recent call last):
      ...
      ValueError: in_action <lambda> is not a group action: act(g, act(h, x)) ≠ act(g·h, x) for g = shift(0,1), ...
    """
    if not isinstance(pairs, (int, np.integer)) or isinstance(pairs, bool) or pairs < 0:
        raise ValueError(f"pairs must be a non-negative integer, got {pairs!r}")
    a, others = probe_elements(group)
    pairs = 0 if resampling_tolerance(action) is not None or len(others) == 0 else int(min(pairs, 3 + len(others)))
    try:
        hash((action, group))
        run = functools.partial(_probe_cached, action, group, pairs)
    except TypeError:  # an unhashable action: compile for this call only
        run = jit(functools.partial(_probe_run, action, group, pairs))
    identity, errors, gs, hs = run(x, a, others if len(others) else np.stack([a]))
    tol, name = _law_tolerance(x), _describe(action)
    if not float(identity) <= tol:
        raise ValueError(
            f"{role} {name} is not a group action: act(e, x) ≠ x for the identity e = {group.label(group.identity)} "
            f"(relative difference {float(identity):.1e}); an action must leave x unchanged under the identity"
        )
    errors = np.asarray(errors)
    bad = np.flatnonzero(~(errors <= tol))
    if bad.size:
        i = int(bad[0])
        g, h = group.label(np.asarray(gs)[i]), group.label(np.asarray(hs)[i])
        raise ValueError(
            f"{role} {name} is not a group action: act(g, act(h, x)) ≠ act(g·h, x) for g = {g}, h = {h} "
            f"(relative difference {errors[i]:.1e}); an action must compose as the group does"
        )
