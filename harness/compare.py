"""Comparing one quantity of one rank against the reference, torch.testing style.

Every comparison is recorded (passed or not) with its metrics, so a report can show near misses as well as
failures. NaN and inf positions must agree before values are compared; the detailed diagnosis (worst element,
per-channel error) is computed for every comparison because the arrays here are small and reports use it.
Equality checks (a counter, a dtype, bit-for-bit agreement, a required error) carry a plain ``statement`` of what
differs instead of error ratios ("num_batches_tracked is 1 on rank 0, expected 2"). A comparison is read as text
through its record (``Comparison.record``) by harness.verdict, the one formatter of comparisons and failures.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np

__all__ = ["Tolerance", "Comparison", "compare_arrays", "compare_exact", "compare_agreement", "format_location",
           "RATIO_HISTOGRAM_EDGES"]

# Fixed bins of log10(|err| / allowed) for Comparison.ratio_histogram: bin 0 holds everything below 10**-6 (exact
# elements included), bin i (1..9) holds [10**(i-7), 10**(i-6)), the last bin everything >= 10**3 (inf included).
# The tolerance line, |err| = allowed, is the edge 0 between bins 6 and 7.
RATIO_HISTOGRAM_EDGES = tuple(range(-6, 4))


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol + rtol·|expected|, element-wise; ``reason`` says where the numbers come from,
    ``scale`` is the magnitude of the quantity the bound is relative to (0: unknown), for comparing errors across
    dtypes."""

    atol: float
    rtol: float = 0.0
    reason: str = ""
    scale: float = 0.0

    def __post_init__(self) -> None:
        if not (self.atol >= 0 and self.rtol >= 0):
            raise ValueError(f"Tolerance(atol={self.atol!r}, rtol={self.rtol!r}): both must be >= 0")


EXACT = Tolerance(0.0, 0.0, "exact")


@dataclass
class Comparison:
    """The outcome of comparing one quantity (of one rank, or summed over ranks) at one phase of a case."""

    quantity: str  # a name in harness.quantities
    phase: str
    rank: int | None  # None: a value summed over ``ranks``
    ranks: tuple[int, ...]
    passed: bool
    dtype: str
    shape: tuple[int, ...]
    total: int
    mismatched: int
    max_abs_err: float
    max_rel_err: float
    error_ratio: float  # max over elements of |err| / allowed (inf where nothing was allowed and it differs)
    tolerance: Tolerance
    worst: dict[str, Any] | None = None  # index, global index, actual, expected
    channel_ratio: list[float] = field(default_factory=list)  # per channel, max |err| / allowed
    note: str = ""
    ratio_histogram: list[int] = field(default_factory=list)  # element counts per RATIO_HISTOGRAM_EDGES bin
    exact: bool = False  # an equality check: ``statement`` says what differs
    statement: str = ""
    item: str = ""  # which one, where a quantity has several (a model's parameter name)

    def record(self) -> dict[str, Any]:
        """Every field as plain data (the results document's comparison record adds where it ran)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tolerance"] = asdict(self.tolerance)
        if self.worst is not None:
            data["worst"] = {**self.worst, "location": format_location(self.worst, self.rank)
                             if self.worst.get("index") else ""}
        data["ranks"] = list(self.ranks)
        data["shape"] = list(self.shape)
        return data


def format_location(worst: dict[str, Any], rank: int | None) -> str:
    """'rank 1, sample 2 (global 7), channel 3, position (0, 4)' for a shard; 'channel 3' for a per-channel value."""
    index = worst["index"]
    if len(index) == 1:
        return f"channel {index[0]}"
    parts = [f"rank {rank}"] if rank is not None else []
    sample = f"sample {index[0]}"
    if worst.get("global_sample") is not None and worst["global_sample"] != index[0]:
        sample += f" (global {worst['global_sample']})"
    parts += [sample, f"channel {index[1]}"]
    if len(index) > 2:
        parts.append(f"position {tuple(index[2:])}")
    return ", ".join(parts)


def _nonfinite_mismatch(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Positions whose NaN / ±inf status differs between actual and expected."""
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    inf_a, inf_e = np.isinf(actual), np.isinf(expected)
    same_inf = inf_a & inf_e & (np.sign(actual) == np.sign(expected))
    return (nan_a != nan_e) | (inf_a != inf_e) | (inf_a & inf_e & ~same_inf)


def compare_arrays(actual: Any, expected: Any, tolerance: Tolerance, *, quantity: str, phase: str,
                   rank: int | None, ranks: Sequence[int], dtype: str, sample_offset: int = 0,
                   channel_axis: int | None = None, item: str = "") -> Comparison:
    """Compare ``actual`` with the float64 ``expected`` element-wise under ``tolerance``.

    ``channel_axis`` defaults to 1 for (N, C, ...) arrays and 0 for per-channel vectors; ``sample_offset`` turns a
    shard's sample index into the global batch index for the message.
    """
    expected = np.asarray(expected, dtype=np.float64)
    base = dict(quantity=quantity, phase=phase, rank=rank, ranks=tuple(ranks), dtype=dtype, tolerance=tolerance,
                item=item)
    if actual is None:
        return Comparison(**base, passed=False, shape=expected.shape, total=int(expected.size),
                          mismatched=int(expected.size), max_abs_err=math.inf, max_rel_err=math.inf,
                          error_ratio=math.inf, note="the implementation returned nothing (None) for this quantity")
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != expected.shape:
        return Comparison(**base, passed=False, shape=expected.shape, total=int(expected.size),
                          mismatched=int(expected.size), max_abs_err=math.inf, max_rel_err=math.inf,
                          error_ratio=math.inf,
                          note=f"shape mismatch: actual {actual.shape}, expected {expected.shape}")
    if channel_axis is None:
        channel_axis = 1 if expected.ndim >= 2 else 0
    allowed = tolerance.atol + tolerance.rtol * np.abs(np.where(np.isfinite(expected), expected, 0.0))
    bad_nonfinite = _nonfinite_mismatch(actual, expected)
    both_finite = np.isfinite(actual) & np.isfinite(expected)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        err = np.where(both_finite, np.abs(actual - expected), 0.0)
        err = np.where(bad_nonfinite, np.inf, err)
        ratio = np.where(err == 0, 0.0, err / allowed)
        rel = np.where(err == 0, 0.0, err / np.abs(expected))
    mismatched_mask = err > allowed
    total = int(expected.size)
    mismatched = int(mismatched_mask.sum())
    channel_ratio: list[float] = []
    if expected.ndim:  # an empty shard still has its channels: all zero, so heat maps keep every rank's row
        channels = expected.shape[channel_axis]
        moved = np.moveaxis(ratio, channel_axis, 0).reshape(channels, -1) if total else np.zeros((channels, 0))
        channel_ratio = [float(v) for v in (moved.max(axis=1) if moved.shape[1] else np.zeros(channels))]
    worst = None
    if total:
        flat = int(np.argmax(ratio)) if float(ratio.max()) > 0 else int(np.argmax(err))
        index = tuple(int(i) for i in np.unravel_index(flat, expected.shape))
        worst = {"index": index, "actual": float(actual.reshape(-1)[flat]),
                 "expected": float(expected.reshape(-1)[flat]),
                 "global_sample": index[0] + sample_offset if expected.ndim >= 2 else None}
    with np.errstate(divide="ignore"):
        log_ratio = np.log10(ratio.reshape(-1))  # 0 -> -inf (first bin), inf -> inf (last bin)
    ratio_histogram = [int(n) for n in np.bincount(np.searchsorted(RATIO_HISTOGRAM_EDGES, log_ratio, side="right"),
                                                   minlength=len(RATIO_HISTOGRAM_EDGES) + 1)]
    note = ""
    if bad_nonfinite.any():
        note = f"NaN/inf positions differ at {int(bad_nonfinite.sum())} element(s)"
    return Comparison(**base, passed=mismatched == 0, shape=expected.shape, total=total, mismatched=mismatched,
                      max_abs_err=float(err.max()) if total else 0.0,
                      max_rel_err=float(rel.max()) if total else 0.0,
                      error_ratio=float(ratio.max()) if total else 0.0, worst=worst, channel_ratio=channel_ratio,
                      note=note, ratio_histogram=ratio_histogram)


def _statement_label(quantity: str) -> str:
    base, _, check = quantity.rpartition(".")
    return f"{base} dtype" if check == "dtype" else quantity


def compare_exact(actual: Any, expected: Any, *, quantity: str, phase: str, rank: int | None,
                  ranks: Sequence[int], dtype: str, reason: str, item: str = "") -> Comparison:
    """Equality of a scalar or string (a counter, a dtype name): passes only when identical. A failure reads as
    "<quantity> is <actual> on rank r at <phase>, expected <expected>"."""
    passed = actual == expected
    where = f"rank {rank}" if rank is not None else "ranks " + ",".join(map(str, ranks))
    statement = "" if passed else (f"{item or _statement_label(quantity)} is {actual} on {where} at {phase}, "
                                   f"expected {expected}")
    return Comparison(quantity=quantity, phase=phase, rank=rank, ranks=tuple(ranks), passed=bool(passed),
                      dtype=dtype, shape=(), total=1, mismatched=0 if passed else 1,
                      max_abs_err=0.0 if passed else math.inf, max_rel_err=0.0 if passed else math.inf,
                      error_ratio=0.0 if passed else math.inf, tolerance=Tolerance(0.0, 0.0, reason),
                      worst=None if passed else {"index": (), "actual": actual, "expected": expected},
                      note="" if passed else f"actual {actual!r}, expected {expected!r}", exact=True,
                      statement=statement, item=item)


def compare_agreement(actual: Any, reference: Any, *, quantity: str, phase: str, rank: int, first: int,
                      dtype: str, reason: str, item: str = "") -> Comparison:
    """Bit-for-bit agreement of rank ``rank``'s per-channel values with rank ``first``'s (NaN equals NaN)."""
    actual, reference = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    base = item or quantity.removesuffix(".agreement")
    if actual.shape != reference.shape:
        differing, total, largest = reference.size, reference.size, math.inf
        statement = f"{base} on rank {rank} has shape {actual.shape}, rank {first}'s {reference.shape}"
    else:
        same = (actual == reference) | (np.isnan(actual) & np.isnan(reference))
        differing, total = int((~same).sum()), int(reference.size)
        with np.errstate(invalid="ignore"):
            gaps = np.abs(actual - reference)[~same]
        largest = float(np.nanmax(gaps)) if gaps.size and not np.all(np.isnan(gaps)) else math.inf
        unit = "channels" if reference.ndim == 1 else "elements"
        statement = (f"{base} on rank {rank} differs from rank {first}'s in {differing} of {total} {unit} at "
                     f"{phase}, by up to {largest:.3g}") if differing else ""
    passed = differing == 0
    return Comparison(quantity=quantity, phase=phase, rank=rank, ranks=(first, rank), passed=passed, dtype=dtype,
                      shape=(), total=total or 1, mismatched=differing, max_abs_err=0.0 if passed else largest,
                      max_rel_err=0.0 if passed else math.inf, error_ratio=0.0 if passed else math.inf,
                      tolerance=Tolerance(0.0, 0.0, reason), exact=True, statement=statement, item=item)
