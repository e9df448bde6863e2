"""The model kind: a network with BatchNorm1d/2d/3d converted to the SUT, trained under DDP on sharded data
(harness.spec.ModelSpec; the network is harness.nets', the ranks run harness.rank.model.run), against the same
network with plain BatchNorm on the global batch in float64 (``expected_model_run``): after every step the global
loss, every parameter and buffer of every rank, and the ranks' bit-for-bit agreement (DDP averages gradients,
SyncBN shares statistics: the states must be identical).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..compare import compare_agreement, compare_arrays, compare_exact
from ..nets import LEARNING_RATE, make_batch, make_net, state_of
from ..result import CaseResult
from ..spec import ModelSpec
from ..tf32 import tf32_mode
from ..tolerances import model_tolerance
from .base import Plan
from .rank_failures import failures_of_raised
from .module import shard_attributes

__all__ = ["plan", "judge", "compare_model_run", "expected_model_run", "attributes"]


def plan(spec: ModelSpec):
    def expected() -> tuple[dict[str, Any], dict[str, Any]]:
        """The float64 run (the reference) and the same run in the ranks' dtype on their device (the yardstick)."""
        return (expected_model_run(spec, "float64"),
                expected_model_run(spec, spec.dtype, "cuda" if spec.device == "cuda" else "cpu"))

    return Plan(expected=expected)


def attributes(p: dict[str, Any]) -> list[str]:
    """A model case's parameters as the diagnosis compares them (harness.kinds.CaseKind.attributes)."""
    momentum = p.get("momentum")
    return [f"dtype {p.get('dtype')}", "momentum None" if momentum is None else f"momentum {float(momentum):g}",
            *shard_attributes(p), f"world size {len(p.get('shard_sizes') or ())}"]


def judge(spec: ModelSpec, expected: tuple[dict[str, Any], dict[str, Any]], actual: list[dict[str, Any]],
          result: CaseResult) -> CaseResult:
    """The ranks' harness.rank.model.run results against the float64 run (and the yardstick); a rank whose SUT
    raised is that rank's failure."""
    errors = {r: v["error"] for r, v in enumerate(actual) if v.get("error") is not None}
    if errors:
        result.failures.extend(failures_of_raised(errors))
        return result
    reference, yardstick = expected
    return compare_model_run(spec, actual, reference, yardstick, result)


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


def expected_model_run(case: ModelSpec, dtype: str = "float64", device: str = "cpu") -> dict[str, Any]:
    """The same training with plain BatchNorm on the global batch in one process, in ``dtype``; losses are the
    global mean loss, states as run_model_case returns them (inputs rounded to the ranks' dtype first). TF32 as
    the case says (it only matters for float32 on a GPU)."""

    with tf32_mode(case.tf32 and dtype == "float32"):
        return _train_one_process(case, dtype, device)


def _train_one_process(case: ModelSpec, dtype: str, device: str) -> dict[str, Any]:
    import torch

    net = make_net(case, dtype, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    inputs, targets = make_batch(case)
    rank_dtype = getattr(torch, case.dtype)
    losses, states = [], []
    for step in range(case.steps):
        x = torch.from_numpy(inputs[step]).to(rank_dtype).to(device=device, dtype=getattr(torch, dtype))
        target = torch.from_numpy(targets[step]).to(rank_dtype).to(device=device, dtype=getattr(torch, dtype))
        optimizer.zero_grad(set_to_none=False)
        loss = ((net(x) - target) ** 2).sum() / x.shape[0]
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        states.append(state_of(net))
    return {"losses": losses, "states": states}
