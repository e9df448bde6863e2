"""float64 numpy mirrors of the five kernels behind torch's SyncBatchNorm, named and ordered like the torch ops.

Every array is (N, C, *spatial); a per-channel reduction runs over every axis but 1. No torch import here.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "OP_NAMES",
    "shard_stats",
    "combine_stats",
    "batch_norm_stats",
    "batch_norm_gather_stats_with_counts",
    "batch_norm_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_backward_elemt",
]

Array = np.ndarray
# The five ops, in the order SyncBatchNorm calls them; one home for the list (harness.spec re-exports it).
OP_NAMES = (
    "batch_norm_stats",
    "batch_norm_gather_stats_with_counts",
    "batch_norm_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_backward_elemt",
)


def _as_input(name: str, value: object) -> Array:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (N, C, *spatial), got shape {array.shape}")
    return array


def _as_channel_vector(name: str, value: object, channels: int) -> Array:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one value per channel), got shape {array.shape}")
    return array


def _check_eps(eps: float) -> None:
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"eps={eps!r} must be >= 0")


def _reduce_axes(x: Array) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _per_channel(vector: Array, x: Array) -> Array:
    """Reshape a (C,) vector to broadcast against x of shape (N, C, *spatial)."""
    return vector.reshape((1, -1) + (1,) * (x.ndim - 2))


def _count(x: Array) -> int:
    """Elements per channel: N·prod(spatial), exact (Python int)."""
    return x.shape[0] * int(np.prod(x.shape[2:], dtype=np.int64))


def shard_stats(x: Array) -> tuple[int, Array, Array]:
    """Per channel (count, mean, M2) of one shard: count = N·prod(spatial), mean = Σx/count, M2 = Σ(x - mean)².

    Two-pass (centred) sums. An empty shard gives count 0, mean NaN, M2 0.
    """
    x = _as_input("x", x)
    count = _count(x)
    if count == 0:
        return 0, np.full(x.shape[1], np.nan), np.zeros(x.shape[1])
    axes = _reduce_axes(x)
    mean = x.mean(axis=axes)
    return count, mean, np.square(x - _per_channel(mean, x)).sum(axis=axes)


def combine_stats(counts: Sequence[float] | Array, means: Sequence[Array] | Array,
                  m2s: Sequence[Array] | Array) -> tuple[int, Array, Array]:
    """Chan's parallel update over shards: with δ = mean_b - mean_a and n = n_a + n_b,
    mean = mean_a + δ·n_b/n and M2 = M2_a + M2_b + δ²·n_a·n_b/n. Shards with count 0 are skipped.

    Returns (n, mean, M2); with n == 0, mean and M2 are NaN.
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    means = np.atleast_2d(np.asarray(means, dtype=np.float64))
    m2s = np.atleast_2d(np.asarray(m2s, dtype=np.float64))
    if means.shape != m2s.shape or means.shape[0] != counts.shape[0]:
        raise ValueError(f"counts, means and m2s must agree on the number of shards: shapes {counts.shape}, "
                         f"{means.shape}, {m2s.shape}; means and m2s are (W, C), counts (W,)")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError(f"counts={counts.tolist()!r} must be non-negative whole numbers")
    total = 0
    mean = np.zeros(means.shape[1])
    m2 = np.zeros(means.shape[1])
    for count, shard_mean, shard_m2 in zip(counts.astype(np.int64).tolist(), means, m2s):
        if count == 0:
            continue
        combined = total + count
        delta = shard_mean - mean
        mean = mean + delta * (count / combined)
        m2 = m2 + shard_m2 + np.square(delta) * (total * count / combined)
        total = combined
    if total == 0:
        return 0, np.full_like(mean, np.nan), np.full_like(m2, np.nan)
    return total, mean, m2


def batch_norm_stats(input: Array, eps: float) -> tuple[Array, Array]:
    """Local (mean, invstd) per channel: invstd = 1/sqrt(var_biased + eps). Empty input gives NaN."""
    _check_eps(eps)
    count, mean, m2 = shard_stats(input)
    with np.errstate(divide="ignore", invalid="ignore"):
        return mean, 1.0 / np.sqrt(m2 / count + eps)


def batch_norm_gather_stats_with_counts(input: Array, mean: Array, invstd: Array, running_mean: Array | None,
                                        running_var: Array | None, momentum: float, eps: float,
                                        counts: Array) -> tuple[Array, Array]:
    """Global (mean, invstd) from per-shard rows mean (W, C), invstd (W, C) and counts (W,).

    Shard variance var_r = 1/invstd_r² - eps, combined with combine_stats (count 0 skipped). In place:
    running_mean = (1-momentum)·running_mean + momentum·mean, running_var likewise with var·n/(n-1).
    Global n == 0: returns NaN and leaves the running statistics unchanged. ``input`` only supplies C.
    """
    _check_eps(eps)
    channels = _as_input("input", input).shape[1]
    mean = np.asarray(mean, dtype=np.float64)
    invstd = np.asarray(invstd, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    for name, rows in (("mean", mean), ("invstd", invstd)):
        if rows.shape != (counts.shape[0], channels):
            raise ValueError(f"{name} must have shape (W, C) = ({counts.shape[0]}, {channels}) to match counts "
                             f"and input, got shape {rows.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        shard_m2 = np.where(counts[:, None] > 0, (1.0 / np.square(invstd) - eps) * counts[:, None], 0.0)
    total, global_mean, global_m2 = combine_stats(counts, mean, shard_m2)
    if total == 0:
        return global_mean, np.full(channels, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        global_invstd = 1.0 / np.sqrt(global_m2 / total + eps)
        unbiased_var = global_m2 / (total - 1)
    if running_mean is not None:
        running_mean[...] = (1 - momentum) * running_mean + momentum * global_mean
    if running_var is not None:
        running_var[...] = (1 - momentum) * running_var + momentum * unbiased_var
    return global_mean, global_invstd


def batch_norm_elemt(input: Array, weight: Array | None, bias: Array | None, mean: Array, invstd: Array,
                     eps: float) -> Array:
    """y = (x - mean)·invstd·weight + bias (weight None = 1, bias None = 0; eps unused, as in torch)."""
    x = _as_input("input", input)
    channels = x.shape[1]
    scale = _as_channel_vector("invstd", invstd, channels)
    if weight is not None:
        scale = scale * _as_channel_vector("weight", weight, channels)
    shift = np.zeros(channels) if bias is None else _as_channel_vector("bias", bias, channels)
    centred = x - _per_channel(_as_channel_vector("mean", mean, channels), x)
    return centred * _per_channel(scale, x) + _per_channel(shift, x)


def batch_norm_backward_reduce(grad_output: Array, input: Array, mean: Array, invstd: Array, weight: Array | None,
                               input_g: bool, weight_g: bool, bias_g: bool,
                               ) -> tuple[Array | None, Array | None, Array | None, Array | None]:
    """Local sums: sum_dy = Σg, sum_dy_xmu = Σg·(x - mean), grad_weight = sum_dy_xmu·invstd, grad_bias = sum_dy.

    Each is None where its flag (input_g for the two sums, weight_g, bias_g) is False, as in torch.
    """
    x = _as_input("input", input)
    grad = _as_input("grad_output", grad_output)
    if grad.shape != x.shape:
        raise ValueError(f"grad_output shape {grad.shape} must equal input shape {x.shape}")
    channels = x.shape[1]
    invstd = _as_channel_vector("invstd", invstd, channels)
    axes = _reduce_axes(x)
    sum_dy = grad.sum(axis=axes)
    centred = x - _per_channel(_as_channel_vector("mean", mean, channels), x)
    sum_dy_xmu = (grad * centred).sum(axis=axes)
    return (sum_dy if input_g else None, sum_dy_xmu if input_g else None,
            sum_dy_xmu * invstd if weight_g else None, sum_dy if bias_g else None)


def batch_norm_backward_elemt(grad_output: Array, input: Array, mean: Array, invstd: Array, weight: Array | None,
                              sum_dy: Array, sum_dy_xmu: Array, count: Array) -> Array:
    """dx = (g - sum_dy/n - (x - mean)·invstd²·sum_dy_xmu/n)·weight·invstd, n = Σ count (per-shard counts)."""
    x = _as_input("input", input)
    grad = _as_input("grad_output", grad_output)
    if grad.shape != x.shape:
        raise ValueError(f"grad_output shape {grad.shape} must equal input shape {x.shape}")
    channels = x.shape[1]
    total = int(np.sum(np.asarray(count, dtype=np.int64)))
    if total <= 0 and x.size:
        raise ValueError(f"count={np.asarray(count).tolist()!r} must sum to the global element count (> 0)")
    invstd = _as_channel_vector("invstd", invstd, channels)
    scale = invstd if weight is None else invstd * _as_channel_vector("weight", weight, channels)
    mean_dy = _as_channel_vector("sum_dy", sum_dy, channels) / total
    mean_dy_xmu = _as_channel_vector("sum_dy_xmu", sum_dy_xmu, channels) / total
    centred = x - _per_channel(_as_channel_vector("mean", mean, channels), x)
    return (grad - _per_channel(mean_dy, x) - centred * _per_channel(np.square(invstd) * mean_dy_xmu, x)) \
        * _per_channel(scale, x)
