"""Write a layer, check it in three lines, get the report of a model built with it.

The layer: a convolution whose filter is applied in its four quarter-turned versions, keeping the
largest response at each pixel ("rotation max-pooling" of the filter bank). With circular padding
and an odd kernel it should commute with circular shifts and quarter turns: p4.

    python examples/custom_layer.py [-o custom_layer_report.html]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

import equivax
from equivax.nn import GlobalPool, MaxPool


class RotationMaxConv(nnx.Module):
    """Circular 3x3 convolution with the filter in four orientations; max over orientations."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        std = (2.0 / (9 * in_features)) ** 0.5
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (3, 3, in_features, out_features)))

    def __call__(self, x: jax.Array) -> jax.Array:
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
        responses = [
            jax.lax.conv_general_dilated(
                padded,
                jnp.rot90(self.kernel[...], k, axes=(0, 1)),
                (1, 1),
                "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            for k in range(4)
        ]
        return jnp.max(jnp.stack(responses), axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="custom_layer_report.html", help="HTML report ('-' for none)")
    args = parser.parse_args()

    # The three lines: a layer, an input, a check.
    layer = RotationMaxConv(1, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    print(equivax.check(layer, x, equivax.groups.p4(16)).summary())

    # In a model: where does the p4 invariance of the output survive, and where not?
    model = nnx.Sequential(
        layer, nnx.relu, MaxPool(2), RotationMaxConv(4, 8, rngs=nnx.Rngs(1)), nnx.relu, GlobalPool("max")
    )
    group = equivax.groups.p4(16)
    report = equivax.report(model, x, group, elements=equivax.groups.basic_elements(group), name="RotationMaxCNN")
    print(report.summary())
    if args.output != "-":
        print(f"report: {equivax.render.write(report, args.output)}")


if __name__ == "__main__":
    main()
