import os

# Test programs are small and run once: compile time is nearly all of the suite's time, and XLA's
# backend optimisation level 0 halves it (measured on the layer tests). Read when JAX starts its
# backend, which no import does. Set XLA_FLAGS to test with other options.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# Tests do not read or fill the user's persistent compilation cache (one test switches it on in a
# subprocess with its own cache directory).
os.environ.setdefault("EQUIVAX_COMPILATION_CACHE", "0")

import hypothesis
import jax
import jax.numpy as jnp
import pytest

pytest_plugins = ["pytester"]

hypothesis.settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
hypothesis.settings.register_profile("dev", deadline=None, max_examples=50)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Strict dtype promotion, as equinox's tests use: a silent promotion to float64 (or of an integer
# array to float) inside the library raises instead of passing unnoticed.
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32, and in float64 with x64 enabled."""
    if request.param == "float32":
        yield jnp.float32
    else:
        with jax.enable_x64(True):
            yield jnp.float64
