"""Flax NNX layers and reference models, each declaring the equivariance it promises.

Layers: ``Conv`` (circular or zero padding), ``LiftingConv`` and ``GroupConv``
(p4, p4m), ``MaxPool``, ``AvgPool``, ``BlurPool``, ``GroupPool``,
``GlobalPool``, ``GroupBatchNorm``. Models: ``CNN``, ``MLP``,
``P4CNN``, ``P4MCNN``. ``contract(layer)`` returns what a layer promises, so:

    equivax.check(layer, x, group, *equivax.nn.contract(layer).actions())
"""

from equivax.nn.contract import Contract, contract
from equivax.nn.conv import Conv
from equivax.nn.gconv import GroupConv, LiftingConv
from equivax.nn.models import CNN, MLP, P4CNN, P4MCNN, count_parameters
from equivax.nn.norm import GroupBatchNorm
from equivax.nn.pool import AvgPool, BlurPool, GlobalPool, GroupPool, MaxPool

__all__ = [
    "CNN",
    "MLP",
    "P4CNN",
    "P4MCNN",
    "AvgPool",
    "BlurPool",
    "Contract",
    "Conv",
    "GlobalPool",
    "GroupBatchNorm",
    "GroupConv",
    "GroupPool",
    "LiftingConv",
    "MaxPool",
    "contract",
    "count_parameters",
]
