"""PyTorch's own SyncBatchNorm as a system under test, runnable on CPU over gloo.

On CPU, ``torch.nn.SyncBatchNorm.forward`` refuses to train and the five ops behind it have CUDA kernels only.
``harness.cpu_kernels`` registers CPU kernels for the ops (following the CUDA kernels; see its docstring for where
they do and do not match CUDA, and ``HARNESS_KERNEL_BEHAVIOURS``), so that the REAL autograd Function
``torch.nn.modules._functions.SyncBatchNorm`` runs on CPU. This module adds ``CpuSyncBatchNorm``, a mirror of
``SyncBatchNorm.forward`` minus its device check, and ``torch_factory``, the SUT factory.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

from .kernel_table import active_overrides, install_cpu_kernels

__all__ = ["CpuSyncBatchNorm", "torch_factory"]


class CpuSyncBatchNorm(torch.nn.SyncBatchNorm):
    """torch.nn.SyncBatchNorm whose forward also synchronises CPU tensors (needs ``install_cpu_kernels``)."""

    def forward(self, input: Tensor) -> Tensor:
        # Mirrors torch/nn/modules/batchnorm.py, SyncBatchNorm.forward (torch 2.13.0, lines 790-887) line by line,
        # minus the device-type check of lines 845-854 ("SyncBatchNorm expected input tensor to be on GPU ...").
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)

        if self.momentum is None:
            exponential_average_factor = 0.0
        else:
            exponential_average_factor = self.momentum

        if self.training and self.track_running_stats:
            if self.num_batches_tracked is None:
                raise AssertionError("num_batches_tracked must not be None")
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # use cumulative moving average
                exponential_average_factor = 1.0 / self.num_batches_tracked.item()
            else:  # use exponential moving average
                exponential_average_factor = self.momentum

        if self.training:
            bn_training = True
        else:
            bn_training = (self.running_mean is None) and (self.running_var is None)

        running_mean = self.running_mean if not self.training or self.track_running_stats else None
        running_var = self.running_var if not self.training or self.track_running_stats else None

        # Don't sync batchnorm stats in inference mode (model.eval()).
        need_sync = bn_training and self.training and dist.is_available() and dist.is_initialized()
        if need_sync:
            # (upstream's device-type check stood here)
            process_group = dist.group.WORLD
            if self.process_group:
                process_group = self.process_group
            world_size = dist.get_world_size(process_group)
            need_sync = world_size > 1

        # fallback to framework BN when synchronization is not necessary
        if not need_sync:
            return F.batch_norm(
                input,
                running_mean,
                running_var,
                self.weight,
                self.bias,
                bn_training,
                exponential_average_factor,
                self.eps,
            )
        else:
            if not bn_training:
                raise AssertionError("bn_training must be True")
            return SyncBatchNormFunction.apply(
                input,
                self.weight,
                self.bias,
                running_mean,
                running_var,
                self.eps,
                exponential_average_factor,
                process_group,
                world_size,
            )

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module, process_group: Any = None) -> torch.nn.Module:
        """Upstream's conversion (which always builds torch.nn.SyncBatchNorm), with every layer it made turned
        into this class (same state, only the forward differs)."""
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
        for layer in converted.modules():
            if type(layer) is torch.nn.SyncBatchNorm:
                layer.__class__ = cls
        return converted


def torch_factory(
    num_features: int,
    *,
    eps: float,
    momentum: float | None,
    affine: bool,
    track_running_stats: bool,
    process_group: Any,
    device: torch.device | str,
    dtype: torch.dtype | None,
) -> torch.nn.Module:
    """PyTorch's SyncBatchNorm on ``device``: the unmodified torch.nn.SyncBatchNorm on CUDA, CpuSyncBatchNorm
    with the CPU kernels installed (keeping any overrides already installed) on CPU."""
    device = torch.device(device)
    options = dict(
        eps=eps,
        momentum=momentum,
        affine=affine,
        track_running_stats=track_running_stats,
        process_group=process_group,
    )
    if device.type == "cuda":
        module: torch.nn.Module = torch.nn.SyncBatchNorm(num_features, **options)
    elif device.type == "cpu":
        install_cpu_kernels(active_overrides())
        module = CpuSyncBatchNorm(num_features, **options)
    else:
        raise ValueError(f"device={str(device)!r} is not supported: use 'cpu' or 'cuda'")
    return module.to(device) if dtype is None else module.to(device, dtype)
