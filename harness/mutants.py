"""The self-test's catalogue: two correct SyncBatchNorms and deliberately broken ones (mutants), as SUT factories.

Every name in ``CORRECT``, ``MUTANTS`` and ``COMPILED_MUTANTS`` is a factory obeying the SUT contract
(harness.sut), usable as ``--sut harness.mutants:<name>``. The correct ones are harness.reference_suts' (no code
shared with PyTorch's kernels). Each mutant is a small subclass of one of them overriding one hook (a state bug: the
hook and the forward that keeps the state), so its bug is the only difference; ``MUTANTS`` maps each name to its
bug, ``MUTANT_CLASS`` to its defect class of ``CLASSES`` (the self-test reports the catch rate per class; a class
says from which profile the catalogue must catch it), ``HANGING`` names those that deadlock by design (the
collective audit catches them in seconds: harness.collectives.deadlock); ``COSTLIER`` names correct ones that only
cost more communication than torch's SyncBatchNorm (reported, never failed). ``COMPILED_MUTANTS`` are the compiled
lane's (``--compile``, class "compiled lane"): their defect exists only in what torch.compile makes of them, so
they pass every case eager; each names the cheapest backend that shows it (docs/selftest.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .reference_suts import F64, AllReduceSyncBN, GatherSyncBN, dims

__all__ = ["CORRECT", "MUTANTS", "HANGING", "COSTLIER", "COMBINED", "COMBINED_PARTS", "CLASSES", "MUTANT_CLASS",
           "BugClass", "COMPILED_MUTANTS"]


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


class LocalRunningVar(AllReduceSyncBN):
    """running_var updated with this rank's own batch variance (its M2_r / (n_r - 1)) instead of the global one:
    outputs, gradients and running_mean are right, but the ranks hold different running_var (seen in a real
    third-party SyncBN; a rank with fewer than two values keeps the global variance)."""

    def _local_stats(self, x):
        count, mean, m2 = super()._local_stats(x)
        self._local = (float(count[0]), m2)
        return count, mean, m2

    def _unbiased_var(self, total, m2, local_count):
        count, local_m2 = self._local
        return local_m2 / (count - 1) if count > 1 else super()._unbiased_var(total, m2, local_count)


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


class HalfGather(GatherSyncBN):
    """(count, mean, M2) and the backward sums all-gathered in float16 (half the bytes): every exchanged value is
    rounded to 11 significant bits (and a count or M2 above 65504 becomes inf)."""

    def _gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [t.to(F64) for t in super()._gather(tensor.to(torch.float16))]


class ExtraCollective(GatherSyncBN):
    """Correct, but costlier: an all_reduce of the local count in every training forward, on top of the
    all_gathers, whose result is never used (one collective per step more than torch's SyncBatchNorm)."""

    def _combine(self, count, mean, m2):
        dist.all_reduce(count.clone(), group=self._group())
        return super()._combine(count, mean, m2)


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


# -- boundary and state mutants: bugs that only large counts, many channels, big worlds or several steps show ---------
_BLOCK = 2048  # values per channel one reduction block holds
_BUCKET = 1024  # elements per communication bucket
_NODE = 4  # ranks per node of a hierarchical collective


def _channel_values(x: torch.Tensor) -> torch.Tensor:
    """(C, n): each channel's values in logical (N, spatial...) order."""
    return x.detach().transpose(0, 1).reshape(x.shape[1], -1)


class TailBlockDropped(AllReduceSyncBN):
    """A per-channel reduction in blocks of 2048 values (Welford partials merged across blocks) that runs over
    n // 2048 full blocks once there is one: the last, partial block's values and count are lost. Right for up to
    2048 values per channel on a rank and for multiples of 2048."""

    def _local_stats(self, x):
        count = x.numel() // x.shape[1]
        full = count // _BLOCK * _BLOCK
        if count <= _BLOCK or full == count:
            return super()._local_stats(x)
        return super()._local_stats(_channel_values(x)[:, :full].t())


class BucketTailUnreduced(AllReduceSyncBN):
    """Collectives through a fixed buffer of 1024 elements: a longer tensor goes in n // 1024 full buckets and its
    last, partial bucket is never reduced (those elements keep this rank's own values). Right while every exchanged
    tensor fits one bucket: up to 512 channels here, (count, sum) per channel."""

    def _all_reduce(self, tensor):
        flat = tensor.view(-1)
        if flat.numel() <= _BUCKET:
            return super()._all_reduce(tensor)
        for start in range(0, flat.numel() - _BUCKET + 1, _BUCKET):
            flat[start:start + _BUCKET] = super()._all_reduce(flat[start:start + _BUCKET].clone())
        return tensor


class ChannelsLastVectorTail(AllReduceSyncBN):
    """A channels_last statistics kernel that loads 16 bytes of channels at a time when C >= 32 (4 float32, 8 half
    values): its scalar loop over the remainder channels (C not a multiple of the vector width) steps through the
    pixels with the vectorised pitch (C rounded down to the width) instead of C, reading other channels' values."""

    def _local_stats(self, x):
        count, mean, m2 = super()._local_stats(x)
        channels, width = x.shape[1], 16 // x.element_size()
        pitch = channels - channels % width
        formats = {4: torch.channels_last, 5: torch.channels_last_3d}
        channels_last = x.dim() in formats and x.is_contiguous(memory_format=formats[x.dim()]) and not x.is_contiguous()
        if not channels_last or channels < 32 or pitch == channels or x.numel() == 0:
            return count, mean, m2
        memory = x.detach().permute(0, *range(2, x.dim()), 1).reshape(-1)  # the storage, channels innermost
        pixels = memory.numel() // channels
        for channel in range(pitch, channels):
            values = memory[torch.arange(pixels) * pitch + channel].to(F64)
            mean[channel] = values.mean()
            m2[channel] = ((values - mean[channel]) ** 2).sum()
        return count, mean, m2


class Float64PartialsInFloat32(AllReduceSyncBN):
    """float64 input whose per-block partial statistics (blocks of 2048 values per channel) go through a float32
    workspace before the blocks are merged: exact while one block holds a rank's channel, float32-accurate beyond
    (the workspace's dtype taken from a float32 default, not from the input)."""

    def _local_stats(self, x):
        count = x.numel() // x.shape[1]
        if x.dtype != torch.float64 or count <= _BLOCK:
            return super()._local_stats(x)
        values = _channel_values(x)
        total, mean, m2 = 0, torch.zeros(x.shape[1], dtype=F64), torch.zeros(x.shape[1], dtype=F64)
        for start in range(0, count, _BLOCK):
            block = values[:, start:start + _BLOCK]
            n_b, mean_b = block.shape[1], block.mean(1)
            m2_b = ((block - mean_b[:, None]) ** 2).sum(1)
            mean_b, m2_b = mean_b.float().to(F64), m2_b.float().to(F64)  # the float32 workspace
            delta, n_ab = mean_b - mean, total + n_b
            mean, m2, total = mean + delta * n_b / n_ab, m2 + m2_b + delta**2 * total * n_b / n_ab, n_ab
        return torch.full((x.shape[1],), float(count), dtype=F64), mean, m2


class NodesFloored(GatherSyncBN):
    """A hierarchical all_gather for ranks in nodes of 4 (within each node, then across the nodes' leaders) that
    counts the nodes as world_size // 4 (at least one): right for up to 4 ranks and for multiples of 4, while the
    ranks of a last, partial node (world sizes 5, 6, 7, ...) never reach the others and drop out of every sum."""

    def _gather(self, tensor):
        gathered = super()._gather(tensor)
        return gathered[:max(len(gathered) // _NODE, 1) * _NODE]


class CountCapturedOnce(AllReduceSyncBN):
    """The global count all-reduced at the first training step and kept (static shapes assumed, as a captured graph
    does): every later step divides the all-reduced sums by the first step's count. Right while every step has the
    first step's batch sizes."""

    def _combine(self, count, mean, m2):
        total, global_mean, chan = super()._combine(count, mean, m2)
        if getattr(self, "_captured_total", None) is None:
            self._captured_total = total.clone()
        captured = self._captured_total
        stale_mean = total * global_mean / captured.clamp(min=1)
        return captured, stale_mean, chan + total * (global_mean - stale_mean) ** 2  # Σ (x - stale_mean)²


class EvalAdvancesStepCounter(AllReduceSyncBN):
    """momentum=None: the cumulative average's factor 1/t taken from a step counter the layer advances on every
    forward, eval included (num_batches_tracked itself counts training forwards only, as it should): every training
    step after an eval phase blends its batch in with too small a weight."""

    def forward(self, x):
        if not self.training and self.track_running_stats:
            self._eval_forwards = getattr(self, "_eval_forwards", 0) + 1
        return super().forward(x)

    def _factor(self):
        if self.momentum is not None:
            return self.momentum
        return 1.0 / (float(self.num_batches_tracked) + getattr(self, "_eval_forwards", 0))


class FrozenWeightIgnored(AllReduceSyncBN):
    """The backward hands the weight to the grad_input kernel only when the weight itself needs a gradient: with a
    frozen weight (requires_grad=False) grad_input is computed as if the weight were 1."""

    def _grad_input(self, g, xmu, invstd, weight, sum_dy, sum_dy_xmu, n):
        if self.weight is not None and not self.weight.requires_grad:
            weight = torch.ones_like(weight)
        return super()._grad_input(g, xmu, invstd, weight, sum_dy, sum_dy_xmu, n)


class NoGradSkipsSync(AllReduceSyncBN):
    """A training-mode forward under torch.no_grad() taken for inference (no backward will follow, so the collectives
    are skipped): precise-BN's recomputed statistics and running statistics are each rank's own."""

    def _sync(self):
        return super()._sync() and torch.is_grad_enabled()


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


@dataclass(frozen=True)
class BugClass:
    """A class of defect: what it is, and the lightest profile whose catalogue must catch every mutant of it (quick
    is a smoke test that misses boundary defects by design: those need the default profile's larger cases)."""

    description: str
    profile: str = "quick"


CLASSES: dict[str, BugClass] = {
    "synchronisation": BugClass("what is reduced over which ranks: statistics, backward sums, parameter gradients"),
    "statistics combine": BugClass("how the ranks' statistics combine: counts, uneven shards, spatial sizes"),
    "running statistics": BugClass("the running buffers' update: unbiasing, the counter"),
    "momentum": BugClass("momentum misuse, momentum None (cumulative average)"),
    "eval": BugClass("eval with and without running statistics"),
    "edge rules": BugClass("empty shards, every shard empty, a global count of 1"),
    "layouts": BugClass("channels_last memory read wrongly"),
    "formulas": BugClass("the normalisation and backward formulas, one wrong element"),
    "precision": BugClass("cancellation, float16 counts, squares and exchanged statistics"),
    "state across steps": BugClass("state captured at the first step and reused when the shard sizes change"),
    "eval side effects": BugClass("eval phases between training steps changing the training state"),
    "frozen affine / no-grad": BugClass("frozen weight and bias, a training-mode forward under torch.no_grad()"),
    "block boundaries": BugClass("reductions and exchange buffers in fixed-size blocks whose last, partial block is "
                                 "mishandled (> 2048 values per channel on a rank, > 1024 elements exchanged)",
                                 "default"),
    "vectorised channels": BugClass("channels_last channel loops in vectors of 4 or 8 with a remainder (C >= 32)",
                                    "default"),
    "large-count precision": BugClass("float64 partial sums held in float32 above a few thousand values per channel",
                                      "default"),
    "world size": BugClass("tree and hierarchical combines right only for powers of two or multiples of 4 (world "
                           "sizes 5-7)", "default"),
    "compiled lane": BugClass("right eagerly, wrong in what torch.compile makes of the code: a value baked in while "
                              "tracing, a custom op's fake implementation (run compiled, then eagerly on the case "
                              "that caught it)"),
}

# Mutants: name -> (class, bug, defect class of CLASSES). The suite must fail each.
_MUTANT_CLASSES = {
    "no_sync": (NoSync, "no synchronisation at all", "synchronisation"),
    "mean_of_means": (MeanOfMeans, "per-rank means averaged without their counts", "statistics combine"),
    "biased_running_var": (BiasedRunningVar, "biased running_var", "running statistics"),
    "no_backward_allreduce": (NoBackwardAllReduce, "per-rank statistics in the backward (no all_reduce)",
                              "synchronisation"),
    "unbiased_local_n": (UnbiasedLocalN, "running_var unbiased with the local n", "running statistics"),
    "local_running_var": (LocalRunningVar, "running_var from each rank's own variance (ranks disagree)",
                          "running statistics"),
    "assumes_even_shards": (AssumesEvenShards, "count weighting wrong with uneven shards", "statistics combine"),
    "momentum_swapped": (MomentumSwapped, "momentum misuse: 1 - momentum swapped", "momentum"),
    "momentum_none_ignored": (MomentumNoneIgnored, "momentum misuse: None (cumulative average) ignored", "momentum"),
    "eval_batch_stats": (EvalBatchStats, "eval uses batch statistics", "eval"),
    "eval_local_synced": (EvalLocalSynced, "eval without running stats synchronises", "eval"),
    "empty_counts_one": (EmptyCountsOne, "empty shard contributes mean 0 with count 1", "edge rules"),
    "empty_skips_collective": (EmptySkipsCollective, "empty shard skips the collective (deadlock)", "edge rules"),
    "half_gather": (HalfGather, "statistics all-gathered in float16", "precision"),
    "channels_last_as_contiguous": (ChannelsLastAsContiguous, "channels_last memory read as contiguous", "layouts"),
    "ignores_process_group": (IgnoresProcessGroup, "process group ignored (uses WORLD)", "synchronisation"),
    "param_grads_reduced": (ParamGradsReduced, "parameter gradients all-reduced (reduced twice)", "synchronisation"),
    "naive_variance_f32": (NaiveVarianceF32, "precision: E[x²] - E[x]² in float32", "precision"),
    "one_wrong_element": (OneWrongElement, "a single wrong element on one rank", "formulas"),
    "no_batch_count": (NoBatchCount, "num_batches_tracked not incremented", "running statistics"),
    "eps_outside_sqrt": (EpsOutsideSqrt, "eps applied outside the sqrt", "formulas"),
    "backward_drops_mean_term": (BackwardDropsMeanTerm, "grad_input misses the -sum_dy/n term", "formulas"),
    "count_one_no_error": (CountOneNoError, "global count 1 gives NaN/inf running_var instead of raising",
                           "edge rules"),
    "all_empty_shrinks_stats": (AllEmptyShrinksStats, "every shard empty still updates running statistics",
                                "edge rules"),
    "count_in_input_dtype": (CountInInputDtype, "precision: count held in float16 (inf above 65504)", "precision"),
    "count_by_batch_size": (CountByBatchSize, "count from batch sizes only (ranks' spatial sizes differ)",
                            "statistics combine"),
    "variance_floor": (VarianceFloor, "constant channel: variance floored at eps/32 (grad_input 1.5% off)",
                       "formulas"),
    "squares_in_half": (SquaresInHalf, "precision: a half module forms x² in float16 (inf for |x| > 256)",
                        "precision"),
    "count_captured_once": (CountCapturedOnce, "global count captured at the first step (shard sizes change)",
                            "state across steps"),
    "eval_advances_step_counter": (EvalAdvancesStepCounter, "momentum None: eval forwards advance the step counter "
                                   "of the cumulative average", "eval side effects"),
    "frozen_weight_ignored": (FrozenWeightIgnored, "frozen weight: grad_input computed with weight 1",
                              "frozen affine / no-grad"),
    "no_grad_skips_sync": (NoGradSkipsSync, "training forward under no_grad does not synchronise",
                           "frozen affine / no-grad"),
    "tail_block_dropped": (TailBlockDropped, "blocks of 2048 values: the last partial block dropped",
                           "block boundaries"),
    "bucket_tail_unreduced": (BucketTailUnreduced, "buckets of 1024 elements: the last partial bucket not reduced",
                              "block boundaries"),
    "channels_last_vector_tail": (ChannelsLastVectorTail, "channels_last, C >= 32: remainder channels read with "
                                  "the vector pitch", "vectorised channels"),
    "float64_partials_in_float32": (Float64PartialsInFloat32, "float64 block partials in a float32 workspace "
                                    "(> 2048 values)", "large-count precision"),
    "nodes_floored": (NodesFloored, "nodes of 4 counted as world // 4: a partial node's ranks left out",
                      "world size"),
}
MUTANTS = {name: bug for name, (_, bug, _) in _MUTANT_CLASSES.items()}
MUTANT_CLASS = {name: bug_class for name, (_, _, bug_class) in _MUTANT_CLASSES.items()}
HANGING = ("empty_skips_collective",)
# Costlier, not wrong: the suite must pass each, and report that it issues more collectives than torch's SyncBN.
_COSTLIER_CLASSES = {"extra_collective": (ExtraCollective, "an extra all_reduce per training step")}
COSTLIER = {name: what for name, (_, what) in _COSTLIER_CLASSES.items()}
# Several independent mutants in one SUT (each overrides its own hooks): the diagnosis must give each defect its own
# line with its true condition (tests/test_diagnosis_combined.py). Not part of the self-test.
COMBINED_PARTS = {
    "counter_and_even_shards": ("no_batch_count", "assumes_even_shards"),
    "momentum_grads_and_count_one": ("momentum_none_ignored", "param_grads_reduced", "count_one_no_error"),
    "empty_skip_half_gather_and_count_one": ("empty_skips_collective", "half_gather", "count_one_no_error"),
}
COMBINED = {name: " + ".join(MUTANTS[part] for part in parts) for name, parts in COMBINED_PARTS.items()}


def _combined(name: str, parts: tuple[str, ...]) -> type:
    bases = tuple(_MUTANT_CLASSES[part][0] for part in parts)
    return type(name, bases, {"__doc__": f"{COMBINED[name]} ({', '.join(parts)})"})


_COMBINED_CLASSES = {name: (_combined(name, parts), COMBINED[name]) for name, parts in COMBINED_PARTS.items()}
# The compiled lane's mutants: name -> (class, the --compile backend that shows the defect, bug).
_COMPILED_MUTANT_CLASSES = {
    "cumulative_factor_constant": (CumulativeFactorConstant, "eager",
                                   "compiled: momentum None's factor baked in at the first step (no guard)"),
    "fake_dtype_inv_std": (FakeDtypeInvStd, "inductor",
                           "compiled: a custom op's fake implementation declares the wrong output dtype"),
}
if _inv_std is None:  # torch < 2.4: no custom_op to build it with
    del _COMPILED_MUTANT_CLASSES["fake_dtype_inv_std"]
COMPILED_MUTANTS = {name: (backend, bug) for name, (_, backend, bug) in _COMPILED_MUTANT_CLASSES.items()}
MUTANT_CLASS.update({name: "compiled lane" for name in COMPILED_MUTANTS})
for _name, (_cls, *_) in {**_MUTANT_CLASSES, **_COSTLIER_CLASSES, **_COMBINED_CLASSES,
                          **_COMPILED_MUTANT_CLASSES}.items():
    globals()[_name] = _factory(_cls)
__all__ += [*CORRECT, *MUTANTS, *COSTLIER, *COMBINED, *COMPILED_MUTANTS]
