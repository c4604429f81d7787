"""Check a layer you wrote yourself, in three lines.

A "blur then subsample" layer: is it equivariant to shifts? To which shifts? To quarter turns?
And what survives a global mean?

    python examples/check_a_layer.py
"""

import jax
import jax.numpy as jnp

import equivax
from equivax import actions, groups


def blur_pool(x):
    """3x3 binomial blur with circular padding, then keep every second pixel."""
    k = jnp.array([1.0, 2.0, 1.0]) / 4
    for axis in (1, 2):
        x = k[0] * jnp.roll(x, 1, axis) + k[1] * x + k[2] * jnp.roll(x, -1, axis)
    return x[:, ::2, ::2]


x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))

# Even shifts commute with stride 2 (as shifts by half as much); odd shifts leave the subgroup.
print(equivax.check(blur_pool, x, groups.translations(16, 16), out_action=actions.strided(2)).summary())

# Quarter turns: the blur is symmetric, but subsampling keeps the pixels with even indices, and a
# quarter turn of a 16x16 grid maps even column indices to odd row indices. So it breaks.
result = equivax.check(blur_pool, x, groups.rotations())
print(result)

# Followed by a global mean, the layer is invariant to all of p4, odd shifts included: the
# binomial filter's two polyphase components have equal sums (1/4 + 1/4 = 2/4), so every input
# pixel gets the same weight in the subsampled mean. The check finds it, to rounding.
invariant = equivax.check(lambda x: jnp.mean(blur_pool(x), axis=(1, 2)), x, groups.p4(16), out_action=actions.trivial())
print(invariant.summary())
