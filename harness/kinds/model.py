"""The model kind: a network with BatchNorm1d/2d/3d converted to the SUT, trained under DDP on sharded data
(harness.spec.ModelSpec, harness.models), against the same network with plain BatchNorm on the global batch in
float64: after every step the global loss, every parameter and buffer of every rank, and the ranks' bit-for-bit
agreement (DDP averages gradients, SyncBN shares statistics: the states must be identical).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..compare import compare_agreement, compare_arrays, compare_exact
from ..errors import RankFailure
from ..models import expected_model_run
from ..result import CaseResult, RunConfig
from ..spec import ModelSpec
from ..tolerances import model_tolerance
from .rank_failures import failures_from_rank_failure

__all__ = ["run", "judge", "compare_model_run", "MODEL_TIMEOUT_FACTOR"]

MODEL_TIMEOUT_FACTOR = 3.0  # a model case trains a network: it gets three case timeouts


def run(spec: ModelSpec, config: RunConfig) -> CaseResult:
    start = time.monotonic()
    options = config.options
    result = CaseResult(spec, rerun=config.rerun(spec.id))
    try:
        pool = config.pools.get(spec.world_size, spec.device, options.backend_choice,
                                start_timeout=options.start_timeout)
        actual = pool.run("harness.models:run_model_case",
                          {"case": spec.to_dict(), "sut": options.sut, "kernels": options.kernels},
                          timeout=MODEL_TIMEOUT_FACTOR * options.case_timeout,
                          is_failure=lambda value: bool(value and value.get("unsupported")))
    except RankFailure as failure:
        reasons = {v["unsupported"] for v in failure.partial.values() if isinstance(v, dict) and v.get("unsupported")}
        if reasons and failure.kind != "crashed":  # some ranks declared it; the others waited for them
            result.unsupported = "; ".join(sorted(reasons))
        else:
            result.failures.extend(failures_from_rank_failure(failure, expected_errors={}))
        result.duration_s = time.monotonic() - start
        return result
    judge(spec, actual, result)
    result.duration_s = time.monotonic() - start
    return result


def judge(spec: ModelSpec, actual: list[dict[str, Any]], result: CaseResult) -> CaseResult:
    """The ranks' harness.models.run_model_case results against the float64 run (and the yardstick)."""
    reasons = {v["unsupported"] for v in actual if v.get("unsupported")}
    if reasons:
        result.unsupported = "; ".join(sorted(reasons))
        return result
    expected = expected_model_run(spec, "float64")
    yardstick = expected_model_run(spec, spec.dtype, "cuda" if spec.device == "cuda" else "cpu")
    return compare_model_run(spec, actual, expected, yardstick, result)


def compare_model_run(spec: ModelSpec, actual: list[dict[str, Any]], expected: dict[str, Any],
                      yardstick: dict[str, Any], result: CaseResult) -> CaseResult:
    """Every step: the global loss (Σ_r loss_r / W), every parameter and buffer of every rank, their agreement."""
    add = result.comparisons.append
    everyone = tuple(range(spec.world_size))
    for step in range(spec.steps):
        phase = f"step{step}"
        loss = sum(r["losses"][step] for r in actual) / spec.world_size
        want = expected["losses"][step]
        tolerance = model_tolerance("loss", dtype=spec.dtype, scale=abs(want), tf32=spec.tf32,
                                    yardstick=abs(yardstick["losses"][step] - want))
        add(compare_arrays(np.array([loss]), np.array([want]), tolerance, quantity="loss", phase=phase, rank=None,
                           ranks=everyone, dtype=spec.dtype))
        for name, want in expected["states"][step].items():
            kind = "buffer" if "running_" in name or name.endswith("num_batches_tracked") else "parameter"
            if name.endswith("num_batches_tracked"):
                for rank, record in enumerate(actual):
                    add(compare_exact(int(record["states"][step][name]), int(want), quantity="num_batches_tracked",
                                      phase=phase, rank=rank, ranks=(rank,), dtype="int64",
                                      reason="+1 per training forward", item=name))
                continue
            scale = float(np.max(np.abs(want))) if want.size else 1.0
            error = float(np.max(np.abs(yardstick["states"][step][name] - want))) if want.size else 0.0
            tolerance = model_tolerance(name, dtype=spec.dtype, scale=scale, yardstick=error, tf32=spec.tf32)
            for rank, record in enumerate(actual):
                add(compare_arrays(record["states"][step][name], want, tolerance, quantity=kind, phase=phase,
                                   rank=rank, ranks=(rank,), dtype=spec.dtype, item=name))
                if rank:
                    add(compare_agreement(record["states"][step][name], actual[0]["states"][step][name],
                                          quantity="state.agreement", phase=phase, rank=rank, first=0,
                                          dtype=spec.dtype, reason="DDP ranks hold identical state", item=name))
    return result
