"""The op kind's rank entry: one of the five kernels called alone on this rank (harness.kinds registers ``run``).

The controller builds the op's arguments (harness.kinds.op.build_op_call: the shards' statistics it combines come
from the reference) and sends them as the request; the rank converts them to tensors on its device, calls
``torch.<op>`` with the run's kernels installed, and returns every output.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..data import dtype_name, to_numpy, to_tensor
from ..options import RankOptions
from ..spec import OpSpec
from . import compiled
from .prepare import implementation
from .worker import RankContext

__all__ = ["run"]


def run(ctx: RankContext, *, spec: dict[str, Any], options: RankOptions, args: list[Any]) -> dict[str, Any]:
    """Call ``torch.<op>(*args)`` on this rank's device; ``args`` items are ``("tensor", array, dtype, layout)``
    or plain values. Returns ``{"outputs": [each output as (float64 array, dtype name), None stays None], "error":
    a compile error (harness.errors.RankError) or None, "compile": what compiling took (--compile only)}``. The op
    always runs PyTorch's kernels (the SUT is a module; ``--kernels`` substitutes them)."""
    import torch

    case = OpSpec.from_dict(spec)
    implementation(ctx, dataclasses.replace(options, sut="torch"), case.device)
    dev = ctx.device_for_rank() if case.device == "cuda" else "cpu"
    call_args = [to_tensor(a[1], a[2], dev, a[3]) if isinstance(a, tuple) and a and a[0] == "tensor" else a
                 for a in args]
    ctx.progress(case.op, "call")
    op = getattr(torch, case.op)
    lane = compiled.lane(options)
    call = op
    if lane is not None:
        lane.start(ctx)
        call = lane.compile(lambda *call_args: op(*call_args))  # a Python frame for dynamo to trace
    try:
        outputs = call(*call_args)
    except Exception as exc:
        error = compiled.rank_error(lane, case.op, "call", exc)
        if error.stage != compiled.COMPILE_STAGE:
            raise
        return {"outputs": [], "error": error, "compile": lane.report()}
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    # In-place results (gather updates running_mean / running_var) come back after the op's own outputs.
    in_place = [call_args[i] for i in (3, 4)] if case.op == "batch_norm_gather_stats_with_counts" else []
    result: dict[str, Any] = {"outputs": [None if t is None else (to_numpy(t), dtype_name(t.dtype))
                                          for t in (*outputs, *in_place)], "error": None}
    if lane is not None:
        result["compile"] = lane.report()
    return result
