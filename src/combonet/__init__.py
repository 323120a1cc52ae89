"""combonet: provably stable networks of recurrent neural networks.

Kozachkov, Ennis & Slotine, "RNNs of RNNs: Recursive Construction of Stable Assemblies of
Recurrent Neural Networks", NeurIPS 2022.
"""

from .activations import ACTIVATIONS, Activation, get_activation
from .certificate import Certificate, certify
from .combinations import Feedback, Hierarchy, Unconstrained, random_block_mask
from .modules import (
    ContractingModule,
    ContractingSystem,
    NoConstantMetricError,
    NotContractingError,
    ProductModule,
    SparseModule,
    SVDModule,
    SymmetricModule,
    TimeConstants,
    TrainableSparseModule,
    TriangularModule,
)
from .simulate import simulate, two_trajectory_check

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Certificate",
    "ContractingModule",
    "ContractingSystem",
    "Feedback",
    "Hierarchy",
    "NoConstantMetricError",
    "NotContractingError",
    "ProductModule",
    "SVDModule",
    "SparseModule",
    "SymmetricModule",
    "TimeConstants",
    "TrainableSparseModule",
    "TriangularModule",
    "Unconstrained",
    "__version__",
    "certify",
    "get_activation",
    "random_block_mask",
    "simulate",
    "two_trajectory_check",
]
