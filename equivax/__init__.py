"""equivax: verify that JAX functions and Flax modules are equivariant, with evidence.

The public API::

    equivax.check(f, x, group, in_action, out_action)      -> CheckResult
    equivax.check_outputs(f, x, group, ...)                -> {output: CheckResult}
    equivax.report(model, x, group)                        -> Report (layer by layer; equivax.render)
    equivax.assert_equivariant(f, x, group, ...)           raises AssertionError
    equivax.groups.translations / rotations / flips / dihedral / p4 / p4m / finite
    equivax.actions.image / regular / strided / trivial / tree
    equivax.nn: Flax NNX layers and models that declare their contracts (imported on first use)
    equivax.strategies: Hypothesis strategies (imported on first use); pytest plugin: --equivax-summary
"""

import importlib

from equivax import actions, groups
from equivax.check import check, check_outputs, rounding_bound
from equivax.groups import Group
from equivax.report import Report, report
from equivax.result import VERDICTS, CheckResult
from equivax.testing import assert_equivariant

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("nn", "strategies"):  # imported only by those who use them
        return importlib.import_module(f"equivax.{name}")
    raise AttributeError(f"module 'equivax' has no attribute {name!r}")


__all__ = [
    "VERDICTS",
    "CheckResult",
    "Group",
    "Report",
    "actions",
    "assert_equivariant",
    "check",
    "check_outputs",
    "groups",
    "nn",
    "report",
    "rounding_bound",
    "strategies",
]
