"""Every tolerance the harness uses: one table; nothing else sets tolerances. The derivation of every number, the
measurements behind it and the findings that changed it: docs/tolerances.md.

An implementation in dtype T is compared with the float64 reference evaluated on the very values it was given
(inputs, parameters and grad_output already rounded to T), so what remains is the error of the computation itself.

- Module cases: ``atol = max(FLOOR_ULPS · u(T) · scale, YARDSTICK_MULTIPLE · yardstick)``, the yardstick (a
  single-process torch BatchNorm's error on the same data, harness.yardstick) trusted up to YARDSTICK_TRUST x the
  floor and capped at YARDSTICK_CAP_REL · scale; no yardstick for float32 quantities of half input. ``scale`` is the
  magnitude of the quantity, with the data's conditioning (harness.expected computes it).
- Op cases: ``atol = OP_ULPS · u(T) · sqrt(n) · scale``, a sum's forward error bound (scale: harness.kinds.op).
- Model cases: the module rule with a floor of MODEL_FLOOR_ULPS (TF32_ULPS · u(TF32) with TF32 allowed).
- Exact: num_batches_tracked, dtypes, required errors, the ranks' agreement; NaN/inf positions everywhere.
"""
from __future__ import annotations

import math

from .compare import Tolerance
from .quantities import MODULE_QUANTITIES

__all__ = [
    "UNIT_ROUNDOFF",
    "FLOOR_ULPS",
    "YARDSTICK_MULTIPLE",
    "YARDSTICK_CAP_REL",
    "YARDSTICK_TRUST",
    "OP_ULPS",
    "module_tolerance",
    "op_tolerance",
    "model_tolerance",
]

# Unit roundoff u = 2^-p for a p-bit significand: float64 53, float32 24, float16 11, bfloat16 8.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}

FLOOR_ULPS = 16.0  # ~4 roundings in the element-wise formula, x4 for another reduction order (docs/tolerances.md)
YARDSTICK_MULTIPLE = 8.0  # the first H100 measurement: SyncBN at 0.4x-3.6x of the yardstick, x2 for other devices
# The yardstick's share, capped at a relative error the dtype can still resolve; for half types 8x the cap stays
# well below a real bug's O(1e-1) error (docs/tolerances.md, "The yardstick").
YARDSTICK_CAP_REL = {"float64": 1e-6, "float32": 1e-2, "float16": 1e-2, "bfloat16": 3e-2}
# The yardstick widens a tolerance only up to this many floors; beyond, it is "suspect": it shares a defect
# (correct hard data measured below 7x, shared defects 108-1600x: docs/tolerances.md).
YARDSTICK_TRUST = 16.0
OP_ULPS = 8.0  # the op rule's constant: OP_ULPS · u · sqrt(n) · scale (docs/tolerances.md, "Op cases")

# The quantities a module-level tolerance exists for: the toleranced ones of harness.quantities.
_TOLERANCED = tuple(q.name for q in MODULE_QUANTITIES if not q.exact)


def module_tolerance(quantity: str, *, dtype: str, scale: float, yardstick: float | None,
                     input_dtype: str | None = None) -> Tolerance:
    """The module-level tolerance for ``quantity`` computed in ``dtype`` (see the module docstring). A quantity held
    in a wider dtype than the input (``input_dtype``: the float32 statistics and parameter gradients of half input)
    is accumulated in that wider dtype by a correct implementation, so its bound comes from that dtype alone: a
    single-process BatchNorm in the input's dtype is no yardstick for it (docs/tolerances.md, "The yardstick")."""
    if quantity not in _TOLERANCED:
        raise KeyError(f"quantity={quantity!r}: no module tolerance rule (known: {sorted(_TOLERANCED)})")
    u = UNIT_ROUNDOFF[dtype]
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    floor = FLOOR_ULPS * u * scale
    if input_dtype is not None and UNIT_ROUNDOFF[input_dtype] > u and yardstick is not None:
        return Tolerance(floor, 0.0, f"{FLOOR_ULPS:g} u x scale {scale:.3g}; no yardstick: accumulated in {dtype} "
                         f"from {input_dtype} input, a {input_dtype} BatchNorm does not measure what it achieves",
                         scale)
    return _with_yardstick(floor, f"{FLOOR_ULPS:g} u x scale {scale:.3g}", yardstick,
                           YARDSTICK_CAP_REL[dtype] * scale, scale)


def _with_yardstick(floor: float, rule: str, yardstick: float | None, cap: float, scale: float) -> Tolerance:
    """max(floor, YARDSTICK_MULTIPLE · yardstick), where the yardstick is trusted: not above YARDSTICK_TRUST x the
    analytic floor (else "yardstick suspect": it does not widen the tolerance) and capped at ``cap``."""
    if yardstick is None or not math.isfinite(yardstick):
        return Tolerance(floor, 0.0, rule, scale)
    if yardstick > YARDSTICK_TRUST * floor:
        return Tolerance(floor, 0.0, f"{rule}; yardstick suspect: single-process BatchNorm's error {yardstick:.3g} "
                         f"is {yardstick / floor:.3g}x this analytic bound, so it does not widen it", scale)
    capped = " (capped: the dtype cannot resolve this data)" if yardstick > cap else ""
    reason = f"max({rule}, {YARDSTICK_MULTIPLE:g} x single-process BatchNorm error {yardstick:.3g}{capped})"
    return Tolerance(max(floor, YARDSTICK_MULTIPLE * min(yardstick, cap)), 0.0, reason, scale)


def op_tolerance(*, dtype: str, count: int, scale: float) -> Tolerance:
    """The op-level tolerance for an output reduced over ``count`` elements of magnitude ``scale``."""
    u = UNIT_ROUNDOFF[dtype]
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    growth = math.sqrt(max(count, 1))
    return Tolerance(OP_ULPS * u * growth * scale, 0.0,
                     f"{OP_ULPS:g} u x sqrt(n={count}) x scale {scale:.3g}", scale)


def model_tolerance(quantity: str, *, dtype: str, scale: float, yardstick: float, tf32: bool = False) -> Tolerance:
    """Model level (harness.kinds.model: a network trained K SGD steps under DDP against the same network on the
    global batch in float64): the module-level rule per step and quantity (loss, each parameter, each buffer),
        atol = max(MODEL_FLOOR_ULPS · u(T) · scale,  YARDSTICK_MULTIPLE · yardstick)
    with the yardstick the same training with plain BatchNorm in the ranks' dtype, one process, and ``scale`` max
    |expected|; with TF32 allowed (``tf32``) the floor is TF32_ULPS · u(TF32) · scale. Why 2^10 and 64:
    docs/tolerances.md, "Model cases"."""
    u = UNIT_ROUNDOFF[dtype]
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    floor = MODEL_FLOOR_ULPS * u * scale
    rule = f"{MODEL_FLOOR_ULPS:g} u x scale {scale:.3g}"
    if tf32:
        floor = max(floor, TF32_ULPS * TF32_UNIT_ROUNDOFF * scale)
        rule = f"{TF32_ULPS:g} u(TF32) x scale {scale:.3g}"
    return _with_yardstick(floor, f"{quantity}: {rule}", yardstick, math.inf, scale)


MODEL_FLOOR_ULPS = 2.0**10  # a few hundred roundings per step reach each parameter (docs/tolerances.md)
TF32_UNIT_ROUNDOFF = 2.0**-11  # TF32 keeps 10 explicit mantissa bits
TF32_ULPS = 64.0  # the H100 runs measured 32-99 u(TF32) after three steps (docs/tolerances.md, "Model cases")
