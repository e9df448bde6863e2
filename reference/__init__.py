"""float64 numpy reference for SyncBatchNorm: the five torch kernels by name (ops) and the module level (syncbn).

numpy only: nothing in this package imports torch.
"""
from __future__ import annotations

from . import ops, syncbn
from .ops import *  # noqa: F403
from .syncbn import *  # noqa: F403

__all__ = [*ops.__all__, *syncbn.__all__]
