"""equivax: verify that JAX functions and Flax modules are equivariant, with evidence.

The public API:

    equivax.check(f, x, group, in_action, out_action)      -> CheckResult
    equivax.check_outputs(f, x, group, ...)                -> {output: CheckResult}
    equivax.report(model, x, group)                        -> Report (layer by layer; equivax.render, on first use)
    equivax.assert_equivariant(f, x, group, ...)           raises AssertionError
    equivax.groups.translations / rotations / flips / dihedral / p4 / p4m / finite
    equivax.actions.image / regular / strided / trivial / tree
    equivax.continuous: interpolated rotations, sub-pixel shifts, scalings; sampled families as groups
    equivax.lie_derivative / lie_error / layer_lie_errors: Lie derivatives along continuous actions
    equivax.worst_case(f, x0, group)                       -> WorstCase (gradient ascent with optax)
    equivax.nn: Flax NNX layers and models that declare their contracts (imported on first use)
    equivax.data: MNIST via tensorflow-datasets; UCI digits at 28x28 offline (imported on first use)
    equivax.strategies: Hypothesis strategies (imported on first use); pytest plugin: --equivax-summary
"""

import importlib

from equivax import actions, continuous, groups, lie, search, verdicts
from equivax._cache import CacheInfo, cache_info, clear_cache
from equivax._check import check, check_outputs, compiled_memory
from equivax._report import Report, report
from equivax.groups import Group
from equivax.lie import LayerLieErrors, layer_lie_errors, lie_derivative, lie_error
from equivax.result import CheckResult
from equivax.search import WorstCase, worst_case
from equivax.testing import assert_equivariant
from equivax.verdicts import VERDICTS, rounding_bound

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("data", "nn", "render", "strategies"):  # imported only by those who use them
        return importlib.import_module(f"equivax.{name}")
    raise AttributeError(f"module 'equivax' has no attribute {name!r}")


__all__ = [
    "VERDICTS",
    "CacheInfo",
    "CheckResult",
    "Group",
    "LayerLieErrors",
    "Report",
    "WorstCase",
    "actions",
    "assert_equivariant",
    "cache_info",
    "check",
    "check_outputs",
    "clear_cache",
    "compiled_memory",
    "continuous",
    "data",
    "groups",
    "layer_lie_errors",
    "lie",
    "lie_derivative",
    "lie_error",
    "nn",
    "render",
    "report",
    "rounding_bound",
    "search",
    "strategies",
    "verdicts",
    "worst_case",
]
