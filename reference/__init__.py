"""float64 numpy reference for SyncBatchNorm: the five torch kernels by name (ops) and the module level (syncbn).

numpy only: nothing in this package imports torch.
"""
from __future__ import annotations

# This package is harness.reference: the wheel installs it inside harness, and in the checkout harness/reference is a
# link to this directory. Imported as top-level reference, it would be a second copy of every module: refused.
if __name__ != "harness.reference":
    raise ImportError(f"import harness.reference, not {__name__}: the package lives inside harness (issue 18), "
                      "so that a user's own reference package neither shadows it nor is shadowed by it")

from . import ops, syncbn  # noqa: E402
from .ops import *  # noqa: E402,F403
from .syncbn import *  # noqa: E402,F403

__all__ = [*ops.__all__, *syncbn.__all__]
