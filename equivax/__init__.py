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

from equivax import actions as actions
from equivax import continuous as continuous
from equivax import fields as fields
from equivax import groups as groups
from equivax import lie as lie
from equivax import matrix_groups as matrix_groups
from equivax import search as search
from equivax import sets as sets
from equivax import verdicts as verdicts
from equivax._cache import CacheInfo as CacheInfo
from equivax._cache import cache_info as cache_info
from equivax._cache import clear_cache as clear_cache
from equivax._check import check as check
from equivax._check import check_outputs as check_outputs
from equivax._check import compiled_memory as compiled_memory
from equivax._localize import localize as localize
from equivax._program import block_until_compiled as block_until_compiled
from equivax._report import Report as Report
from equivax._report import report as report
from equivax.groups import Group as Group
from equivax.lie import LayerLieErrors as LayerLieErrors
from equivax.lie import layer_lie_errors as layer_lie_errors
from equivax.lie import lie_derivative as lie_derivative
from equivax.lie import lie_error as lie_error
from equivax.result import CheckResult as CheckResult
from equivax.search import WorstCase as WorstCase
from equivax.search import worst_case as worst_case
from equivax.testing import assert_equivariant as assert_equivariant
from equivax.verdicts import VERDICTS as VERDICTS
from equivax.verdicts import rounding_bound as rounding_bound

__version__ = "0.1.0"


#: Served on first use (``equivax.nn``, ``equivax.training``, ...), so ``import equivax`` (and
#: ``from equivax import *``) stays free of Flax, matplotlib, Hypothesis and tensorflow-datasets.
_LAZY = ("data", "nn", "render", "strategies", "training")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"equivax.{name}")
    raise AttributeError(f"module 'equivax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "block_until_compiled",
    "cache_info",
    "check",
    "check_outputs",
    "clear_cache",
    "compiled_memory",
    "continuous",
    "fields",
    "groups",
    "layer_lie_errors",
    "lie",
    "lie_derivative",
    "lie_error",
    "localize",
    "matrix_groups",
    "report",
    "rounding_bound",
    "search",
    "sets",
    "verdicts",
    "worst_case",
]
