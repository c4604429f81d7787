import os

import hypothesis
import jax
import jax.numpy as jnp
import pytest

pytest_plugins = ["pytester"]

hypothesis.settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
hypothesis.settings.register_profile("dev", deadline=None, max_examples=50)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32, and in float64 with x64 enabled."""
    if request.param == "float32":
        yield jnp.float32
    else:
        with jax.enable_x64(True):
            yield jnp.float64
