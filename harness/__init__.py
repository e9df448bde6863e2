"""syncbn-harness: run a SyncBatchNorm implementation on simulated ranks and compare it with a float64 reference."""
from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
