import os
import pathlib
import shutil
import tempfile

# Test programs are small and run once: compile time is nearly all of the suite's time, and XLA's
# backend optimisation level 0 halves it (measured on the layer tests). Read when JAX starts its
# backend, which no import does. Set XLA_FLAGS to test with other options.
# XLA's loop emitters compile the many small kernels of the tests' programs (random numbers, model
# initialisers) in about half the time at that level; equivax's own programs use them anyway
# (equivax/_xla.py, which tests/test_xla.py checks without this flag).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")
# Tests do not read or fill the user's persistent compilation cache (one test switches it on in a
# subprocess with its own cache directory).
os.environ.setdefault("EQUIVAX_COMPILATION_CACHE", "0")
# One JAX compilation cache for the run instead, made here by the controlling process and inherited
# by the xdist workers and every subprocess a test starts: a program compiled once (the same model
# checked by a test, a docs page and an example) is loaded, not compiled, the next time (measured:
# full suite 636 -> 510 s on 2 cores). Removed when the run ends.
_RUN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _RUN_CACHE = tempfile.mkdtemp(prefix="equivax-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _RUN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite's two workers keep both cores busy: the other-precision program is compiled when first
# needed, on the calling thread (tests of the ahead-of-time compilation switch it on themselves).
os.environ.setdefault("EQUIVAX_PARALLEL_COMPILE", "0")
# Failing assertions inside the suite save their inputs here, not in the user's /tmp/equivax-failures.
os.environ.setdefault("EQUIVAX_FAILURE_DIR", os.path.join(tempfile.gettempdir(), f"equivax-tests-{os.getpid()}"))

import hypothesis  # noqa: E402 - after the environment above
import jax  # noqa: E402 - after the environment above
import jax.numpy as jnp  # noqa: E402 - after the environment above
import pytest  # noqa: E402 - after the environment above

pytest_plugins = ["pytester"]

hypothesis.settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
hypothesis.settings.register_profile("dev", deadline=None, max_examples=50)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def strict_promotion():
    """Strict dtype promotion, as equinox's tests use: a silent promotion (float32 with float64, an
    integer array with a float one) inside the library raises instead of passing unnoticed. The
    check core's tests run under it (``pytestmark`` in their modules)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32, and in float64 with x64 enabled."""
    if request.param == "float32":
        yield jnp.float32
    else:
        with jax.enable_x64(True):
            yield jnp.float64


_SLOW_LIST = pathlib.Path(__file__).with_name("slow.txt")
_SLOW = {line.strip() for line in _SLOW_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")}


def pytest_unconfigure(config):
    if _RUN_CACHE is not None and not hasattr(config, "workerinput"):  # the process that made it
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Mark as ``slow`` the tests measured at over a second each (``tests/slow.txt``), so the quick
    loop ``-m "not slow"`` runs in about a minute; CI runs everything."""
    for item in items:
        if item.nodeid in _SLOW:
            item.add_marker(pytest.mark.slow)
