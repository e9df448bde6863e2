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
- the floor ``FLOOR_ULPS · u · scale`` covers what the yardstick cannot see: about four roundings in the
  element-wise formula, times four for a different reduction order. On CPU the yardstick is nearly exact anyway
  (torch's CPU BatchNorm accumulates float32 in double), so there the floor carries the whole tolerance.
  ``scale`` is the size of what is being computed, including the one error no SyncBN in dtype T can avoid: the
  global mean is exchanged and held in T, so every normalised value x̂ = (x - mean)·invstd carries an error of
  u·kappa, kappa_c = |mean_c|·invstd_c (the data's offset in units of its spread: 0 for centred data, 1e4 for
  offset 1e4 and std 1, |mean|/sqrt(eps) for a constant channel). So each scale counts |x̂| + kappa wherever x̂
  enters: output max|weight|·(|x̂| + kappa); grad_weight max_c Σ|g|·(|x̂| + kappa); grad_bias max_c Σ|g| (the
  magnitude that bounds any summation's rounding error); grad_input the same terms through its formula; running_mean
  max |expected| + mean|x| in training (a sum's error bound is Σ|x|: centred data's mean is far below it);
  running_var max |expected|·(1 + kappa) (the shards' means enter its combine) plus, in training, (var + eps)·n/(n-1):
  PyTorch's protocol exchanges invstd = 1/sqrt(var + eps) and recovers var = 1/invstd² - eps,
  which costs u·(var + eps) when var is far below eps (found by the hypothesis cases), plus (F·u(T)·mean)²·n/(n-1):
  the shards' means, off by F roundings, enter the variance squared, which is all the error a constant channel far
  from 0 has (var 0; also found by the hypothesis cases). The mean's rounding also reaches all of grad_input squared
  through invstd, (F·u·kappa)²·|g| (found by the soak; harness.expected._scales).
  Buffers carry their errors into later phases, so their scales are the largest seen so far in the case. The
  SEMANTICS.md H100 figures agree: offset 1e4 in float32 gave an output error of 7.3e-4 ≈ 6 u·kappa, inside 16 u·kappa.
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

FLOOR_ULPS = 16.0
YARDSTICK_MULTIPLE = 8.0
# Relative error of the yardstick beyond which the case is not meaningful in that dtype: 1e-2 is already 1e5 u
# for float32. For half types the cap must keep YARDSTICK_MULTIPLE x cap well below the O(1e-1) error of a real
# bug (a rank normalising with its own statistics is off by about 1/sqrt(local count)): float16 1e-2 (20 u, 8x ->
# 0.08) and bfloat16 3e-2 (8 u, 8x -> 0.24, where the floor alone already allows 16 u = 0.0625). SEMANTICS.md
# measured single-process BatchNorm at 6.6e-4 (float16) and 5.2e-3 (bfloat16) relative on N(0, 1) data, 5-15x
# below these caps; torch's CPU BatchNorm measures 4.5e-4..7.4e-4 and 1.8e-3..4.7e-3 (docs/gpu.md, error table;
# tests/test_error_table.py keeps it under half the cap). Offsets the half type cannot resolve (1e4: error ~1) are
# not cases for it (cases.catalogue).
YARDSTICK_CAP_REL = {"float64": 1e-6, "float32": 1e-2, "float16": 1e-2, "bfloat16": 3e-2}
# The yardstick widens a tolerance only where it is itself accurate: up to YARDSTICK_TRUST x the analytic floor.
# Beyond that it is "suspect" (it shares a defect) and the floor alone decides. Measured: hard but correct data
# stays below 7x (the thorough catalogue on CPU 0.5x and on the H100 0.2x; a float64 constant channel 1.5e5
# spreads off centre reduced over 160 elements, found by the property tests, 2.1x: the floor's u·kappa does not
# grow with the reduction, the yardstick does; the TF32 model case 6.2x), a shared defect far above (torch's CPU
# bfloat16 channels-last backward with a contiguous grad_output, found here, 108-1600x). The defect that sits
# closer, CUDA's half-rounding backward reduction (pytorch#195701: 6-650x), is in float32 quantities of half
# input, which take no yardstick at all (module_tolerance's input_dtype).
YARDSTICK_TRUST = 16.0
OP_ULPS = 8.0

# The quantities a module-level tolerance exists for: the toleranced ones of harness.quantities.
_TOLERANCED = tuple(q.name for q in MODULE_QUANTITIES if not q.exact)


def module_tolerance(quantity: str, *, dtype: str, scale: float, yardstick: float | None,
                     input_dtype: str | None = None) -> Tolerance:
    """The module-level tolerance for ``quantity`` computed in ``dtype`` (see the module docstring). A quantity held
    in a wider dtype than the input (``input_dtype``: the float32 statistics and parameter gradients of half input)
    is accumulated in that wider dtype by a correct implementation, so its bound comes from that dtype alone: a
    single-process BatchNorm in the input's dtype is no yardstick for it (CUDA's native one shares pytorch#195701:
    on the H100 a bfloat16 grad_weight yardstick sat at 14.8x the float32 floor, float16 eval ones at 6-13x)."""
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
    """Model level (harness.models: a network trained K SGD steps under DDP, compared with the same network on the
    global batch in float64): the module-level rule, per step and quantity (loss, each parameter, each buffer):
        atol = max(MODEL_FLOOR_ULPS · u(T) · scale,  YARDSTICK_MULTIPLE · yardstick)
    with the yardstick the error of the same training with plain BatchNorm in the ranks' dtype, one process, and
    ``scale`` max |expected|. The floor is wider than FLOOR_ULPS: every step feeds the previous step's rounding
    through a forward, a backward and an update of the whole network (about 10 layers), so per step a few hundred
    roundings reach each parameter; MODEL_FLOOR_ULPS = 2^10 is 6.1e-5 relative in float32 and 1.1e-13 in float64,
    still far below the effect of one unsynchronised BatchNorm (a shard's mean off by ~1/sqrt(shard size)). On CPU
    (torch 2.13, 3 steps, cases of harness.catalogue's model cases) the worst error was 0.08x this floor.

    TF32 (``tf32``: a float32 case whose convolutions and matmuls may round their inputs to TF32, u = 2^-11): each
    convolution's output is then off by about u(TF32) relative, and every later quantity inherits and accumulates
    that through three SGD steps, so the floor is TF32_ULPS · u(TF32) · scale = 3.1e-2 relative: the H100 runs of
    2026-11-27 measured 32 and 40 u(TF32) (the first run, bn3.bias and conv3.weight after 3 steps) and up to 99
    u(TF32) (a later run), with the single-process TF32 network as far off (so the trusted yardstick covers the
    rest). An unsynchronised BatchNorm still shows: its running statistics are off by O(1) relative and the ranks'
    states disagree (an exact check)."""
    u = UNIT_ROUNDOFF[dtype]
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    floor = MODEL_FLOOR_ULPS * u * scale
    rule = f"{MODEL_FLOOR_ULPS:g} u x scale {scale:.3g}"
    if tf32:
        floor = max(floor, TF32_ULPS * TF32_UNIT_ROUNDOFF * scale)
        rule = f"{TF32_ULPS:g} u(TF32) x scale {scale:.3g}"
    return _with_yardstick(floor, f"{quantity}: {rule}", yardstick, math.inf, scale)


MODEL_FLOOR_ULPS = 2.0**10
TF32_UNIT_ROUNDOFF = 2.0**-11  # TF32 keeps 10 explicit mantissa bits
TF32_ULPS = 64.0
