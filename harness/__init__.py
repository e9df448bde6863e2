"""syncbn-harness: run a SyncBatchNorm implementation on simulated ranks and compare it with a float64 reference.

PYTEST_DONT_REWRITE: the installed package's pytest plugin marks it for assertion rewriting, but its own commands
(python -m harness run) import it before pytest starts; its modules assert nothing a test reads.
"""
from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
