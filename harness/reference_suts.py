"""Correct SyncBatchNorms written independently of PyTorch's kernels: what the self-test must pass, and the base
every mutant of harness.mutants changes in exactly one hook.

- ``AllReduceSyncBN``: per-channel (count, sum) all-reduced for the global mean, then the Chan term
  M2_r + n_r·(mean_r - mean)² all-reduced for the global M2; backward all-reduces (sum_dy, sum_dy_xmu).
- ``GatherSyncBN``: (count, mean, M2) of every rank all-gathered and combined pairwise (Chan) in rank order;
  backward all-gathers (sum_dy, sum_dy_xmu) and sums them in rank order.

Both accumulate in float64, take part in every collective with an empty shard, raise the "Expected more than 1
value per channel" ValueError on every rank of the group (after communicating) when the global count is 1, leave
the running statistics alone when every shard is empty, and return the parameter gradients as this rank's LOCAL
share (the harness sums them over ranks, like DDP). Their hooks (``_local_stats``, ``_combine``, ...) are where a
mutant puts its one bug.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["AllReduceSyncBN", "GatherSyncBN", "TOO_FEW_VALUES", "F64", "dims", "per_channel"]

TOO_FEW_VALUES = "Expected more than 1 value per channel when training, got input size {}"
F64 = torch.float64


def dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


class _SyncBNFunction(torch.autograd.Function):
    """Batch-statistics normalisation; ``module`` supplies the statistics and the cross-rank reductions."""

    @staticmethod
    def forward(ctx, x, weight, bias, module, sync):  # type: ignore[override]
        xd = x.detach().to(F64)
        total, mean, m2, local_count = module._batch_stats(x, sync)
        module._check_count(total, x)
        if module.training and module.track_running_stats:
            module._update_running(total, mean, m2, local_count)
        ctx.module, ctx.sync, ctx.total = module, sync, float(total)
        ctx.x_dtype = x.dtype
        if total == 0:
            ctx.save_for_backward(xd, None, None, weight)
            return torch.empty_like(x)
        invstd = module._invstd(m2 / total)
        w = weight.detach().to(F64) if weight is not None else None
        b = bias.detach().to(F64) if bias is not None else None
        y = module._normalize(xd, mean, invstd, w, b).to(x.dtype)
        ctx.save_for_backward(xd, mean, invstd, weight)
        return module._postprocess(y)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        xd, mean, invstd, weight = ctx.saved_tensors
        module = ctx.module
        g = grad_y.to(F64)
        axes = dims(xd)
        channels = xd.shape[1]
        if mean is None:  # every shard empty: still take part in the reduction
            zeros = torch.zeros(channels, dtype=F64)
            module._reduce_backward(zeros, zeros, ctx.sync)
            dw = torch.zeros_like(weight) if weight is not None else None
            return torch.zeros_like(grad_y), dw, (torch.zeros_like(weight) if weight is not None else None), \
                None, None
        xmu = xd - per_channel(mean, xd)
        local_dy = g.sum(axes) if g.numel() else torch.zeros(channels, dtype=F64)
        local_dy_xmu = (g * xmu).sum(axes) if g.numel() else torch.zeros(channels, dtype=F64)
        sum_dy, sum_dy_xmu = module._reduce_backward(local_dy, local_dy_xmu, ctx.sync)
        w = weight.detach().to(F64) if weight is not None else torch.ones(channels, dtype=F64)
        n = ctx.total
        grad_x = module._grad_input(g, xmu, invstd, w, sum_dy, sum_dy_xmu, n).to(ctx.x_dtype)
        grad_w = grad_b = None
        if weight is not None:
            dw, db = module._param_grads(local_dy, local_dy_xmu, invstd, ctx.sync)
            grad_w, grad_b = dw.to(weight.dtype), db.to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None


class AllReduceSyncBN(nn.Module):
    """Correct SyncBatchNorm: all_reduce of (count, sum), then of the Chan terms M2_r + n_r·(mean_r - mean)²."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats, self.process_group = affine, track_running_stats, process_group
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _group(self):
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def _group_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self._group())

    def _use_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def _sync(self) -> bool:
        """Communicate only in training (eval without running statistics uses LOCAL batch statistics)."""
        return self.training and self._group_size() > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected input (N, {self.num_features}, *), got {tuple(x.shape)}")
        if not self._use_batch_stats():
            invstd = self._invstd(self.running_var.to(F64))
            w = self.weight.to(F64) if self.affine else None
            b = self.bias.to(F64) if self.affine else None
            return self._normalize(x.to(F64), self.running_mean.to(F64), invstd, w, b).to(x.dtype)
        return _SyncBNFunction.apply(x, self.weight, self.bias, self, self._sync())

    # -- hooks (a mutant overrides one) -------------------------------------------------------------------------
    def _local_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(count, mean, M2) of this shard, float64 per channel; an empty shard gives (0, 0, 0)."""
        xd = x.detach().to(F64)
        channels = xd.shape[1]
        count = xd.numel() // channels
        if count == 0:
            zeros = torch.zeros(channels, dtype=F64)
            return zeros.clone(), zeros.clone(), zeros.clone()
        mean = xd.mean(dims(xd))
        m2 = ((xd - per_channel(mean, xd)) ** 2).sum(dims(xd))
        return torch.full((channels,), float(count), dtype=F64), mean, m2

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the group, in place; every all_reduce of this implementation goes through here."""
        dist.all_reduce(tensor, group=self._group())
        return tensor

    def _combine(self, count, mean, m2):
        count_sum = self._all_reduce(torch.stack([count, count * mean]))
        total = count_sum[0]
        global_mean = torch.where(total > 0, count_sum[1] / total.clamp(min=1), torch.zeros_like(total))
        chan = self._all_reduce(m2 + count * (mean - global_mean) ** 2)
        return total, global_mean, chan

    def _batch_stats(self, x: torch.Tensor, sync: bool):
        """(global count, mean, M2, local count); the count is a python float (same for every channel)."""
        count, mean, m2 = self._local_stats(x)
        local = float(count[0])
        if sync:
            count, mean, m2 = self._combine(count, mean, m2)
        return float(count[0]), mean, m2, local

    def _check_count(self, total: float, x: torch.Tensor) -> None:
        """Raised on every rank of the group alike: each one sees the same global count."""
        if total == 1:
            raise ValueError(TOO_FEW_VALUES.format(list(x.shape)))

    def _factor(self) -> float:
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _unbiased_var(self, total: float, m2: torch.Tensor, local_count: float) -> torch.Tensor:
        return m2 / (total - 1)

    def _update_running(self, total: float, mean, m2, local_count: float) -> None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            if total == 0:
                return
            factor = self._factor()
            var = self._unbiased_var(total, m2, local_count)
            self.running_mean.copy_((1 - factor) * self.running_mean.to(F64) + factor * mean)
            self.running_var.copy_((1 - factor) * self.running_var.to(F64) + factor * var)

    def _invstd(self, var: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(var + self.eps)

    def _normalize(self, xd, mean, invstd, weight, bias) -> torch.Tensor:
        y = (xd - per_channel(mean, xd)) * per_channel(invstd, xd)
        if weight is not None:
            y = y * per_channel(weight, xd) + per_channel(bias, xd)
        return y

    def _postprocess(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def _reduce_backward(self, sum_dy, sum_dy_xmu, sync: bool):
        if not sync:
            return sum_dy, sum_dy_xmu
        both = self._all_reduce(torch.stack([sum_dy, sum_dy_xmu]))
        return both[0], both[1]

    def _grad_input(self, g, xmu, invstd, weight, sum_dy, sum_dy_xmu, n: float) -> torch.Tensor:
        inv = per_channel(invstd, g)
        return (g - per_channel(sum_dy / n, g) - xmu * inv**2 * per_channel(sum_dy_xmu / n, g)) \
            * per_channel(weight, g) * inv

    def _param_grads(self, local_dy, local_dy_xmu, invstd, sync: bool):
        """This rank's LOCAL share: the harness (like DDP) sums the shares over ranks."""
        return local_dy_xmu * invstd, local_dy


class GatherSyncBN(AllReduceSyncBN):
    """Correct SyncBatchNorm: all_gather of every rank's (count, mean, M2), combined pairwise (Chan) in rank order;
    backward all_gathers (sum_dy, sum_dy_xmu) and sums them in rank order."""

    def _gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        group = self._group()
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(out, tensor.contiguous(), group=group)
        return out

    def _combine(self, count, mean, m2):
        total, running_mean, running_m2 = torch.zeros_like(count), torch.zeros_like(mean), torch.zeros_like(m2)
        for stats in self._gather(torch.stack([count, mean, m2])):
            n_b, mean_b, m2_b = stats
            if float(n_b[0]) == 0:
                continue
            n_ab = total + n_b
            delta = mean_b - running_mean
            running_mean = running_mean + delta * n_b / n_ab
            running_m2 = running_m2 + m2_b + delta**2 * total * n_b / n_ab
            total = n_ab
        return total, running_mean, running_m2

    def _reduce_backward(self, sum_dy, sum_dy_xmu, sync: bool):
        if not sync:
            return sum_dy, sum_dy_xmu
        gathered = self._gather(torch.stack([sum_dy, sum_dy_xmu]))
        both = torch.stack(gathered).sum(0)
        return both[0], both[1]
