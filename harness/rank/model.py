"""The model kind's rank entry: a network with BatchNorm1d/2d/3d converted to the SUT, trained under DDP on this rank's
shard of the global batch (harness.kinds registers ``run``; the network is harness.nets').

``run`` builds the network from the seed, converts every BatchNorm to the SUT (``convert_to_sut``; torch's own
conversion for the torch SUT), wraps it in DistributedDataParallel (and that under torch.compile with ``--compile``,
as users compile a DDP model: harness.rank.compiled), trains ``steps`` SGD steps and returns after each step the
rank's loss share, the parameters and the buffers.
"""
from __future__ import annotations

from typing import Any, Callable

from ..nets import LEARNING_RATE, make_batch, make_net, state_of
from ..options import RankOptions
from ..spec import ModelSpec
from ..tf32 import tf32_mode
from . import compiled
from .audit import audit_of_case
from .prepare import declaration, implementation
from .worker import RankContext

__all__ = ["run", "convert_to_sut", "MODEL_CONTRACT"]

# What model cases require of a SUT beyond the factory contract (README, "Plugging in an implementation").
MODEL_CONTRACT = ("model cases convert a network's BatchNorm layers to the SUT as convert_sync_batchnorm does: the "
                  "module the factory returns must accept its weight and bias (Parameters), running_mean, running_var "
                  "and num_batches_tracked (buffers) being replaced by the network's own, and train()/eval()")


def convert_to_sut(module, factory: Callable[..., Any], process_group: Any = None):
    """Swap every _BatchNorm in ``module`` (recursively; InstanceNorm is not one) for ``factory(...)`` built with
    the layer's options, sharing weight, bias and buffers and keeping requires_grad, training and qconfig: the
    conversion convert_sync_batchnorm does, onto any implementation under test."""
    import torch

    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        reference = module.weight if module.weight is not None else module.running_mean
        converted = factory(module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine,
                            track_running_stats=module.track_running_stats, process_group=process_group,
                            device=reference.device if reference is not None else torch.device("cpu"),
                            dtype=reference.dtype if reference is not None else None)
        shared = (["weight", "bias"] if module.affine else []) + ["running_mean", "running_var",
                                                                 "num_batches_tracked"]
        try:
            with torch.no_grad():
                for name in shared:
                    setattr(converted, name, getattr(module, name))
            converted.training = module.training
        except Exception as exc:  # noqa: BLE001 - the SUT's module refused the model kind's contract
            raise TypeError(f"{MODEL_CONTRACT}; setting {name} on the {type(converted).__name__} the factory "
                            f"returned raised {type(exc).__name__}: {exc}") from exc
        if hasattr(module, "qconfig"):
            converted.qconfig = module.qconfig
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_to_sut(child, factory, process_group))
    return module


def _convert(net, sut: str, factory, device: str):
    import torch

    if sut != "torch":
        return convert_to_sut(net, factory)
    if device == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    from ..torch_sut import CpuSyncBatchNorm

    return CpuSyncBatchNorm.convert_sync_batchnorm(net)


def _cpu_ddp_class():
    """DistributedDataParallel minus its refusal of SyncBatchNorm layers on CPU ("SyncBatchNorm layers only work
    with GPU modules", torch/nn/parallel/distributed.py, _passing_sync_batchnorm_handle): the same kind of device
    check CpuSyncBatchNorm drops, and nothing else in that method. Everything DDP does otherwise is unchanged."""
    from torch.nn.parallel import DistributedDataParallel

    class CpuDistributedDataParallel(DistributedDataParallel):
        def _passing_sync_batchnorm_handle(self, module) -> None:
            if self.device_type != "cpu":
                super()._passing_sync_batchnorm_handle(module)

    return CpuDistributedDataParallel


def _audit_gradient_reduction(ddp, ctx: RankContext) -> None:
    """DDP reduces gradients with torch's allreduce_hook, the Python twin of its built-in reduction ("DDP results is
    expected to be same as the case where no hook was registered"), so that the collective audit sees DDP's
    communication too, marked as DDP's (not the SUT's cost): a rank waiting in DDP's reduction while the others wait
    in the SUT's collective is then a visible mismatch, not a silent hang."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    audit = ctx.collectives

    def hook(state, bucket):
        with audit.issued_by("ddp"):
            return default_hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, hook)


def run(ctx: RankContext, *, spec: dict[str, Any], options: RankOptions) -> dict[str, Any]:
    """Train on this rank's shard under DDP; returns {"losses": [loss_r per step], "states": [state per step],
    "collectives": [the collectives the SUT issued: harness.rank.audit]}, {"unsupported": reason} when the SUT
    declares the network's configuration unsupported, or {"error": RankError, "collectives": [...]} when the SUT
    raised (while being converted, in a forward or a backward): the implementation's error, reported with this rank
    and where it happened, not the harness's (at stage "compile" when torch.compile failed); with --compile also
    {"compile": what compiling took}."""
    case = ModelSpec.from_dict(spec)
    device = ctx.device_for_rank() if case.device == "cuda" else "cpu"
    factory = implementation(ctx, options, case.device)
    lane = compiled.lane(options)
    audit = audit_of_case(ctx, compiled=lane is not None)
    try:
        with audit:  # the conversion, DDP's construction and every step
            result = _train(ctx, case, device, options.sut, factory, lane)
    except Exception as exc:  # noqa: BLE001 - the SUT's (or DDP's, or the compiled code's on its behalf): as data
        error = compiled.rank_error(lane, *ctx.position, exc)
        declared = declaration(exc) if error.stage != compiled.COMPILE_STAGE else None
        if declared is not None:
            return declared
        return {"error": error, "collectives": audit.log, **compiled.report(lane)}
    return {**result, "collectives": audit.log, **compiled.report(lane)}


def _train(ctx: RankContext, spec: ModelSpec, device: str, sut: str, factory, lane) -> dict[str, Any]:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    dtype = getattr(torch, spec.dtype)
    ctx.progress("setup", "convert")
    net = _convert(make_net(spec, spec.dtype, device), sut, factory, spec.device)
    ctx.progress("setup", "DistributedDataParallel")
    wrapper = DistributedDataParallel if spec.device == "cuda" else _cpu_ddp_class()
    ddp = wrapper(net, device_ids=[torch.device(device)] if spec.device == "cuda" else None)
    if ctx.collectives is not None:  # no audit under --compile: DDP keeps its built-in reduction
        _audit_gradient_reduction(ddp, ctx)
    model = ddp
    if lane is not None:
        lane.start(ctx)
        model = lane.compile(ddp)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LEARNING_RATE)
    inputs, targets = make_batch(spec)
    start = sum(spec.shard_sizes[:ctx.rank])
    rows = slice(start, start + spec.shard_sizes[ctx.rank])
    total = sum(spec.shard_sizes)
    losses, states = [], []
    with tf32_mode(spec.tf32):
        for step in range(spec.steps):
            ctx.progress(f"step{step}", "forward")
            x = torch.from_numpy(inputs[step, rows]).to(device=device, dtype=dtype)
            target = torch.from_numpy(targets[step, rows]).to(device=device, dtype=dtype)
            optimizer.zero_grad(set_to_none=False)
            loss = ((model(x) - target) ** 2).sum() * (spec.world_size / total)
            ctx.progress(f"step{step}", "backward")
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            states.append(state_of(net))
    return {"losses": losses, "states": states}
