"""The self-test's catalogue: two correct SyncBatchNorms and deliberately broken ones (mutants), as SUT factories.

Every name in ``CORRECT``, ``MUTANTS`` and ``COMPILED_MUTANTS`` is a factory obeying the SUT contract
(harness.sut), usable as ``--sut harness.mutants:<name>``. The correct ones are harness.reference_suts' (no code
shared with PyTorch's kernels). Each mutant is a small subclass of one of them overriding one hook, so its bug is
the only difference; ``MUTANTS`` maps each name to its bug class, ``HANGING`` names those that deadlock by design.
``COMPILED_MUTANTS`` are the compiled lane's (``--compile``): their defect exists only in what torch.compile makes
of them, so they pass every case eager; each names the cheapest backend that shows it (docs/selftest.md).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from .reference_suts import F64, AllReduceSyncBN, GatherSyncBN, dims

__all__ = ["CORRECT", "MUTANTS", "HANGING", "COMPILED_MUTANTS"]


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
            sums = torch.stack([torch.full((channels,), float(local)), xf.sum(dims(xf)), (xf * xf).sum(dims(xf))])
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


class CountByBatchSize(AllReduceSyncBN):
    """The global count taken as (Σ_r N_r)·prod(this rank's spatial): every rank assumes the other ranks' inputs
    have its own spatial size (right only when they do); the global sums divided by that count."""

    def _batch_stats(self, x, sync):
        total, mean, m2, local = super()._batch_stats(x, sync)
        if not sync:
            return total, mean, m2, local
        batch = torch.tensor([float(x.shape[0])], dtype=F64)
        dist.all_reduce(batch, group=self._group())
        assumed = float(batch[0]) * math.prod(x.shape[2:])
        if assumed in (0.0, total):
            return total, mean, m2, local
        sum_x, sum_x2 = total * mean, m2 + total * mean**2  # the exact global sums, divided by the wrong count
        wrong_mean = sum_x / assumed
        return assumed, wrong_mean, (sum_x2 - assumed * wrong_mean**2).clamp(min=0), local


class VarianceFloor(AllReduceSyncBN):
    """A variance floor against division by zero, var.clamp(min=eps/32), before adding eps: invisible wherever the
    batch variance exceeds eps/32, but a constant channel (variance 0) is normalised with 1/sqrt(eps·33/32),
    1.5% off. Its output is the bias whatever invstd is (x - mean = 0), so only grad_input shows it."""

    def _invstd(self, var):
        return torch.rsqrt(var.clamp(min=self.eps / 32) + self.eps)


class SquaresInHalf(AllReduceSyncBN):
    """A half module's statistics path (model.half()) forms x² in the module's dtype before accumulating (in
    float64), and takes the variance as E[x²] - E[x]²: a float16 square is inf for |x| > 256 (65504 is float16's
    largest value), so data far from 0 gets an infinite variance; near 0 the squares' rounding (u·x², averaged)
    stays inside a half module's tolerances. Float32 modules (mixed precision included) take the correct path."""

    def _local_stats(self, x):
        dtype = next((t.dtype for t in (self.weight, self.running_mean) if t is not None), x.dtype)
        if dtype not in (torch.float16, torch.bfloat16) or x.numel() == 0:
            return super()._local_stats(x)
        count, mean, _ = super()._local_stats(x)
        xh = x.detach().to(dtype)
        sum_x2 = (xh * xh).to(F64).sum(dims(xh))  # each square rounded (and overflowing) in the module's dtype
        return count, mean, sum_x2 - count * mean**2


# -- compiled-lane mutants: correct eagerly, wrong once torch.compile has made its graphs ---------------------------
class CumulativeFactorConstant(AllReduceSyncBN):
    """momentum=None's cumulative factor 1/num_batches_tracked computed in forward by a helper marked
    torch.compiler.assume_constant_result, a way to keep dynamo from breaking the graph at ``.item()``: eager
    evaluates it at every step; compiled, dynamo evaluates it once, while tracing, and bakes the first step's value
    into the graph (no guard), so every later step averages with it. Any backend shows it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        marker = CumulativeFactorConstant._next_cumulative_factor
        if not getattr(marker, "_dynamo_marked_constant", False):  # marked here: the import costs seconds
            torch.compiler.assume_constant_result(marker)
        self._cumulative = 1.0

    def forward(self, x):
        if self.training and self.track_running_stats and self.momentum is None:
            self._cumulative = self._next_cumulative_factor()
        return super().forward(x)

    def _next_cumulative_factor(self) -> float:
        return 1.0 / (float(self.num_batches_tracked) + 1.0)  # the factor once this step has been counted

    def _factor(self):
        return self._cumulative if self.momentum is None else self.momentum


def _inv_std_kernel(var: torch.Tensor, eps: float) -> torch.Tensor:
    """The custom op's kernel: 1/sqrt(var + eps) in var's dtype."""
    return torch.rsqrt(var + eps)


def _inv_std_fake(var: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(var, dtype=torch.float32)  # the defect: the kernel returns var's dtype (float64 here)


_inv_std = None
if hasattr(torch.library, "custom_op"):  # torch >= 2.4
    _inv_std = torch.library.custom_op("syncbn_selftest::inv_std", _inv_std_kernel, mutates_args=())
    _inv_std.register_fake(_inv_std_fake)


class FakeDtypeInvStd(AllReduceSyncBN):
    """invstd through a custom op (torch.library.custom_op, as an out-of-tree fused kernel would be) whose fake
    implementation declares float32 where the kernel returns var's float64. Eager, and compiled with the eager or
    aot_eager backend, run the kernel's own tensor; inductor generates the code around the op from the fake and
    reads the float64 result as float32, wherever dynamo traces the call (the forward in training, between the
    implementation's graph breaks at ``.item()``, and eval)."""

    def _invstd(self, var):
        return _inv_std(var, float(self.eps))


def _factory(cls):
    def factory(num_features: int, *, eps: float, momentum: float | None, affine: bool, track_running_stats: bool,
                process_group: Any, device: Any, dtype: Any) -> torch.nn.Module:
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
    "count_by_batch_size": (CountByBatchSize, "count from batch sizes only (ranks' spatial sizes differ)"),
    "variance_floor": (VarianceFloor, "constant channel: variance floored at eps/32 (grad_input 1.5% off)"),
    "squares_in_half": (SquaresInHalf, "precision: a half module forms x² in float16 (inf for |x| > 256)"),
}
MUTANTS = {name: bug for name, (_, bug) in _MUTANT_CLASSES.items()}
HANGING = ("empty_skips_collective",)
# The compiled lane's mutants: name -> (the --compile backend that shows the defect, bug class).
_COMPILED_MUTANT_CLASSES = {
    "cumulative_factor_constant": (CumulativeFactorConstant, "eager",
                                   "compiled: momentum None's factor baked in at the first step (no guard)"),
    "fake_dtype_inv_std": (FakeDtypeInvStd, "inductor",
                           "compiled: a custom op's fake implementation declares the wrong output dtype"),
}
if _inv_std is None:  # torch < 2.4: no custom_op to build it with
    del _COMPILED_MUTANT_CLASSES["fake_dtype_inv_std"]
COMPILED_MUTANTS = {name: (backend, bug) for name, (_, backend, bug) in _COMPILED_MUTANT_CLASSES.items()}
for _name, (_cls, *_) in [*_MUTANT_CLASSES.items(), *_COMPILED_MUTANT_CLASSES.items()]:
    globals()[_name] = _factory(_cls)
__all__ += [*CORRECT, *MUTANTS, *COMPILED_MUTANTS]
