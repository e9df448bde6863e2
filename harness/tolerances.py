"""Every tolerance the harness uses, with where each number comes from. One table; nothing else sets tolerances.

An implementation in dtype T is compared with the float64 reference evaluated on the very values it was given
(inputs, parameters and grad_output already rounded to T), so what remains is the error of the computation itself.

Module level, per case, quantity and phase, the allowed absolute error is
    atol = max(FLOOR_ULPS · u(T) · scale,  YARDSTICK_MULTIPLE · yardstick)
- ``yardstick``: the max |error| against float64 of a single-process torch BatchNorm in the same dtypes, on the same
  device, on the same (global) batch. It grows by itself with the reduction size and with the data's condition
  (offset far above the spread, variance near eps), which a fixed table cannot do without hiding bugs on easy
  data. SEMANTICS.md measured torch's SyncBatchNorm at 0.4x-3.6x of that yardstick on an H100; 8x leaves a
  further 2x for other devices and kernels.
- the floor ``FLOOR_ULPS · u · scale`` covers the cases where the yardstick is (nearly) exact by luck: about four
  roundings in the element-wise formula, times four for a different reduction order. ``scale`` is the size of
  what is being computed: max |expected| for element-wise quantities and running statistics, and for the
  parameter gradients the largest per-channel sum of |summands| (Σ|g·x̂| for grad_weight, Σ|g| for grad_bias),
  the magnitude that bounds any summation's rounding error.
- the yardstick's share is capped (YARDSTICK_CAP_REL · scale): data the dtype cannot resolve should not be a case
  for that dtype, and a cap makes such a case fail loudly instead of passing with a meaningless tolerance.
num_batches_tracked, output dtypes and the cross-rank agreement of running statistics are compared exactly.

Op level (one op against its reference, no yardstick), the classic forward error bound of a sum of n terms:
    atol = OP_ULPS · u(T) · sqrt(n) · scale
with ``scale`` the magnitude of the summed terms (see harness.op_cases) and sqrt(n) the statistical growth of
sequential accumulation (tree and pairwise reductions do better; the worst case n is never seen in practice).
"""
from __future__ import annotations

import math

from .compare import Tolerance

__all__ = [
    "UNIT_ROUNDOFF",
    "FLOOR_ULPS",
    "YARDSTICK_MULTIPLE",
    "YARDSTICK_CAP_REL",
    "OP_ULPS",
    "QUANTITY_DTYPE_ROLE",
    "module_tolerance",
    "op_tolerance",
]

# Unit roundoff u = 2^-p for a p-bit significand: float64 53, float32 24, float16 11, bfloat16 8.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}

FLOOR_ULPS = 16.0
YARDSTICK_MULTIPLE = 8.0
# Relative error of the yardstick beyond which the case is not meaningful in that dtype: 1e-2 is already 1e5 u
# for float32; for half types, 0.1 / 0.25 are about 200 u / 64 u, still far below the O(1) error of a real bug.
YARDSTICK_CAP_REL = {"float64": 1e-6, "float32": 1e-2, "float16": 0.1, "bfloat16": 0.25}
OP_ULPS = 8.0

# Which dtype a quantity lives in: the output and grad_input take the input's dtype, the rest the parameters'.
QUANTITY_DTYPE_ROLE = {
    "output": "input",
    "grad_input": "input",
    "grad_weight": "param",
    "grad_bias": "param",
    "running_mean": "param",
    "running_var": "param",
}


def module_tolerance(quantity: str, *, dtype: str, scale: float, yardstick: float | None) -> Tolerance:
    """The module-level tolerance for ``quantity`` computed in ``dtype`` (see the module docstring)."""
    if quantity not in QUANTITY_DTYPE_ROLE:
        raise KeyError(f"quantity={quantity!r}: no tolerance rule (known: {sorted(QUANTITY_DTYPE_ROLE)})")
    u = UNIT_ROUNDOFF[dtype]
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    floor = FLOOR_ULPS * u * scale
    if yardstick is None or not math.isfinite(yardstick):
        return Tolerance(floor, 0.0, f"{FLOOR_ULPS:g} u x scale {scale:.3g}")
    cap = YARDSTICK_CAP_REL[dtype] * scale
    from_yardstick = YARDSTICK_MULTIPLE * min(yardstick, cap)
    capped = " (capped: the dtype cannot resolve this data)" if yardstick > cap else ""
    reason = (f"max({FLOOR_ULPS:g} u x scale {scale:.3g}, {YARDSTICK_MULTIPLE:g} x single-process BatchNorm "
              f"error {yardstick:.3g}{capped})")
    return Tolerance(max(floor, from_yardstick), 0.0, reason)


def op_tolerance(*, dtype: str, count: int, scale: float) -> Tolerance:
    """The op-level tolerance for an output reduced over ``count`` elements of magnitude ``scale``."""
    u = UNIT_ROUNDOFF[dtype]
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    growth = math.sqrt(max(count, 1))
    return Tolerance(OP_ULPS * u * growth * scale, 0.0,
                     f"{OP_ULPS:g} u x sqrt(n={count}) x scale {scale:.3g}")
