"""Runs one case inside a rank (called through the pool as ``harness.rank_case:run_module_case``).

Imports only torch, numpy and the harness's data and SUT loaders: the controller-side modules stay out of ranks.
Each rank builds its own shard from the case's seed, runs the training steps (forward and backward) and the eval
steps, and returns every quantity as float64 numpy arrays in logical (N, C, ...) order. An exception raised by the
implementation under test is returned as data (with its phase and traceback), so an expected error can be checked
and an unexpected one reported with the rank that raised it.
"""
from __future__ import annotations

import contextlib
import traceback
from typing import Any

import numpy as np

from .data import make_grad_output, make_input, make_params, torch_dtype
from .rank_worker import RankContext
from .spec import CaseSpec

__all__ = ["run_module_case", "run_op", "prepare_sut", "phase_name"]

_MEMORY_FORMATS = {"contiguous": "contiguous_format", "channels_last": "channels_last",
                   "channels_last_3d": "channels_last_3d"}


def phase_name(spec: CaseSpec, phase: int) -> str:
    return f"train{phase}" if phase < spec.steps else f"eval{phase - spec.steps}"


def prepare_sut(ctx: RankContext, sut: str, kernels: str | None, device: str):
    """The SUT factory, with kernel substitutes installed for ``device`` (cached per process)."""
    from . import torch_sut
    from .sut import load_factory, load_module

    key = ("sut", sut, kernels)
    if key not in ctx.cache:
        overrides = torch_sut.load_kernel_overrides(load_module(kernels)) if kernels else None
        ctx.cache[key] = (load_factory(sut), overrides)
    factory, overrides = ctx.cache[key]
    # The kernel table is per process and cases of different runs may share the process: set it every time.
    if device == "cpu":
        torch_sut.install_cpu_kernels(overrides)
    else:
        torch_sut.install_device_kernels(overrides, device="CUDA")
    return factory


def _to_numpy(tensor) -> np.ndarray:
    import torch

    return tensor.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy().copy()


def _tensor(array: np.ndarray, dtype: str, device: str, layout: str = "contiguous"):
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(torch_dtype(dtype))
    tensor = tensor.to(device).contiguous(memory_format=getattr(torch, _MEMORY_FORMATS[layout]))
    return tensor


def _error(phase: str, stage: str, exc: BaseException) -> dict[str, Any]:
    return {"phase": phase, "stage": stage, "type": type(exc).__name__, "message": str(exc),
            "traceback": traceback.format_exc()}


def run_module_case(ctx: RankContext, *, spec: dict[str, Any], sut: str, kernels: str | None) -> dict[str, Any]:
    """Run the case on this rank; returns ``{"phases": [...], "error": None | {...}}``."""
    import torch

    case = CaseSpec.from_dict(spec)
    device = ctx.device_for_rank() if case.device == "cuda" else "cpu"
    factory = prepare_sut(ctx, sut, kernels, case.device)
    # new_group is collective: every rank creates every group, in the same order.
    groups = [ctx.process_group(g) for g in case.rank_groups]
    mine = next(i for i, g in enumerate(case.rank_groups) if ctx.rank in g)
    process_group = None if case.groups is None else groups[mine]
    params = make_params(case)
    param_dtype = torch_dtype(case.effective_param_dtype)
    result: dict[str, Any] = {"phases": [], "error": None}
    try:
        module = factory(case.channels, eps=case.eps, momentum=case.momentum, affine=case.affine,
                         track_running_stats=case.track_running_stats, process_group=process_group,
                         device=torch.device(device), dtype=param_dtype)
        with torch.no_grad():
            if case.affine:
                module.weight.copy_(torch.from_numpy(params.weight))
                module.bias.copy_(torch.from_numpy(params.bias))
            if case.track_running_stats:
                module.running_mean.copy_(torch.from_numpy(params.running_mean))
                module.running_var.copy_(torch.from_numpy(params.running_var))
                module.num_batches_tracked.fill_(params.num_batches_tracked)
    except Exception as exc:  # noqa: BLE001 - the SUT's error, reported with this rank
        result["error"] = _error("setup", "construct", exc)
        return result
    for phase in range(case.steps + case.eval_steps):
        name = phase_name(case, phase)
        module.train(phase < case.steps)
        x = _tensor(make_input(case, phase, ctx.rank, params), case.dtype, device, case.layout).requires_grad_(True)
        autocast = torch.autocast(device_type="cuda") if case.autocast else contextlib.nullcontext()
        try:
            with autocast:
                y = module(x)
        except Exception as exc:  # noqa: BLE001
            result["error"] = _error(name, "forward", exc)
            break
        record: dict[str, Any] = {"phase": name, "output": _to_numpy(y), "output_dtype": str(y.dtype)[6:]}
        grad = _tensor(make_grad_output(case, phase, ctx.rank), str(y.dtype)[6:], device)
        try:
            y.backward(grad)
        except Exception as exc:  # noqa: BLE001
            result["error"] = _error(name, "backward", exc)
            break
        # A rank whose shard is empty may report no gradient (None); that counts as zeros.
        record["grad_input"] = _to_numpy(x.grad) if x.grad is not None else np.zeros(x.shape)
        record["grad_input_none"] = x.grad is None
        if case.affine:
            for key, param in (("grad_weight", module.weight), ("grad_bias", module.bias)):
                record[key] = _to_numpy(param.grad) if param.grad is not None else np.zeros(case.channels)
                record[key + "_dtype"] = str(param.dtype)[6:]
        if case.track_running_stats:
            record["running_mean"] = _to_numpy(module.running_mean)
            record["running_var"] = _to_numpy(module.running_var)
            record["num_batches_tracked"] = int(module.num_batches_tracked.item())
        module.zero_grad(set_to_none=True)
        result["phases"].append(record)
    return result


def run_op(ctx: RankContext, *, op: str, args: list[Any], device: str, kernels: str | None) -> list[Any]:
    """Call ``torch.<op>(*args)`` on this rank's device; ``args`` items are ``("tensor", array, dtype, layout)``
    or plain values. Returns each output as a float64 array (None stays None)."""
    import torch

    prepare_sut(ctx, "torch", kernels, device)
    dev = ctx.device_for_rank() if device == "cuda" else "cpu"
    call_args = [_tensor(a[1], a[2], dev, a[3]) if isinstance(a, tuple) and a and a[0] == "tensor" else a
                 for a in args]
    outputs = getattr(torch, op)(*call_args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    # In-place results (gather updates running_mean / running_var) come back after the op's own outputs.
    in_place = [call_args[i] for i in (3, 4)] if op == "batch_norm_gather_stats_with_counts" else []
    return [None if t is None else (_to_numpy(t), str(t.dtype)[6:]) for t in (*outputs, *in_place)]
