"""Combination primitives that preserve contraction (paper Section 2)."""

from .base import Combination, LowRank, expand_block_mask, random_block_mask
from .feedback import Feedback, Unconstrained
from .hierarchy import Hierarchy

__all__ = [
           "Combination",
           "Feedback",
           "Hierarchy",
           "LowRank",
           "Unconstrained",
           "expand_block_mask",
           "random_block_mask",
]
