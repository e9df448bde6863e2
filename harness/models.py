"""Model-level checks: a small network with BatchNorm1d/2d/3d, converted to the SUT, trained under DDP.

Rank side (``run_model_case``, called through the pools as ``harness.models:run_model_case``): build ``BnNet``
from the seed, convert every BatchNorm to the SUT (``convert_to_sut``), wrap it in DistributedDataParallel, train
``steps`` SGD steps on the rank's shard of the global batch, and return after each step the rank's loss share, the
parameters and the buffers.

Controller side (``expected_model_run``): the same network with plain BatchNorm trained on the whole global batch
in one process, in float64 (the reference) and in the ranks' dtype (the yardstick, see harness.tolerances).

Loss scaling under DDP: DDP averages gradients over the W ranks, so rank r minimises
    loss_r = W · Σ_{i in shard r} ℓ_i / N          (N: the global batch size)
and the averaged gradient (1/W) Σ_r ∇loss_r = ∇ (Σ_i ℓ_i / N), the gradient of the global mean loss. The global
loss is Σ_r loss_r / W.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .spec import ModelSpec
from .tf32 import tf32_mode

__all__ = ["make_net", "convert_to_sut", "run_model_case", "expected_model_run", "INPUT_SHAPE"]

INPUT_SHAPE = (3, 2, 4, 4)  # per sample: channels, depth, height, width
LEARNING_RATE = 0.1


def _build_net(momentum: float | None):
    import torch
    from torch import nn

    class BnNet(nn.Module):
        """x (N, 3, 2, 4, 4) -> conv3d -> bn3d -> relu -> pooled (N, 4);  mean over depth -> conv2d -> bn2d -> relu
        -> pooled (N, 5);  concat -> linear -> bn1d -> relu -> linear -> (N, 1)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv3 = nn.Conv3d(3, 4, 3, padding=1)
            self.bn3 = nn.BatchNorm3d(4, momentum=momentum)
            self.conv2 = nn.Conv2d(3, 5, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(5, momentum=momentum)
            self.fc = nn.Linear(9, 6)
            self.bn1 = nn.BatchNorm1d(6, momentum=momentum)
            self.head = nn.Linear(6, 1)

        def forward(self, x):
            branch3 = torch.relu(self.bn3(self.conv3(x))).mean(dim=(2, 3, 4))
            branch2 = torch.relu(self.bn2(self.conv2(x.mean(dim=2)))).mean(dim=(2, 3))
            hidden = torch.relu(self.bn1(self.fc(torch.cat([branch3, branch2], dim=1))))
            return self.head(hidden)

    return BnNet()


def make_net(case: ModelSpec, dtype: str, device: str):
    """The network with the seed's initial weights (drawn in float32, so every dtype starts from the same values)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        net = _build_net(case.momentum)
    return net.to(device=device, dtype=getattr(torch, dtype))


def make_batch(case: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """The global batch (N, 3, 2, 4, 4) and its targets (N, 1), float64, per step: (steps, ...)."""
    rng = np.random.default_rng(np.random.SeedSequence([case.seed, 7]))
    total = sum(case.shard_sizes)
    inputs = 1.0 + 2.0 * rng.standard_normal((case.steps, total, *INPUT_SHAPE))
    targets = rng.standard_normal((case.steps, total, 1))
    return inputs, targets


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
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
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
    from .torch_sut import CpuSyncBatchNorm

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


def _state(net) -> dict[str, np.ndarray]:
    return {name: value.detach().to(device="cpu").double().numpy().copy()
            for name, value in net.state_dict().items()}


def run_model_case(ctx, *, case: dict[str, Any], sut: str, kernels: str | None) -> dict[str, Any]:
    """Train on this rank's shard under DDP; returns {"losses": [loss_r per step], "states": [state per step]}, or
    {"unsupported": reason} when the SUT declares the network's configuration unsupported."""
    from .rank_case import prepare_sut

    spec = ModelSpec.from_dict(case)
    device = ctx.device_for_rank() if spec.device == "cuda" else "cpu"
    factory = prepare_sut(ctx, sut, kernels, spec.device)
    try:
        return _train(ctx, spec, device, sut, factory)
    except Exception as exc:
        if type(exc).__name__ == "Unsupported":  # declared by the SUT (harness.sut.Unsupported)
            return {"unsupported": str(exc) or "declared unsupported"}
        raise


def _train(ctx, spec: ModelSpec, device: str, sut: str, factory) -> dict[str, Any]:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    dtype = getattr(torch, spec.dtype)
    net = _convert(make_net(spec, spec.dtype, device), sut, factory, spec.device)
    wrapper = DistributedDataParallel if spec.device == "cuda" else _cpu_ddp_class()
    ddp = wrapper(net, device_ids=[torch.device(device)] if spec.device == "cuda" else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LEARNING_RATE)
    inputs, targets = make_batch(spec)
    start = sum(spec.shard_sizes[:ctx.rank])
    rows = slice(start, start + spec.shard_sizes[ctx.rank])
    total = sum(spec.shard_sizes)
    losses, states = [], []
    with tf32_mode(spec.tf32):
        for step in range(spec.steps):
            ctx.progress(f"step{step}", "train")
            x = torch.from_numpy(inputs[step, rows]).to(device=device, dtype=dtype)
            target = torch.from_numpy(targets[step, rows]).to(device=device, dtype=dtype)
            optimizer.zero_grad(set_to_none=False)
            loss = ((ddp(x) - target) ** 2).sum() * (spec.world_size / total)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            states.append(_state(net))
    return {"losses": losses, "states": states}


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
        states.append(_state(net))
    return {"losses": losses, "states": states}
