"""The module kind's rank entry: one SyncBatchNorm layer on this rank (harness.kinds registers ``run``).

Each rank builds its own shard from the case's seed, runs the phases in the case's order (``ModuleSpec.phases``:
training steps, forward and backward, and eval steps; no backward for a no-grad case, whose forwards run under
torch.no_grad()), and returns, per phase, every quantity of harness.quantities that it reads (``source``), as
float64 numpy arrays in logical (N, C, ...) order. An exception raised by the implementation under test is
returned as data (harness.errors.RankError, with its phase and traceback), so an expected error can be checked and
an unexpected one reported with the rank that raised it; a configuration the SUT declares unsupported
(harness.sut.Unsupported) is returned as such. A factory result that breaks the contract (not a torch.nn.Module,
or without the parameters and buffers the case reads) is one TypeError naming the contract.

grad_output is the one the case defines (drawn from the seed, rounded to the case's dtype), whatever dtype the
SUT's output has: it is converted to the output's dtype exactly (or rounded, if the output is narrower), so a
wrong output dtype is one dtype failure, not a cascade of gradient failures.
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ..data import dtype_name, make_grad_output, make_input, make_params, to_numpy, to_tensor, torch_dtype
from ..errors import RankError
from ..options import RankOptions
from ..quantities import MODULE_QUANTITIES
from ..spec import ModuleSpec
from ..sut import module_problem
from . import compiled
from .audit import audit_of_case
from .prepare import declaration, implementation
from .worker import RankContext

__all__ = ["run"]


def _observe(source: str, case: ModuleSpec, x, y, module) -> Any:
    """One quantity as this rank sees it after a phase (``source``: harness.quantities)."""
    if source == "output":
        return to_numpy(y)
    if source == "output.dtype":
        return dtype_name(y.dtype)
    if source == "input.grad":  # a rank whose shard is empty may report no gradient (None): zeros
        return to_numpy(x.grad) if x.grad is not None else np.zeros(x.shape)
    if source in ("weight.grad", "bias.grad", "weight.grad.dtype", "bias.grad.dtype"):
        param = getattr(module, source.split(".")[0])
        if source.endswith(".dtype"):  # no gradient (an empty shard): it counts as zeros of the parameter's dtype
            return dtype_name(param.grad.dtype if param.grad is not None else param.dtype)
        return to_numpy(param.grad) if param.grad is not None else np.zeros(case.channels)
    if source in ("running_mean", "running_var"):
        return to_numpy(getattr(module, source))
    if source == "num_batches_tracked":
        return int(module.num_batches_tracked.item())
    raise KeyError(f"source={source!r}: harness.rank.module does not know how to read it")


def _unsupported(exc: Exception, result: dict[str, Any]) -> bool:
    """Whether ``exc`` declares the configuration unsupported (then noted in ``result``)."""
    declared = declaration(exc)
    if declared is not None:
        result.update(declared)
    return declared is not None


def run(ctx: RankContext, *, spec: dict[str, Any], options: RankOptions) -> dict[str, Any]:
    """Run the case on this rank; returns ``{"phases": [{quantity: value}], "error": RankError | None,
    "unsupported": reason | None, "collectives": [the collectives the SUT issued: harness.rank.audit]}``, with
    --compile also ``"compile"``: what compiling took (harness.rank.compiled)."""
    case = ModuleSpec.from_dict(spec)
    device = ctx.device_for_rank() if case.device == "cuda" else "cpu"
    ctx.progress("setup", "load")
    factory = implementation(ctx, options, case.device)
    # new_group is collective: every rank creates every group, in the same order.
    groups = [ctx.process_group(g) for g in case.rank_groups]
    mine = next(i for i, g in enumerate(case.rank_groups) if ctx.rank in g)
    process_group = None if case.groups is None else groups[mine]
    result: dict[str, Any] = {"phases": [], "error": None, "unsupported": None}
    lane = compiled.lane(options)  # --compile: the module runs under torch.compile (harness.rank.compiled)
    with audit_of_case(ctx, compiled=lane is not None) as audit:  # from the SUT's construction to its last phase
        _run_layer(ctx, case, factory, process_group, device, result, lane)
    result["collectives"] = audit.log
    return result


def _run_layer(ctx: RankContext, case: ModuleSpec, factory, process_group, device: str, result: dict[str, Any],
               lane: compiled.CompiledLane | None) -> None:
    """Construct the SUT's layer, then run every phase (under ``lane``'s torch.compile, if any); fills ``result``
    (phases, error, unsupported, compile)."""
    import torch

    params = make_params(case)
    quantities = [q for q in MODULE_QUANTITIES if q.source and q.applies(case)]
    try:
        ctx.progress("setup", "construct")
        module = factory(case.channels, eps=case.eps, momentum=case.momentum, affine=case.affine,
                         track_running_stats=case.track_running_stats, process_group=process_group,
                         device=torch.device(device), dtype=torch_dtype(case.effective_param_dtype))
        problem = module_problem(module, affine=case.affine, track_running_stats=case.track_running_stats)
        if problem:
            raise TypeError(problem)
        with torch.no_grad():
            if case.affine:
                module.weight.copy_(torch.from_numpy(params.weight))
                module.bias.copy_(torch.from_numpy(params.bias))
            if case.track_running_stats:
                module.running_mean.copy_(torch.from_numpy(params.running_mean))
                module.running_var.copy_(torch.from_numpy(params.running_var))
                module.num_batches_tracked.fill_(params.num_batches_tracked)
        if case.frozen_affine:  # fine-tuning with a frozen normalisation layer: no parameter gradients
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)
    except Exception as exc:  # noqa: BLE001 - the SUT's error, reported with this rank
        if _unsupported(exc, result):
            return
        result["error"] = RankError.from_exception("setup", "construct", exc)
        return
    forward = module
    if lane is not None:
        lane.start(ctx)
        forward = lane.compile(module)
    for phase, (name, training) in enumerate(case.phases):
        module.train(training)
        x = to_tensor(make_input(case, phase, ctx.rank, params), case.dtype, device, case.layout)
        x.requires_grad_(case.input_gradients)
        autocast = torch.autocast(device_type="cuda") if case.autocast else contextlib.nullcontext()
        # no_grad: a training-mode forward under torch.no_grad() (precise-BN), nothing runs backward
        grad_mode = torch.no_grad() if case.no_grad else contextlib.nullcontext()
        try:
            ctx.progress(name, "forward")
            with autocast, grad_mode:
                y = forward(x)
        except Exception as exc:  # noqa: BLE001
            error = compiled.rank_error(lane, name, "forward", exc)
            if error.stage != compiled.COMPILE_STAGE and _unsupported(exc, result):
                break
            result["error"] = error
            break
        try:
            if case.input_gradients:
                ctx.progress(name, "backward")
                # The case's grad_output in the case's dtype, then in the output's dtype (torch requires it to match).
                y.backward(to_tensor(make_grad_output(case, phase, ctx.rank), case.dtype, device).to(y.dtype))
        except Exception as exc:  # noqa: BLE001
            result["error"] = compiled.rank_error(lane, name, "backward", exc)
            break
        record = {q.name: _observe(q.source, case, x, y, module) for q in quantities}
        record["phase"] = name
        module.zero_grad(set_to_none=True)
        result["phases"].append(record)
    result.update(compiled.report(lane))
    ctx.progress("done", "")

