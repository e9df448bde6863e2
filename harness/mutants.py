"""Independent correct SyncBatchNorms and deliberately broken ones (mutants), for the harness's self-test.

Every name in ``CORRECT`` and ``MUTANTS`` is a factory obeying the SUT contract (harness.sut), usable as
``--sut harness.mutants:<name>``. The correct ones share no code with PyTorch's kernels:

- ``allreduce_syncbn``: per-channel (count, sum) all-reduced for the global mean, then the Chan term
  M2_r + n_r·(mean_r - mean)² all-reduced for the global M2; backward all-reduces (sum_dy, sum_dy_xmu).
- ``gather_syncbn``: (count, mean, M2) of every rank all-gathered and combined pairwise (Chan) in rank order;
  backward all-gathers (sum_dy, sum_dy_xmu) and sums them in rank order.

Both accumulate in float64, take part in every collective with an empty shard, raise the "Expected more than 1
value per channel" ValueError on every rank of the group (after communicating) when the global count is 1, leave
the running statistics alone when every shard is empty, and return the parameter gradients as this rank's LOCAL
share (the harness sums them over ranks, like DDP).

Each mutant is a small subclass of one correct implementation overriding one hook, so its bug is the only
difference. ``MUTANTS`` maps each name to its bug class; ``HANGING`` names those that deadlock by design.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["CORRECT", "MUTANTS", "HANGING", "AllReduceSyncBN", "GatherSyncBN"]

TOO_FEW_VALUES = "Expected more than 1 value per channel when training, got input size {}"
F64 = torch.float64


def _dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
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
        dims = _dims(xd)
        channels = xd.shape[1]
        if mean is None:  # every shard empty: still take part in the reduction
            zeros = torch.zeros(channels, dtype=F64)
            module._reduce_backward(zeros, zeros, ctx.sync)
            dw = torch.zeros_like(weight) if weight is not None else None
            return torch.zeros_like(grad_y), dw, (torch.zeros_like(weight) if weight is not None else None), \
                None, None
        xmu = xd - _per_channel(mean, xd)
        local_dy = g.sum(dims) if g.numel() else torch.zeros(channels, dtype=F64)
        local_dy_xmu = (g * xmu).sum(dims) if g.numel() else torch.zeros(channels, dtype=F64)
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
        mean = xd.mean(_dims(xd))
        m2 = ((xd - _per_channel(mean, xd)) ** 2).sum(_dims(xd))
        return torch.full((channels,), float(count), dtype=F64), mean, m2

    def _combine(self, count, mean, m2):
        group = self._group()
        count_sum = torch.stack([count, count * mean])
        dist.all_reduce(count_sum, group=group)
        total = count_sum[0]
        global_mean = torch.where(total > 0, count_sum[1] / total.clamp(min=1), torch.zeros_like(total))
        chan = m2 + count * (mean - global_mean) ** 2
        dist.all_reduce(chan, group=group)
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
        y = (xd - _per_channel(mean, xd)) * _per_channel(invstd, xd)
        if weight is not None:
            y = y * _per_channel(weight, xd) + _per_channel(bias, xd)
        return y

    def _postprocess(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def _reduce_backward(self, sum_dy, sum_dy_xmu, sync: bool):
        if not sync:
            return sum_dy, sum_dy_xmu
        both = torch.stack([sum_dy, sum_dy_xmu])
        dist.all_reduce(both, group=self._group())
        return both[0], both[1]

    def _grad_input(self, g, xmu, invstd, weight, sum_dy, sum_dy_xmu, n: float) -> torch.Tensor:
        inv = _per_channel(invstd, g)
        return (g - _per_channel(sum_dy / n, g) - xmu * inv**2 * _per_channel(sum_dy_xmu / n, g)) \
            * _per_channel(weight, g) * inv

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


# -- mutants: one bug each ----------------------------------------------------------------------------------------
class NoSync(AllReduceSyncBN):
    """No synchronisation at all: every rank normalises with its own batch statistics (plain BatchNorm)."""

    def _sync(self) -> bool:
        return False


class MeanOfMeans(GatherSyncBN):
    """Per-rank means and variances averaged over ranks without their counts."""

    def _combine(self, count, mean, m2):
        gathered = self._gather(torch.stack([count, mean, m2]))
        counts = torch.stack([s[0] for s in gathered])
        total = counts.sum(0)
        global_mean = torch.stack([s[1] for s in gathered]).mean(0)
        variances = torch.stack([s[2] / s[0].clamp(min=1) for s in gathered]).mean(0)
        return total, global_mean, variances * total


class BiasedRunningVar(AllReduceSyncBN):
    """running_var fed the biased batch variance M2/n instead of M2/(n-1)."""

    def _unbiased_var(self, total, m2, local_count):
        return m2 / total


class UnbiasedLocalN(AllReduceSyncBN):
    """running_var made unbiased with this rank's local count n_r instead of the global n."""

    def _unbiased_var(self, total, m2, local_count):
        return m2 / total * local_count / max(local_count - 1, 1)


class NoBackwardAllReduce(AllReduceSyncBN):
    """Backward uses this rank's sum_dy / sum_dy_xmu only (no all_reduce), with the global count."""

    def _reduce_backward(self, sum_dy, sum_dy_xmu, sync):
        return sum_dy, sum_dy_xmu


class AssumesEvenShards(AllReduceSyncBN):
    """Global count taken as world_size · local count (assumes even shards), means weighted accordingly."""

    def _combine(self, count, mean, m2):
        total, global_mean, chan = super()._combine(count, mean, m2)
        fake_total = count * self._group_size()
        return fake_total, total * global_mean / fake_total.clamp(min=1), chan


class MomentumSwapped(AllReduceSyncBN):
    """running = momentum·running + (1 - momentum)·batch (the two weights swapped)."""

    def _factor(self):
        return 1.0 - super()._factor()


class MomentumNoneIgnored(AllReduceSyncBN):
    """momentum=None (cumulative moving average) treated as the default 0.1."""

    def _factor(self):
        return 0.1 if self.momentum is None else self.momentum


class EvalBatchStats(AllReduceSyncBN):
    """eval() still normalises with (synchronised) batch statistics instead of the running ones."""

    def _use_batch_stats(self):
        return True

    def _sync(self):
        return self._group_size() > 1


class EvalLocalSynced(AllReduceSyncBN):
    """eval() without running statistics synchronises the batch statistics (SEMANTICS.md: local ones)."""

    def _sync(self):
        return self._group_size() > 1


class EmptyCountsOne(AllReduceSyncBN):
    """An empty shard contributes mean 0 with count 1."""

    def _local_stats(self, x):
        count, mean, m2 = super()._local_stats(x)
        return count.clamp(min=1), mean, m2


class EmptySkipsCollective(AllReduceSyncBN):
    """A rank with an empty shard returns early and skips the collectives: the other ranks deadlock."""

    def _combine(self, count, mean, m2):
        self._empty = float(count[0]) == 0
        if self._empty:
            return count, mean, m2
        return super()._combine(count, mean, m2)

    def _reduce_backward(self, sum_dy, sum_dy_xmu, sync):
        return super()._reduce_backward(sum_dy, sum_dy_xmu, sync and not getattr(self, "_empty", False))


class ChannelsLastAsContiguous(AllReduceSyncBN):
    """Statistics read a channels_last tensor's memory as if it were contiguous NC..."""

    def _local_stats(self, x):
        if x.is_contiguous() or x.numel() == 0:
            return super()._local_stats(x)
        strides, running = [], 1
        for size in reversed(x.shape):
            strides.insert(0, running)
            running *= size
        raw = torch.as_strided(x.detach(), x.shape, strides)
        return super()._local_stats(raw)


class IgnoresProcessGroup(AllReduceSyncBN):
    """Statistics reduced over WORLD whatever process group was given."""

    def _group(self):
        return dist.group.WORLD


class ParamGradsReduced(AllReduceSyncBN):
    """grad_weight / grad_bias all-reduced inside the layer: DDP (the harness) reduces them a second time."""

    def _param_grads(self, local_dy, local_dy_xmu, invstd, sync):
        dy, dy_xmu = self._reduce_backward(local_dy, local_dy_xmu, sync)
        return dy_xmu * invstd, dy


class NaiveVarianceF32(AllReduceSyncBN):
    """Variance as E[x²] - E[x]² from float32 sums (cancellation when the offset is large against the spread)."""

    def _batch_stats(self, x, sync):
        xf = x.detach().to(torch.float32)
        channels = xf.shape[1]
        local = xf.numel() // channels
        sums = torch.zeros(3, channels, dtype=torch.float32)
        if local:
            sums = torch.stack([torch.full((channels,), float(local)), xf.sum(_dims(xf)), (xf * xf).sum(_dims(xf))])
        if sync:
            dist.all_reduce(sums, group=self._group())
        total = float(sums[0, 0])
        mean = sums[1] / max(total, 1)
        var = (sums[2] / max(total, 1) - mean * mean).clamp(min=0)
        return total, mean.to(F64), (var * total).to(F64), float(local)


class OneWrongElement(AllReduceSyncBN):
    """Rank 1's output[0, 0, ...] is off by 1e-3: one wrong element on one rank."""

    def _postprocess(self, y):
        if dist.is_initialized() and dist.get_rank() == 1 and y.numel():
            y = y.clone()
            y[(0,) * y.dim()] += 1e-3
        return y


class NoBatchCount(AllReduceSyncBN):
    """num_batches_tracked never incremented (momentum=None then divides by a stale count)."""

    def _update_running(self, total, mean, m2, local_count):
        super()._update_running(total, mean, m2, local_count)
        with torch.no_grad():
            self.num_batches_tracked.sub_(1)


class EpsOutsideSqrt(AllReduceSyncBN):
    """invstd = 1/(sqrt(var) + eps) instead of 1/sqrt(var + eps)."""

    def _invstd(self, var):
        return 1.0 / (torch.sqrt(var) + self.eps)


class BackwardDropsMeanTerm(AllReduceSyncBN):
    """grad_input forgets the -sum_dy/n term."""

    def _grad_input(self, g, xmu, invstd, weight, sum_dy, sum_dy_xmu, n):
        return super()._grad_input(g, xmu, invstd, weight, torch.zeros_like(sum_dy), sum_dy_xmu, n)


class CountOneNoError(AllReduceSyncBN):
    """A global count of 1 does not raise: running_var becomes inf/NaN (dividing by n - 1 = 0)."""

    def _check_count(self, total, x):
        pass


class AllEmptyShrinksStats(AllReduceSyncBN):
    """Every shard empty: running statistics still updated with mean 0, var 0 (shrunk by 1 - momentum)."""

    def _update_running(self, total, mean, m2, local_count):
        if total == 0:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self._factor()
                self.running_mean.mul_(1 - factor)
                self.running_var.mul_(1 - factor)
            return
        super()._update_running(total, mean, m2, local_count)



class CountInInputDtype(AllReduceSyncBN):
    """The per-rank count held in the input's dtype: exact in float32, but a float16 count above 65504 is inf (the
    pytorch#70901 bug class), so the statistics of a half-precision input with a large shard are lost."""

    def _local_stats(self, x):
        count, mean, m2 = super()._local_stats(x)
        return count.to(x.dtype).to(F64), mean, m2

def _factory(cls):
    def factory(num_features: int, *, eps: float, momentum: float | None, affine: bool, track_running_stats: bool,
                process_group: Any, device: Any, dtype: Any) -> nn.Module:
        return cls(num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats,
                   process_group=process_group, device=device, dtype=dtype)

    factory.__doc__ = cls.__doc__
    factory.__name__ = factory.__qualname__ = cls.__name__
    return factory


# Correct implementations: the suite must pass them.
allreduce_syncbn = _factory(AllReduceSyncBN)
gather_syncbn = _factory(GatherSyncBN)
CORRECT = {"allreduce_syncbn": "all_reduce of (count, sum) then Chan M2 terms",
           "gather_syncbn": "all_gather of (count, mean, M2), pairwise Chan combine"}

# Mutants: name -> bug class. The suite must fail each.
_MUTANT_CLASSES = {
    "no_sync": (NoSync, "no synchronisation at all"),
    "mean_of_means": (MeanOfMeans, "per-rank means averaged without their counts"),
    "biased_running_var": (BiasedRunningVar, "biased running_var"),
    "no_backward_allreduce": (NoBackwardAllReduce, "per-rank statistics in the backward (no all_reduce)"),
    "unbiased_local_n": (UnbiasedLocalN, "running_var unbiased with the local n"),
    "assumes_even_shards": (AssumesEvenShards, "count weighting wrong with uneven shards"),
    "momentum_swapped": (MomentumSwapped, "momentum misuse: 1 - momentum swapped"),
    "momentum_none_ignored": (MomentumNoneIgnored, "momentum misuse: None (cumulative average) ignored"),
    "eval_batch_stats": (EvalBatchStats, "eval uses batch statistics"),
    "eval_local_synced": (EvalLocalSynced, "eval without running stats synchronises"),
    "empty_counts_one": (EmptyCountsOne, "empty shard contributes mean 0 with count 1"),
    "empty_skips_collective": (EmptySkipsCollective, "empty shard skips the collective (deadlock)"),
    "channels_last_as_contiguous": (ChannelsLastAsContiguous, "channels_last memory read as contiguous"),
    "ignores_process_group": (IgnoresProcessGroup, "process group ignored (uses WORLD)"),
    "param_grads_reduced": (ParamGradsReduced, "parameter gradients all-reduced (reduced twice)"),
    "naive_variance_f32": (NaiveVarianceF32, "precision: E[x²] - E[x]² in float32"),
    "one_wrong_element": (OneWrongElement, "a single wrong element on one rank"),
    "no_batch_count": (NoBatchCount, "num_batches_tracked not incremented"),
    "eps_outside_sqrt": (EpsOutsideSqrt, "eps applied outside the sqrt"),
    "backward_drops_mean_term": (BackwardDropsMeanTerm, "grad_input misses the -sum_dy/n term"),
    "count_one_no_error": (CountOneNoError, "global count 1 gives NaN/inf running_var instead of raising"),
    "all_empty_shrinks_stats": (AllEmptyShrinksStats, "every shard empty still updates running statistics"),
    "count_in_input_dtype": (CountInInputDtype, "precision: count held in float16 (inf above 65504)"),
}
MUTANTS = {name: bug for name, (_, bug) in _MUTANT_CLASSES.items()}
HANGING = ("empty_skips_collective",)
for _name, (_cls, _bug) in _MUTANT_CLASSES.items():
    globals()[_name] = _factory(_cls)
__all__ += [*CORRECT, *MUTANTS]
