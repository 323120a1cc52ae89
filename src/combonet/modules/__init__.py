"""Contracting RNN modules (paper eq. 1), one per condition of Section 3."""

from .base import (
    ContractingModule,
    ContractingSystem,
    NoConstantMetricError,
    NotContractingError,
)
from .product import ProductModule
from .sparse import SparseModule, TrainableSparseModule
from .svd import SVDModule
from .symmetric import SymmetricModule
from .time import TimeConstants
from .triangular import TriangularModule

__all__ = ["ContractingModule", "ContractingSystem", "NoConstantMetricError",
           "NotContractingError", "ProductModule", "SVDModule", "SparseModule", "SymmetricModule",
           "TimeConstants", "TrainableSparseModule", "TriangularModule"]
