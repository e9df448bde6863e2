"""Module-level SyncBatchNorm over one process group's shards, in float64 numpy (see SEMANTICS.md).

W shards behave exactly like one BatchNorm over their concatenation, except eval() with
track_running_stats=False, which normalises each shard with its own batch statistics (like torch).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .ops import (
    batch_norm_backward_elemt,
    batch_norm_backward_reduce,
    batch_norm_elemt,
    combine_stats,
    shard_stats,
)

__all__ = [
    "Buffers",
    "ForwardResult",
    "BackwardResult",
    "StepResult",
    "syncbn_forward",
    "syncbn_backward",
    "syncbn_run_steps",
]

Array = np.ndarray
TOO_FEW_VALUES = "Expected more than 1 value per channel when training, got input size 1"


@dataclass
class Buffers:
    """Running statistics; every field None when track_running_stats=False."""

    running_mean: Array | None
    running_var: Array | None
    num_batches_tracked: int | None

    def copy(self) -> Buffers:
        return Buffers(None if self.running_mean is None else np.array(self.running_mean, dtype=np.float64),
                       None if self.running_var is None else np.array(self.running_var, dtype=np.float64),
                       self.num_batches_tracked)


@dataclass
class ForwardResult:
    outputs: list[Array]        # one per shard, same shape as the shard
    buffers: Buffers            # updated copy (inputs are never mutated)
    shard_mean: list[Array]     # per shard, the mean used to normalise it (C,)
    shard_invstd: list[Array]   # per shard, the invstd used (C,)
    population: list[int]       # per shard, elements the statistics came from; 0 = fixed (running) statistics
    mode: str                   # "train", "eval_running", "eval_local"


@dataclass
class BackwardResult:
    grad_inputs: list[Array]
    grad_weight: Array | None   # global: summed over all shards; None when weight is None
    grad_bias: Array | None


@dataclass
class StepResult:
    forward: ForwardResult
    backward: BackwardResult


def _check_shards(shards: Sequence[Array]) -> list[Array]:
    if len(shards) == 0:
        raise ValueError("shards must hold at least one shard (one per rank), got an empty sequence")
    arrays = [np.asarray(shard, dtype=np.float64) for shard in shards]
    for rank, shard in enumerate(arrays):
        if shard.ndim < 2:
            raise ValueError(f"shards[{rank}] must have shape (N, C, *spatial), got shape {shard.shape}")
        # Ranks may hold different spatial sizes (per-GPU image sizes): only C and the number of dims must agree.
        if shard.ndim != arrays[0].ndim or shard.shape[1] != arrays[0].shape[1]:
            raise ValueError(f"shards must agree on C and the number of dims: shards[{rank}].shape={shard.shape} "
                             f"but shards[0].shape={arrays[0].shape}")
    return arrays


def _check_vector(name: str, value: object, channels: int) -> Array | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (C of the shards), got shape {array.shape}")
    return array


def _check_buffers(buffers: Buffers | None, channels: int, track_running_stats: bool) -> Buffers:
    if not track_running_stats:
        if buffers is not None and any(
                field is not None for field in (buffers.running_mean, buffers.running_var,
                                                buffers.num_batches_tracked)):
            raise ValueError("buffers must be None (or all fields None) when track_running_stats=False")
        return Buffers(None, None, None)
    if buffers is None:
        raise ValueError("buffers must be given (running_mean, running_var, num_batches_tracked) when "
                         "track_running_stats=True")
    copied = buffers.copy()
    _check_vector("buffers.running_mean", copied.running_mean, channels)
    _check_vector("buffers.running_var", copied.running_var, channels)
    if copied.running_mean is None or copied.running_var is None:
        raise ValueError("buffers.running_mean and buffers.running_var must not be None when track_running_stats=True")
    tracked = copied.num_batches_tracked
    if isinstance(tracked, bool) or not isinstance(tracked, (int, np.integer)) or tracked < 0:
        raise ValueError(f"buffers.num_batches_tracked={tracked!r} must be a non-negative int")
    copied.num_batches_tracked = int(tracked)
    return copied


def _normalise(shards: list[Array], weight: Array | None, bias: Array | None, mean: Array,
               invstd: Array) -> list[Array]:
    return [batch_norm_elemt(shard, weight, bias, mean, invstd, 0.0) for shard in shards]


def syncbn_forward(shards: Sequence[Array], *, weight: Array | None, bias: Array | None, buffers: Buffers | None,
                   momentum: float | None, eps: float, training: bool, track_running_stats: bool) -> ForwardResult:
    """y = (x - mean)/sqrt(var + eps)·weight + bias on every shard.

    train: mean, var (biased) over all shards; running_stat = (1-f)·running_stat + f·stat with
    f = momentum or 1/num_batches_tracked, running_var fed var·n/(n-1) with the global n.
    eval_running: running statistics. eval_local (no buffers): each shard's own batch statistics.
    """
    shards = _check_shards(shards)
    channels = shards[0].shape[1]
    weight = _check_vector("weight", weight, channels)
    bias = _check_vector("bias", bias, channels)
    if not eps >= 0:
        raise ValueError(f"eps={eps!r} must be >= 0")
    if momentum is not None and (isinstance(momentum, bool) or not np.isfinite(momentum)):
        raise ValueError(f"momentum={momentum!r} must be None (cumulative average) or a finite number")
    buffers = _check_buffers(buffers, channels, track_running_stats)
    world = len(shards)

    if not training and track_running_stats:
        mean = buffers.running_mean.copy()
        invstd = 1.0 / np.sqrt(buffers.running_var + eps)
        return ForwardResult(_normalise(shards, weight, bias, mean, invstd), buffers, [mean] * world,
                             [invstd] * world, [0] * world, "eval_running")

    if not training:
        outputs, means, invstds, populations = [], [], [], []
        for shard in shards:
            count, mean, m2 = shard_stats(shard)
            if count == 1:
                raise ValueError(TOO_FEW_VALUES)
            invstd = 1.0 / np.sqrt(m2 / count + eps) if count else np.full(channels, np.nan)
            outputs.append(batch_norm_elemt(shard, weight, bias, mean, invstd, eps))
            means.append(mean)
            invstds.append(invstd)
            populations.append(count)
        return ForwardResult(outputs, buffers, means, invstds, populations, "eval_local")

    total, mean, m2 = combine_stats(*zip(*(shard_stats(shard) for shard in shards)))
    if total == 1:
        raise ValueError(TOO_FEW_VALUES)
    if track_running_stats:
        buffers.num_batches_tracked += 1
    if total == 0:
        nan = np.full(channels, np.nan)
        return ForwardResult([np.empty_like(shard) for shard in shards], buffers, [nan] * world, [nan] * world,
                             [0] * world, "train")
    invstd = 1.0 / np.sqrt(m2 / total + eps)
    if track_running_stats:
        factor = 1.0 / buffers.num_batches_tracked if momentum is None else momentum
        buffers.running_mean = (1 - factor) * buffers.running_mean + factor * mean
        buffers.running_var = (1 - factor) * buffers.running_var + factor * m2 / (total - 1)
    return ForwardResult(_normalise(shards, weight, bias, mean, invstd), buffers, [mean] * world,
                         [invstd] * world, [total] * world, "train")


def syncbn_backward(shards: Sequence[Array], grad_outputs: Sequence[Array], *, weight: Array | None,
                    forward: ForwardResult) -> BackwardResult:
    """dx = (g - sum_dy/n - (x - mean)·invstd²·sum_dy_xmu/n)·weight·invstd.

    train: sum_dy = Σg and sum_dy_xmu = Σg·(x - mean) over ALL shards, n global; eval_local: per shard;
    eval_running: dx = g·weight·invstd. grad_weight = Σ g·xhat and grad_bias = Σ g over all shards.
    """
    shards = _check_shards(shards)
    channels = shards[0].shape[1]
    weight = _check_vector("weight", weight, channels)
    if len(grad_outputs) != len(shards):
        raise ValueError(f"grad_outputs must hold one array per shard: {len(grad_outputs)} != {len(shards)}")
    grads = [np.asarray(grad, dtype=np.float64) for grad in grad_outputs]
    for rank, (grad, shard) in enumerate(zip(grads, shards)):
        if grad.shape != shard.shape:
            raise ValueError(f"grad_outputs[{rank}].shape={grad.shape} must equal shards[{rank}].shape={shard.shape}")
    if len(forward.shard_mean) != len(shards):
        raise ValueError(f"forward was computed for {len(forward.shard_mean)} shards, got {len(shards)}")

    if forward.mode not in ("train", "eval_running", "eval_local"):
        raise ValueError(f"forward.mode={forward.mode!r} must be 'train', 'eval_running' or 'eval_local'")

    # Per-shard local sums; empty shards contribute zeros (their statistics may be NaN).
    sum_dy, sum_dy_xmu = np.zeros((len(shards), channels)), np.zeros((len(shards), channels))
    grad_weight = np.zeros(channels)  # Σ_r sum_dy_xmu_r·invstd_r = Σ g·xhat
    for rank, (grad, shard, mean, invstd) in enumerate(
            zip(grads, shards, forward.shard_mean, forward.shard_invstd)):
        if shard.size:
            sum_dy[rank], sum_dy_xmu[rank], shard_grad_weight, _ = batch_norm_backward_reduce(
                grad, shard, mean, invstd, weight, True, True, False)
            grad_weight += shard_grad_weight

    grad_inputs = []
    for rank, (grad, shard, mean, invstd) in enumerate(
            zip(grads, shards, forward.shard_mean, forward.shard_invstd)):
        if shard.size == 0:
            grad_inputs.append(np.zeros_like(shard))
        elif forward.mode == "eval_running":
            # dx = g·weight·invstd: the statistics are constants
            grad_inputs.append(batch_norm_elemt(grad, weight, None, np.zeros(channels), invstd, 0.0))
        elif forward.mode == "train":
            grad_inputs.append(batch_norm_backward_elemt(grad, shard, mean, invstd, weight, sum_dy.sum(axis=0),
                                                         sum_dy_xmu.sum(axis=0), np.array([forward.population[rank]])))
        else:  # eval_local
            grad_inputs.append(batch_norm_backward_elemt(grad, shard, mean, invstd, weight, sum_dy[rank],
                                                         sum_dy_xmu[rank], np.array([forward.population[rank]])))
    if weight is None:
        return BackwardResult(grad_inputs, None, None)
    return BackwardResult(grad_inputs, grad_weight, sum_dy.sum(axis=0))


def syncbn_run_steps(steps_shards: Sequence[Sequence[Array]], steps_grad_outputs: Sequence[Sequence[Array]], *,
                     weight: Array | None, bias: Array | None, buffers: Buffers | None, momentum: float | None,
                     eps: float, track_running_stats: bool, training: bool = True) -> list[StepResult]:
    """K forward + backward steps on new data each step; the buffers of step k feed step k+1."""
    if len(steps_shards) != len(steps_grad_outputs):
        raise ValueError(f"steps_shards and steps_grad_outputs must have one entry per step: "
                         f"{len(steps_shards)} != {len(steps_grad_outputs)}")
    results = []
    for shards, grad_outputs in zip(steps_shards, steps_grad_outputs):
        forward = syncbn_forward(shards, weight=weight, bias=bias, buffers=buffers, momentum=momentum, eps=eps,
                                 training=training, track_running_stats=track_running_stats)
        results.append(StepResult(forward, syncbn_backward(shards, grad_outputs, weight=weight, forward=forward)))
        buffers = forward.buffers if track_running_stats else None
    return results
