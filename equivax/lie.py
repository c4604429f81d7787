"""Lie derivatives: how fast ``f`` stops being equivariant as a continuous transformation starts.

For a one-parameter family of transformations ``ρ(t)`` (rotation by ``t`` radians, a shift by ``t``
pixels, a scaling by ``e^t``), the Lie derivative of ``f`` at ``x`` is

    L f(x) = d/dt [ ρ_out(−t) f(ρ_in(t) x) ] at t = 0  =  J_f(x) · A_in x  −  A_out f(x),

where ``A = d/dt ρ(t) at t = 0`` is the *generator* of the family. It is zero for every ``x`` exactly
when ``f`` is equivariant to the whole continuous family, and it is computed with one ``jax.jvp``.

Generators act on the spatial axes 1 and 2 of ``(N, H, W, ...)`` arrays, in pixel units, with
band-limited (Fourier) spatial derivatives ``∂``: the exact derivatives of the interpolants that
``equivax.continuous`` resamples, so a generator equals the derivative of the matching action
there (``tests/test_lie.py`` checks it against central differences, second order in the step).
Bilinear interpolation would instead give one-sided differences at the grid points, and with them
an isotropic filter would look less rotation-invariant than a random one. With ``u``, ``v`` the
row and column offsets from the image centre ``((H-1)/2, (W-1)/2)``:

* ``"translate_y"``: ``−∂_y x`` and ``"translate_x"``: ``−∂_x x`` (periodic derivatives, the
  generators of ``equivax.continuous.shift``);
* ``"rotation"``: ``v ∂_y x − u ∂_x x`` (counter-clockwise, as ``jnp.rot90``);
* ``"scale"``: ``−(u ∂_y x + v ∂_x x)``.

Rotation and scale use derivatives of the image zero-padded to twice its size, as
``equivax.continuous.rotate`` and ``scale`` do.

The metric ``lie_error`` follows Gruver, Finzi, Goldblum & Wilson, *The Lie Derivative for
Measuring Learned Equivariance*, ICLR 2023, who measure the local equivariance error of a model by
the norm of the Lie derivative of its outputs (the logits of a classifier) and attribute it to
layers by the chain rule (``layer_lie_errors``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from equivax._arguments import as_images
from equivax._sharding import as_devices
from equivax._traced import Static, split
from equivax._xla import jit

__all__ = [
    "GENERATORS",
    "ImageGenerator",
    "LayerLieErrors",
    "generator",
    "layer_lie_errors",
    "lie_derivative",
    "lie_error",
]

#: The names of the built-in generators.
GENERATORS = ("rotation", "translate_x", "translate_y", "scale")

_TRANSLATIONS = ("translate_x", "translate_y")


def _derivative(x: jax.Array, axis: int, padded: bool) -> jax.Array:
    """Band-limited derivative along ``axis`` (1 or 2), in pixels; the Nyquist term has none."""
    n = x.shape[axis]
    period = 2 * n if padded else n
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
    k = np.fft.rfftfreq(period, 1 / period)
    k = np.where(2 * k == period, 0.0, k)  # d/dt cos(π t) vanishes on the grid
    shape = [1] * x.ndim
    shape[axis] = len(k)
    factor = jax.lax.complex(jnp.zeros(len(k), dtype), jnp.asarray(2 * np.pi * k / period, dtype)).reshape(shape)
    spectrum = jnp.fft.rfft(x.astype(dtype), n=period, axis=axis)
    out = jnp.fft.irfft(spectrum * factor, n=period, axis=axis)
    return jax.lax.slice_in_dim(out, 0, n, axis=axis).astype(x.dtype)


def _offsets(x: jax.Array, axis: int) -> jax.Array:
    n = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = n
    return jnp.asarray(np.arange(n) - (n - 1) / 2, x.dtype).reshape(shape)


@dataclasses.dataclass(frozen=True)
class ImageGenerator:
    """A built-in generator ``x -> d/dt ρ(t) x at t = 0`` on the spatial axes 1 and 2.

    Attributes:
      name: one of ``GENERATORS``.
      stride: how many input pixels one pixel of this array spans (a map after a stride-2 layer
        has ``stride=2``): translations by ``t`` input pixels move it by ``t / stride`` pixels;
        rotation and scale are the same on every grid.
    """

    name: str
    stride: float = 1.0

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 3:
            raise ValueError(f"the {self.name} generator acts on (N, H, W, ...) arrays, got shape {x.shape}")
        if self.name == "translate_y":
            return -_derivative(x, 1, False) / self.stride
        if self.name == "translate_x":
            return -_derivative(x, 2, False) / self.stride
        d_y, d_x = _derivative(x, 1, True), _derivative(x, 2, True)
        u, v = _offsets(x, 1), _offsets(x, 2)
        if self.name == "rotation":
            return v * d_y - u * d_x
        return -(u * d_y + v * d_x)


def generator(name: str, stride: float = 1) -> ImageGenerator:
    """The generator called ``name`` (one of ``GENERATORS``) on a grid of the given ``stride``.

    Args:
      name: ``"rotation"``, ``"translate_x"``, ``"translate_y"`` or ``"scale"``.
      stride: input pixels per pixel of the array the generator acts on.

    Returns:
      An ``ImageGenerator``, a frozen dataclass ``gen(x) -> d/dt ρ(t) x at t = 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> phase = 2 * jnp.pi * jnp.arange(8.0) / 8
      >>> wave = jnp.sin(phase)[None, None, :, None]  # (1, 1, 8, 1), one period along x
      >>> slope = generator("translate_x")(wave)[0, 0, :, 0]  # -d/dx: moving right
      >>> bool(jnp.allclose(slope, -2 * jnp.pi / 8 * jnp.cos(phase), atol=1e-5))
      True
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; use one of {GENERATORS} or pass a function gen(x)")
    if not stride > 0:
        raise ValueError(f"stride must be positive, got {stride!r}")
    return ImageGenerator(name, float(stride))


def _as_generator(gen: Any, which: str) -> Callable[[jax.Array], jax.Array]:
    if isinstance(gen, str):
        return generator(gen)
    if not callable(gen):
        raise TypeError(f"{which} must be a generator name {GENERATORS} or a function gen(x), got {gen!r}")
    return gen


# ------------------------------------------------------------------------------------------------
# f as a function of (state, x): plain callables as they are, NNX modules split and merged.
# ------------------------------------------------------------------------------------------------


@functools.partial(jit, static_argnums=(0, 1, 2))
def _lie(fn, gen_in, gen_out, state, x):
    y, dy = jax.jvp(lambda z: fn(state, z), (x,), (gen_in(x),))
    return dy if gen_out is None else dy - gen_out(y)


def _split_batch(state: Any, x: jax.Array, devices: Any) -> tuple[Any, jax.Array]:
    """Place the batch one part per device and the parameters on every device. The number of parts
    is the largest divisor of the batch size not above the device count (no padding: a model that
    mixes examples, a batch norm in training mode say, sees exactly the batch it was given)."""
    devices = as_devices(devices)
    n = x.shape[0]
    shards = max(d for d in range(1, min(len(devices), n) + 1) if n % d == 0)
    if shards == 1:
        return state, x
    mesh = Mesh(np.asarray(devices[:shards]), ("batch",))
    x = jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch")))
    return jax.device_put(state, NamedSharding(mesh, PartitionSpec())), x


def lie_derivative(
    f: Any, x: jax.Array, generator: Any, out_generator: Any = None, *, devices: Any = None
) -> jax.Array:
    """The Lie derivative ``d/dt [ρ_out(−t) f(ρ_in(t) x)]`` at ``t = 0``, by one ``jax.jvp``, jitted.

    Args:
      f: a JAX-traceable function of ``x`` or a Flax NNX module. The compiled program is reused
        when a module of the same structure, or the same callable reading the same values, is
        passed again; a callable whose closed-over values changed is traced again.
      x: a batch of NHWC images ``(N, H, W, C)``.
      generator: the input generator: a name from ``GENERATORS`` or a function
        ``gen(x) -> d/dt ρ_in(t) x at t = 0``.
      out_generator: the output generator, same forms; ``None`` means ``f`` should be invariant
        (``ρ_out`` is the identity). Pass the same name for image-to-image maps.
      devices: the devices to split the batch over with ``jax.sharding`` (default
        ``jax.devices()``); ``jax.devices()[:1]`` keeps it on one.

    Returns:
      An array shaped like ``f(x)``: ``J_f(x) · gen(x) − out_generator(f(x))``; zero when ``f`` is
      equivariant to the whole one-parameter family at ``x``. Units: output per radian (rotation),
      per pixel (translations) or per unit of log-scale.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from equivax import zoo
      >>> conv = zoo.circular_conv(jnp.cos(jnp.arange(18.0)).reshape(3, 3, 1, 2))
      >>> x = jnp.sin(jnp.arange(128.0) ** 2).reshape(2, 8, 8, 1)
      >>> d = lie_derivative(conv, x, "translate_x", "translate_x")
      >>> d.shape, bool(jnp.max(jnp.abs(d)) < 1e-4)
      ((2, 8, 8, 2), True)
    """
    gen_in = _as_generator(generator, "generator")
    gen_out = None if out_generator is None else _as_generator(out_generator, "out_generator")
    x = as_images(x)
    traced = split(f)
    fn = Static(traced.fn, "structure" if traced.key is not None else traced.fingerprint)
    state, x = _split_batch(traced.params, jnp.asarray(x), devices)
    return _lie(fn, gen_in, gen_out, state, x)


def _rms(values: jax.Array) -> jax.Array:
    """Per-example root-mean-square over every axis but the first."""
    flat = values.reshape(values.shape[0], -1)
    return jnp.sqrt(jnp.mean(jnp.square(flat), axis=1))


def lie_error(f: Any, x: jax.Array, generator: Any, out_generator: Any = None, *, devices: Any = None) -> jax.Array:
    """The local equivariance error of Gruver et al. (ICLR 2023), one scalar per example.

    Defined as the root-mean-square of the Lie derivative over the output values,

        lie_error(x) = ‖L f(x)‖₂ / √d,   d = number of output values per example,

    in output units per radian (rotation), per pixel (translations) or per unit of log-scale.
    Gruver et al. measure the local equivariance error (LEE) by the norm of the Lie derivative of
    a model's outputs — the logits for classifiers, with ``out_generator=None`` — and average its
    square over a data set: ``mean(lie_error**2)`` over examples is on that scale. Dividing by
    ``√d`` keeps outputs of different sizes (feature maps, logits) comparable.

    Args:
      f, x, generator, out_generator, devices: as for ``lie_derivative``.

    Returns:
      ``(N,)`` array of errors, one per example.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> energy = lambda x: jnp.sum(x**2, axis=(1, 2))  # invariant to every rotation
      >>> x = jnp.sin(jnp.arange(192.0) ** 2).reshape(3, 8, 8, 1)
      >>> bool(jnp.all(lie_error(energy, x, "translate_y") < 1e-3))
      True
    """
    return _rms(lie_derivative(f, x, generator, out_generator, devices=devices))


# ------------------------------------------------------------------------------------------------
# Layer-wise attribution
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerLieErrors:
    """Per-layer Lie derivatives of a stack of layers (``layer_lie_errors``).

    Attributes:
      names: a name per layer (its class or function name).
      shapes: the output shape of each layer.
      generators: the output generator each layer's output was compared with: ``"rotation"``,
        ``"translate_x/2"`` (a translation on a grid of stride 2), ``"invariant"`` (vector outputs)
        or ``"undefined"`` (rotations and scalings of group feature maps ``(N, H, W, K, C)``, whose
        orientation axis only carries quarter turns).
      prefix: ``(layers, N)``: RMS of the Lie derivative of the output of the first ``i + 1``
        layers (``lie_error`` of that prefix); NaN where the output generator is undefined.
      contribution: ``(layers, N)``: RMS, in the final output's space, of each layer's own
        contribution ``J_{>i} · L f_i(z_{i−1})``: the layer's Lie derivative on its own input,
        carried through the rest of the network by a jvp. By the chain rule the contributions
        sum to the Lie derivative of the whole stack (``contribution_vectors.sum(0)``). Where an
        output generator is undefined, the layers up to the next defined output form one block
        whose contribution is given at its last layer, and the others are NaN.
      contribution_vectors: ``(layers, *output_shape)``, the contributions themselves.
      derivative: the Lie derivative of the whole stack (``lie_derivative``), ``output_shape``.
      total: ``(N,)``: ``lie_error`` of the whole stack.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    generators: tuple[str, ...]
    prefix: np.ndarray
    contribution: np.ndarray
    contribution_vectors: np.ndarray
    derivative: np.ndarray
    total: np.ndarray

    def __str__(self) -> str:
        rows = [f"{'layer':24} {'output':20} {'generator':16} {'prefix':>10} {'contribution':>12}"]
        for i, name in enumerate(self.names):
            rows.append(
                f"{name[:24]:24} {self.shapes[i]!s:20} {self.generators[i]:16} "
                f"{np.mean(self.prefix[i]):10.3e} {np.mean(self.contribution[i]):12.3e}"
            )
        rows.append(f"{'total':62} {np.mean(self.total):10.3e}")
        return "\n".join(rows)


def _layers_of(stack: Any) -> list[Callable[[jax.Array], Any]]:
    """The layers of an ``nnx.Sequential``, or of a model with ``.layers`` (and ``.head``)."""
    from flax import nnx

    if isinstance(stack, nnx.Sequential):
        return list(stack.layers)
    inner = getattr(stack, "layers", None)
    if isinstance(inner, nnx.Sequential):
        head = getattr(stack, "head", None)
        return list(inner.layers) + ([] if head is None else [head])
    raise TypeError(
        f"layers must be an nnx.Sequential, a model with a .layers Sequential (and optional .head), "
        f"or a list of callables, got {type(stack).__name__}"
    )


def _name(layer: Any) -> str:
    return getattr(layer, "__name__", None) or type(layer).__name__


def _level_generator(name: str, base: Any, in_height: int, shape: tuple[int, ...]) -> tuple[Any, str]:
    """The generator on a layer output of this shape, and its description (None: invariant/undefined)."""
    if len(shape) == 2:
        return None, "invariant"
    image = len(shape) == 4
    group_map = len(shape) == 5 and name in _TRANSLATIONS
    if image or group_map:
        stride = in_height / shape[1]
        gen = dataclasses.replace(base, stride=base.stride * stride)
        return gen, f"{name}/{stride:g}" if name in _TRANSLATIONS and stride != 1 else name
    return None, "undefined"


@functools.partial(jit, static_argnums=(0, 1, 2))
def _layerwise(graphdef, base, levels, state, x):
    from flax import nnx

    layers = _layers_of(nnx.merge(graphdef, state))
    gens = [base, *(gen for gen, _ in levels)]
    defined = [True, *(desc != "undefined" for _, desc in levels)]
    zs, tangents = [x], [base(x)]
    for layer in layers:  # all prefix derivatives in one forward jvp pass
        z, t = jax.jvp(layer, (zs[-1],), (tangents[-1],))
        zs.append(z)
        tangents.append(t)

    def lie_at(i):
        return tangents[i] if gens[i] is None else tangents[i] - gens[i](zs[i])

    prefix = [lie_at(i) if defined[i] else None for i in range(1, len(zs))]
    contributions, start = [], 0
    for end in range(1, len(zs)):
        if not defined[end]:
            contributions.append(None)
            continue

        def block(z, lo=start, hi=end):
            for layer in layers[lo:hi]:
                z = layer(z)
            return z

        moved = jnp.zeros_like(zs[start]) if gens[start] is None else gens[start](zs[start])
        own = jax.jvp(block, (zs[start],), (moved,))[1]
        own = own if gens[end] is None else own - gens[end](zs[end])

        def rest(z, lo=end):
            for layer in layers[lo:]:
                z = layer(z)
            return z

        contributions.append(jax.jvp(rest, (zs[end],), (own,))[1])
        start = end
    return prefix, contributions, lie_at(len(zs) - 1)


def layer_lie_errors(layers: Any, x: jax.Array, generator: str, *, devices: Any = None) -> LayerLieErrors:
    """Lie derivatives layer by layer, and each layer's own contribution (Gruver et al., 2023).

    The output generator of every layer is inferred from its shape: image outputs ``(N, H, W, C)``
    use the same generator on their grid (translations divided by the stride ``H_in / H``,
    inferred from the spatial size); vector outputs ``(N, C)`` should be invariant; group feature
    maps ``(N, H, W, K, C)`` carry translations only (rotations and scalings are ``"undefined"``
    there, see ``LayerLieErrors``). Everything runs in one jitted call.

    Args:
      layers: an ``nnx.Sequential``, a model with a ``.layers`` Sequential and an optional
        ``.head`` (``equivax.nn.CNN``, ``P4CNN``, ...), or a list of callables.
      x: a batch of NHWC images.
      generator: a name from ``GENERATORS``.
      devices: the devices to split the batch over (default ``jax.devices()``).

    Returns:
      A ``LayerLieErrors``; ``print`` it for a table.

    Examples:
      >>> import jax.numpy as jnp
      >>> from equivax import zoo
      >>> x = jnp.sin(jnp.arange(128.0) ** 2).reshape(2, 8, 8, 1)
      >>> errors = layer_lie_errors([jnp.tanh, zoo.global_mean], x, "rotation")
      >>> errors.names, errors.generators, errors.prefix.shape
      (('tanh', 'global_mean'), ('rotation', 'invariant'), (2, 2))
    """
    from flax import nnx

    if not isinstance(generator, str):
        raise TypeError(f"layer_lie_errors needs a generator name from {GENERATORS}, got {generator!r}")
    base = _as_generator(generator, "generator")
    x = as_images(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of NHWC images (N, H, W, C), got shape {x.shape}")
    stack = nnx.Sequential(*layers) if isinstance(layers, (list, tuple)) else layers
    _layers_of(stack)  # a clear error for anything else
    graphdef, state = nnx.split(stack)
    shapes = jax.eval_shape(lambda s, z: _shapes(nnx.merge(graphdef, s), z), state, x)
    levels = tuple(_level_generator(generator, base, x.shape[1], tuple(s.shape)) for s in shapes)
    if levels[-1][1] == "undefined":
        raise ValueError(
            f"the output of the last layer has shape {tuple(shapes[-1].shape)}, on which {generator!r} is not "
            "defined (group feature maps carry only quarter turns); end the stack with a pooling over orientations"
        )
    placed_state, placed_x = _split_batch(state, x, devices)
    n = x.shape[0]
    outputs = _layerwise(graphdef, base, levels, placed_state, placed_x)
    prefix, contributions, total = jax.tree.map(np.asarray, outputs)
    nan = np.full(n, np.nan)
    out_shape = tuple(shapes[-1].shape)
    vectors = [np.full(out_shape, np.nan) if c is None else np.asarray(c) for c in contributions]
    return LayerLieErrors(
        names=tuple(_name(layer) for layer in _layers_of(stack)),
        shapes=tuple(tuple(s.shape) for s in shapes),
        generators=tuple(desc for _, desc in levels),
        prefix=np.stack([nan if p is None else np.asarray(_rms(p)) for p in prefix]),
        contribution=np.stack([nan if c is None else np.asarray(_rms(c)) for c in contributions]),
        contribution_vectors=np.stack(vectors),
        derivative=np.asarray(total),
        total=np.asarray(_rms(total)),
    )


def _shapes(stack: Any, x: jax.Array) -> list[jax.Array]:
    outputs = []
    for layer in _layers_of(stack):
        x = layer(x)
        outputs.append(x)
    return outputs
