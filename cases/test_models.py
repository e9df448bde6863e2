"""Model level: a network with BatchNorm1d/2d/3d converted to the SUT, trained under DDP on sharded data, against
the same network with plain BatchNorm on the global batch in float64 (losses, parameters, buffers after every step).
"""
from __future__ import annotations

import numpy as np
import pytest

from harness.compare import compare_arrays, compare_exact
from harness.errors import RankFailure
from harness.models import ModelCase, expected_model_run, model_cases
from harness.pytest_plugin import NEEDS_CUDA, check_case, cuda_available, options
from harness.runner import CaseResult
from harness.tolerances import model_tolerance

MODEL_TIMEOUT_S = 180.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_case" in metafunc.fixturenames:
        opts = options(metafunc.config)
        cases = [] if opts.case else model_cases(opts.device)
        params = [pytest.param(c, marks=pytest.mark.skip(reason=NEEDS_CUDA))
                  if c.device == "cuda" and not cuda_available() else c for c in cases]
        metafunc.parametrize("model_case", params, ids=[c.id for c in cases])


def _rerun(case: ModelCase, run_config) -> str:
    sut = f" --sut {run_config.sut}" if run_config.sut != "torch" else ""
    return f"python -m pytest cases/test_models.py -k '{case.id}'{sut}"


def compare_model_run(case: ModelCase, actual: list[dict], expected: dict, yardstick: dict,
                      rerun: str = "") -> CaseResult:
    """Every step: the global loss (Σ_r loss_r / W), every parameter and buffer of every rank, and the ranks'
    bit-for-bit agreement (DDP averages gradients, SyncBN shares statistics: the states must be identical)."""
    result = CaseResult(case, rerun=rerun or f"python -m pytest cases/test_models.py -k '{case.id}'")
    add = result.comparisons.append
    for step in range(case.steps):
        phase = f"step{step}"
        loss = sum(r["losses"][step] for r in actual) / case.world_size
        want = expected["losses"][step]
        tol = model_tolerance("loss", dtype=case.dtype, scale=abs(want),
                              yardstick=abs(yardstick["losses"][step] - want))
        add(compare_arrays(np.array([loss]), np.array([want]), tol, quantity="loss", phase=phase, rank=None,
                           ranks=tuple(range(case.world_size)), dtype=case.dtype))
        for name, want in expected["states"][step].items():
            if name.endswith("num_batches_tracked"):
                for rank, record in enumerate(actual):
                    add(compare_exact(int(record["states"][step][name]), int(want), quantity=name, phase=phase,
                                      rank=rank, ranks=(rank,), dtype="int64", reason="+1 per training forward"))
                continue
            scale = float(np.max(np.abs(want))) if want.size else 1.0
            error = float(np.max(np.abs(yardstick["states"][step][name] - want))) if want.size else 0.0
            tol = model_tolerance(name, dtype=case.dtype, scale=scale, yardstick=error)
            for rank, record in enumerate(actual):
                add(compare_arrays(record["states"][step][name], want, tol, quantity=name, phase=phase, rank=rank,
                                   ranks=(rank,), dtype=case.dtype))
                if rank:
                    same = np.array_equal(record["states"][step][name], actual[0]["states"][step][name])
                    add(compare_exact(same, True, quantity=f"{name}.agreement", phase=phase, rank=rank,
                                      ranks=(0, rank), dtype=case.dtype, reason="DDP ranks hold identical state"))
    return result


def run_model(case: ModelCase, run_config) -> CaseResult:
    expected = expected_model_run(case, "float64")
    yardstick = expected_model_run(case, case.dtype, "cuda" if case.device == "cuda" else "cpu")
    pool = run_config.pools.get(case.world_size, case.device, run_config.backend)
    try:
        actual = pool.run("harness.models:run_model_case",
                          {"case": case.to_dict(), "sut": run_config.sut, "kernels": run_config.kernels},
                          timeout=MODEL_TIMEOUT_S)
    except RankFailure as failure:
        result = CaseResult(case, rerun=_rerun(case, run_config))
        result.failures.append(str(failure) + (f"\n{failure.traceback}" if failure.traceback else ""))
        return result
    return compare_model_run(case, actual, expected, yardstick, _rerun(case, run_config))


def test_model_training(model_case: ModelCase, run_config, pytestconfig) -> None:
    result = run_model(model_case, run_config)
    pytestconfig._syncbn_results.append(result)  # into the JSON, the HTML report and the gate like every case
    check_case(result)
