"""PyTorch's own SyncBatchNorm as a system under test, runnable on CPU over gloo.

In PyTorch 2.13 the five ops behind ``torch.nn.SyncBatchNorm`` have CUDA kernels only. This module registers CPU
kernels for them through ``torch.library`` so that the REAL autograd Function
``torch.nn.modules._functions.SyncBatchNorm`` (its all_gather of (mean, invstd, count), its all_reduce of
(sum_dy, sum_dy_xmu)) runs on CPU. The kernels follow the CUDA kernels of ``aten/src/ATen/native/cuda/
Normalization.cu`` and ``Normalization.cuh`` (named in each docstring), including where those depart from
SEMANTICS.md; the departures are marked ``CUDA:`` in comments. Bit-exactness with CUDA is not a goal: reduction order
and the compiler's FMA contraction differ, the formulas, dtypes, layouts and edge cases do not.

Accumulation dtype (``at::acc_type<T, /*is_cuda=*/true>``): float for half/bfloat16/float, double for double.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

from .spec import OP_NAMES

__all__ = [
    "OP_NAMES",
    "CpuSyncBatchNorm",
    "active_kernels",
    "batch_norm_backward_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_elemt",
    "batch_norm_gather_stats_with_counts",
    "batch_norm_stats",
    "install_cpu_kernels",
    "install_device_kernels",
    "load_kernel_overrides",
    "torch_factory",
]


_REDUCED_PRECISION = (torch.float16, torch.bfloat16)
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SCALAR_TYPE_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.int32: "Int",
    torch.int64: "Long",
}


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _type_name(dtype: torch.dtype) -> str:
    return _SCALAR_TYPE_NAMES.get(dtype, str(dtype))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """``at::acc_type<T, true>``: float32 for float16/bfloat16/float32, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_floating(tensor: Tensor, op: str) -> None:
    # AT_DISPATCH_FLOATING_TYPES_AND2(Half, BFloat16, ...)
    if tensor.dtype not in _FLOATING:
        raise RuntimeError(f'"{op}" not implemented for \'{_type_name(tensor.dtype)}\'')


def _expect_dtype(tensor: Tensor | None, dtype: torch.dtype, name: str) -> None:
    """The check of ``get_packed_accessor``: ``Expected <name> to have type <T> but got <U>``."""
    if tensor is not None and tensor.dtype != dtype:
        raise RuntimeError(f"Expected {name} to have type {_type_name(dtype)} but got {_type_name(tensor.dtype)}")


def _reduce_dims(tensor: Tensor) -> tuple[int, ...]:
    """Every dim but the channel dim 1: the CUDA kernels view the input as (N, C, prod(spatial))."""
    return (0, *range(2, tensor.dim()))


def _per_channel(vector: Tensor, like: Tensor) -> Tensor:
    """A (C,) vector viewed as (1, C, 1, ...) so it broadcasts against ``like``."""
    return vector.reshape((1, -1) + (1,) * (like.dim() - 2))


def _uses_channels_last_kernels(tensor: Tensor) -> bool:
    """``batch_norm_use_channels_last_kernels`` in Normalization.cu."""
    return (
        tensor.is_contiguous(memory_format=torch.channels_last)
        or tensor.is_contiguous(memory_format=torch.channels_last_3d)
        or (tensor.is_contiguous() and tensor.dim() > 1 and tensor.stride(1) == 1)
    )


def _index_bits(tensor: Tensor) -> int:
    """``index_t``: int32 where ``canUse32BitIndexMath(input)``, else int64."""
    return 32 if tensor.numel() <= 2**31 - 1 else 64


def _saturating_index(value: float, bits: int) -> int:
    """A float converted to ``index_t`` the way the GPU does it (cvt.rzi): truncation, saturation, NaN -> 0."""
    if math.isnan(value):
        return 0
    high = 2 ** (bits - 1) - 1
    low = -(2 ** (bits - 1))
    if value >= high:
        return high
    if value <= low:
        return low
    return int(value)


def _inv_std(var: Tensor, eps: float) -> Tensor:
    """The ``InvStd`` transform: 1/sqrt(var + eps), but 0 where var == 0 and eps == 0.

    Its ``epsilon`` is a double parameter, so ``var + epsilon`` and the square root run in double; the result is
    stored in ``var``'s dtype."""
    var64 = var.double()
    keep = (var64 != 0) | (eps != 0.0)
    invstd = torch.where(keep, 1.0 / torch.sqrt(var64 + eps), torch.zeros_like(var64))
    return invstd.to(var.dtype)


# ---------------------------------------------------------------------------------------------------------------
# the five kernels, in the order of the aten schemas' arguments


def batch_norm_stats(input: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """aten::batch_norm_stats(Tensor input, float eps) -> (Tensor mean, Tensor invstd).

    Per channel c over n = N·prod(spatial) elements: mean_c = Σx/n, var_c = Σ(x - mean_c)²/n (biased),
    invstd_c = InvStd(var_c, eps). CUDA: ``batch_norm_collect_statistics_kernel`` (and its channels-last twin),
    Welford per thread merged with the parallel (Chan) update, in the accumulation dtype, which is also the dtype of
    both outputs (float32 for a half/bfloat16 input)."""
    _check_floating(input, "batch_norm_stats_cuda")
    acc = _acc_dtype(input.dtype)
    channels = input.size(1)
    # The kernel receives epsilon as stat_accscalar_t: rounded to float for float32/half/bfloat16 inputs.
    eps_acc = float(torch.tensor(eps, dtype=acc))
    if input.numel() == 0:
        # CUDA: with no element the thread-local Welford state stays (n=0, avg=0, var_n=0), so mean = 0 and
        # var = var_n / N = 0/0 = NaN, hence invstd = NaN. (SyncBatchNorm never calls it on an empty shard.)
        mean = torch.zeros(channels, dtype=acc, device=input.device)
        var = torch.full((channels,), math.nan, dtype=acc, device=input.device)
    else:
        # torch.var_mean is a Welford / two-pass reduction: like the kernel, never E[x²] - E[x]².
        var, mean = torch.var_mean(input.to(acc), dim=_reduce_dims(input), correction=0)
    return mean.contiguous(), _inv_std(var, eps_acc).contiguous()


def batch_norm_gather_stats_with_counts(
    input: Tensor,
    mean: Tensor,
    invstd: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
    counts: Tensor,
) -> tuple[Tensor, Tensor]:
    """aten::batch_norm_gather_stats_with_counts(input, mean (W, C), invstd (W, C), running_mean?, running_var?,
    momentum, eps, counts (W,)) -> (mean (C,), invstd (C,)); updates running_mean / running_var IN PLACE.

    CUDA: ``batch_norm_reduce_statistics_kernel``, a loop over the W gathered rows. Row j's variance is recovered
    from its invstd, var_j = 1/invstd_j² - eps, and rows are merged with the parallel update:
        factor = 1/(n + count_j)
        var_n += var_j·count_j + (avg - mean_j)²·n·count_j·factor
        avg    = n·factor·avg + count_j·factor·mean_j
        n     += count_j                            (n is an integer index_t)
    then mean = avg, invstd = 1/sqrt(var_n/n + eps),
        running_mean = (1 - momentum)·running_mean + momentum·avg
        running_var  = (1 - momentum)·running_var  + momentum·var_n/(n - 1).
    ``scalar_t`` is running_mean's dtype, or the input's without running stats; counts must have that dtype, mean
    and invstd its accumulation dtype (the accessors' dtype checks). The outputs have the accumulation dtype.

    CUDA departures from SEMANTICS.md, reproduced here:
    - global count 0 (the Function filters out every row, so W = 0): the loop never runs, avg = var_n = n = 0, so
      mean = 0, invstd = 1/sqrt(0/0 + eps) = NaN, running_mean = (1 - momentum)·running_mean (decays towards 0
      instead of staying unchanged) and running_var = (1 - momentum)·running_var + momentum·(0/-1 = -0), i.e.
      also shrunk by (1 - momentum).
    - global count 1: var_n/(n - 1) divides by 0, so running_var becomes inf or NaN (var_n is 1/invstd² - eps, a
      rounding residue near 0 of either sign, or exactly 0) instead of the "Expected more than 1 value per
      channel" error; the Function only raises that error when world_size < 2.
    - a row with count 0 is not skipped by the kernel: after a row with count > 0 and with a finite invstd it adds
      nothing, but as the first row (n = 0, factor = 1/0 = inf, 0·inf) it turns mean and invstd into NaN, and with
      invstd = 0 (what an empty rank sends: 1/0 = inf, inf·0) it turns invstd into NaN. The Function drops count-0
      rows before calling.
    - half/bfloat16 counts (a half-precision module: the Function casts counts to running_mean's dtype): counts
      are rounded to the half grid (> 2048 inexact, > 65504 inf), and ``n + count`` is evaluated in half precision
      (c10's int + Half -> Half), so once the running total exceeds 65504 factor = 1/inf = 0 and mean collapses to
      0 (pytorch/pytorch#70901), even when every single count is representable. ``n += count`` converts through
      float, truncating and saturating to index_t.
    """
    scalar_dtype = running_mean.dtype if running_mean is not None else input.dtype
    _check_floating(input if running_mean is None else running_mean, "batch_norm_update_stats_cuda")
    if mean.dim() != 2:
        raise RuntimeError(
            "batch_norm_gather_stats_with_counts: expected mean to be 2-dimensional (world_size, num_features), "
            f"but got mean of sizes {list(mean.shape)}"
        )
    if invstd.shape != mean.shape:
        raise RuntimeError(
            "batch_norm_gather_stats_with_counts: expected invstd to have the same shape as mean "
            f"({list(mean.shape)}), but got invstd of sizes {list(invstd.shape)}"
        )
    world_size, channels = mean.shape
    if counts.numel() < world_size:
        raise RuntimeError(
            "batch_norm_gather_stats_with_counts: expected counts to have at least one element per entry in "
            f"mean's first dimension ({world_size}), but got {counts.numel()} elements"
        )
    acc = _acc_dtype(scalar_dtype)
    _expect_dtype(mean, acc, "mean")
    _expect_dtype(invstd, acc, "invstd")
    _expect_dtype(running_mean, scalar_dtype, "running_mean")
    _expect_dtype(running_var, scalar_dtype, "running_mean")  # sic: the CUDA source names it running_mean too
    _expect_dtype(counts, scalar_dtype, "counts")

    def scalar(value: float) -> Tensor:
        return torch.tensor(value, dtype=acc, device=mean.device)

    bits = _index_bits(input)
    one = scalar(1.0)
    eps_acc = scalar(eps)
    momentum_acc = scalar(momentum)
    counts = counts.reshape(-1)
    avg = torch.zeros(channels, dtype=acc, device=mean.device)
    var_n = torch.zeros(channels, dtype=acc, device=mean.device)
    n = 0  # index_t
    for j in range(world_size):
        count = counts[j]  # scalar_t
        count_acc = count.to(acc)
        n_acc = scalar(float(n))
        m = mean[j]
        v = one / invstd[j]
        v = (v * v - eps_acc) * count_acc
        if scalar_dtype in _REDUCED_PRECISION:
            # c10: int + Half -> Half(int) + Half, rounded to half precision.
            denominator = (n_acc.to(scalar_dtype) + count).to(acc)
        else:
            denominator = n_acc + count_acc
        # ``accscalar_t factor = 1.0 / (n + count)``: a double division stored in accscalar_t.
        factor = (1.0 / denominator.double()).to(acc)
        var_n = var_n + (v + (avg - m) * (avg - m) * n_acc * count_acc * factor)
        avg = n_acc * factor * avg + count_acc * factor * m
        n = _saturating_index(float(n_acc + count_acc), bits)  # ``n += count``: through float, then to index_t
    n_acc = scalar(float(n))
    invstd_out = one / torch.sqrt(var_n / n_acc + eps_acc)
    if running_mean is not None:
        running_mean.copy_(((one - momentum_acc) * running_mean.to(acc) + momentum_acc * avg).to(scalar_dtype))
    unbiased_var = var_n / scalar(float(n - 1))
    if running_var is not None:
        running_var.copy_(((one - momentum_acc) * running_var.to(acc) + momentum_acc * unbiased_var).to(scalar_dtype))
    return avg.contiguous(), invstd_out.contiguous()


def batch_norm_elemt(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    eps: float,
) -> Tensor:
    """aten::batch_norm_elemt(input, weight?, bias?, mean, invstd, eps) -> y.

    y = (x - mean_c)·weight_c·invstd_c + bias_c in the accumulation dtype, stored in the input's dtype; weight = 1
    and bias = 0 when absent. ``eps`` is ignored (invstd is given). CUDA: ``batch_norm_transform_input_kernel`` /
    ``..._channels_last_kernel`` / the TensorIterator path of ``batch_norm_elementwise``. The output is
    ``empty_like(input)``: it keeps the input's memory format (channels_last, channels_last_3d). Parameters are
    either of the input's dtype or (mixed precision) of the accumulation dtype; mean and invstd of the latter."""
    _check_floating(input, "batch_norm_elementwise_cuda")
    acc = _acc_dtype(input.dtype)
    first_parameter = weight if weight is not None else bias
    mixed = first_parameter is not None and first_parameter.dtype != input.dtype
    stat_dtype = acc if mixed else input.dtype
    _expect_dtype(weight, stat_dtype, "weight")
    _expect_dtype(bias, stat_dtype, "bias")
    _expect_dtype(mean, acc, "mean")
    _expect_dtype(invstd, acc, "invstd")
    result = input.to(acc) - _per_channel(mean, input)
    if weight is not None:
        result = result * _per_channel(weight.to(acc), input)
    result = result * _per_channel(invstd, input)
    if bias is not None:
        result = result + _per_channel(bias.to(acc), input)
    output = torch.empty_like(input)
    output.copy_(result)
    return output


def batch_norm_backward_reduce(
    grad_out: Tensor,
    input: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    input_g: bool,
    weight_g: bool,
    bias_g: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """aten::batch_norm_backward_reduce(grad_out, input, mean, invstd, weight?, input_g, weight_g, bias_g)
    -> (sum_dy, sum_dy_xmu, grad_weight, grad_bias), over the LOCAL shard only.

    sum_dy_c = Σ g, sum_dy_xmu_c = Σ g·(x - mean_c) (accumulation dtype, like mean); grad_weight_c =
    sum_dy_xmu_c·invstd_c and grad_bias_c = sum_dy_c in the weight's dtype. CUDA: ``batch_norm_backward_reduce_kernel``
    / ``..._channels_last_kernel``. Outputs not asked for (or without a weight) are returned empty, as the
    channels-last path does (a Python kernel cannot return an undefined tensor); sum_dy / sum_dy_xmu are always
    computed, as the channels-last path does."""
    _check_floating(grad_out, "batch_norm_backward_reduce")
    if mean.dtype != invstd.dtype:
        raise RuntimeError("mean and invstd need to have the same data types")
    acc = _acc_dtype(input.dtype)
    mixed = weight is not None and weight.dtype != input.dtype
    stat_dtype = acc if mixed else input.dtype
    _expect_dtype(grad_out, input.dtype, "grad_output")
    _expect_dtype(weight, stat_dtype, "weight")
    _expect_dtype(mean, acc, "mean")
    _expect_dtype(invstd, acc, "invstd")
    dims = _reduce_dims(input)
    grad = grad_out.to(acc)
    x_minus_mean = input.to(acc) - _per_channel(mean, input)
    sum_dy = grad.sum(dim=dims)
    sum_dy_xmu = (grad * x_minus_mean).sum(dim=dims)
    empty = torch.empty(0, dtype=mean.dtype, device=mean.device)
    grad_weight = (sum_dy_xmu * invstd).to(weight.dtype) if (weight is not None and weight_g) else empty
    grad_bias = sum_dy.to(weight.dtype) if (weight is not None and bias_g) else empty.clone()
    return sum_dy.contiguous(), sum_dy_xmu.contiguous(), grad_weight.contiguous(), grad_bias.contiguous()


def batch_norm_backward_elemt(
    grad_out: Tensor,
    input: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    sum_dy: Tensor,
    sum_dy_xmu: Tensor,
    count: Tensor,
) -> Tensor:
    """aten::batch_norm_backward_elemt(grad_out, input, mean, invstd, weight?, sum_dy, sum_dy_xmu, count) -> dx.

    With n = Σ count (the int32 per-rank counts, summed in int64) and norm = 1/n in the accumulation dtype:
        dx = (g - sum_dy·norm - (x - mean)·invstd²·sum_dy_xmu·norm) · weight·invstd
    CUDA: ``batch_norm_backward_elemt_kernel`` / ``..._channels_last_kernel`` (``total_numel += numel[i]``).
    The output keeps the input's memory format when input and grad_out both take the channels-last kernels, and is
    contiguous otherwise. ``count`` must be int32 (``count.const_data_ptr<int>()``)."""
    _check_floating(grad_out, "batch_norm_backward_elemt")
    if mean.dtype != invstd.dtype:
        raise RuntimeError("mean and invstd need to have the same data types")
    if count.dtype != torch.int32:
        raise RuntimeError(f"expected scalar type Int but found {_type_name(count.dtype)}")
    acc = _acc_dtype(input.dtype)
    channels_last_path = _uses_channels_last_kernels(grad_out) and _uses_channels_last_kernels(input)
    if weight is not None:
        if channels_last_path:
            # channels-last path: a weight of another dtype than the input is read as accscalar_t
            allowed = (input.dtype, acc)
            if weight.dtype not in allowed:
                raise RuntimeError(
                    f"batchnorm_backward_element: input.scalar_type() {_type_name(input.dtype)} is not supported "
                    f"with weight.scalar_type() {_type_name(weight.dtype)}"
                )
        else:
            half_float = input.dtype in _REDUCED_PRECISION and mean.dtype == torch.float32
            _expect_dtype(weight, acc if half_float else input.dtype, "weight")
    _expect_dtype(mean, acc, "mean")
    _expect_dtype(invstd, acc, "invstd")
    _expect_dtype(sum_dy, acc, "sum_dy")
    _expect_dtype(sum_dy_xmu, acc, "sum_dy_xmu")
    total = int(count.sum(dtype=torch.int64))
    norm = torch.tensor(1.0, dtype=acc, device=input.device) / torch.tensor(
        float(total), dtype=acc, device=input.device
    )  # 1/0 = inf, like CUDA
    mean_dy = sum_dy * norm
    factor_1 = invstd * invstd * sum_dy_xmu * norm
    factor_2 = (weight.to(acc) * invstd) if weight is not None else invstd
    result = (
        (grad_out.to(acc) - _per_channel(mean_dy, input))
        - (input.to(acc) - _per_channel(mean, input)) * _per_channel(factor_1, input)
    ) * _per_channel(factor_2, input)
    if channels_last_path:
        grad_input = torch.empty_like(input)
    else:
        grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    grad_input.copy_(result)
    return grad_input


_BUILTIN_KERNELS: dict[str, Callable[..., Any]] = {
    "batch_norm_stats": batch_norm_stats,
    "batch_norm_gather_stats_with_counts": batch_norm_gather_stats_with_counts,
    "batch_norm_elemt": batch_norm_elemt,
    "batch_norm_backward_reduce": batch_norm_backward_reduce,
    "batch_norm_backward_elemt": batch_norm_backward_elemt,
}

# ---------------------------------------------------------------------------------------------------------------
# registration: one torch.library registration per process, dispatching through a swappable table

_active: dict[str, Callable[..., Any]] = dict(_BUILTIN_KERNELS)
_library: torch.library.Library | None = None


def _dispatcher(name: str) -> Callable[..., Any]:
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        return _active[name](*args, **kwargs)

    dispatch.__name__ = dispatch.__qualname__ = f"cpu_{name}"
    return dispatch


def _validate_overrides(overrides: Mapping[str, Callable[..., Any]] | None) -> dict[str, Callable[..., Any]]:
    if overrides is None:
        return {}
    unknown = sorted(set(overrides) - set(OP_NAMES))
    if unknown:
        raise ValueError(f"unknown kernel name(s) {unknown!r}: overrides must be among OP_NAMES={OP_NAMES!r}")
    for name, kernel in overrides.items():
        if not callable(kernel):
            raise TypeError(f"override {name}={kernel!r} is not callable")
    return dict(overrides)


def active_kernels() -> dict[str, Callable[..., Any]]:
    """A copy of the table the registered CPU kernels dispatch through."""
    return dict(_active)


def install_cpu_kernels(overrides: Mapping[str, Callable[..., Any]] | None = None) -> None:
    """Make the five ops run on CPU: the built-in kernels, updated by ``overrides`` (op name -> callable with the
    aten schema's argument order). Registers with ``torch.library`` once per process; later calls only swap the
    table, so calling without overrides restores the built-ins."""
    global _library
    table = _validate_overrides(overrides)
    _active.clear()
    _active.update(_BUILTIN_KERNELS)
    _active.update(table)
    if _library is None:
        library = torch.library.Library("aten", "IMPL")
        for name in OP_NAMES:
            library.impl(name, _dispatcher(name), "CPU")
        _library = library  # kept alive: the registrations last as long as this object


_device_tables: dict[str, dict[str, Callable[..., Any]]] = {}
_device_libraries: dict[str, torch.library.Library] = {}


def install_device_kernels(overrides: Mapping[str, Callable[..., Any]] | None, *, device: str = "CUDA") -> None:
    """Substitute ``overrides`` for the native kernels of dispatch key ``device`` (e.g. "CUDA"); ops not named keep
    their native kernels. Each call replaces the previous substitution for that key; None or {} removes it."""
    if device.upper() == "CPU":
        raise ValueError(f"device={device!r}: use install_cpu_kernels for CPU")
    table = _validate_overrides(overrides)
    if _device_tables.get(device, {}) == table:
        return  # already in place: re-registering would only warn about overriding the same kernels
    _device_tables[device] = table
    previous = _device_libraries.pop(device, None)
    if previous is not None:
        previous._destroy()  # unregisters: the native kernels are back
    if table:
        library = torch.library.Library("aten", "IMPL")
        for name, kernel in table.items():
            library.impl(name, kernel, device)
        _device_libraries[device] = library


def load_kernel_overrides(module: ModuleType | str) -> dict[str, Callable[..., Any]]:
    """The OP_NAMES attributes ``module`` (a module or its import path) defines, for ``install_cpu_kernels``."""
    if isinstance(module, str):
        module = importlib.import_module(module)
    found = {name: getattr(module, name) for name in OP_NAMES if hasattr(module, name)}
    if not found:
        raise ValueError(
            f"module {module.__name__!r} defines none of the kernels OP_NAMES={OP_NAMES!r}; "
            "define at least one function named like an op"
        )
    return _validate_overrides(found)


# ---------------------------------------------------------------------------------------------------------------
# the module


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
        current_overrides = {name: kernel for name, kernel in _active.items() if kernel is not _BUILTIN_KERNELS[name]}
        install_cpu_kernels(current_overrides)
        module = CpuSyncBatchNorm(num_features, **options)
    else:
        raise ValueError(f"device={str(device)!r} is not supported: use 'cpu' or 'cuda'")
    return module.to(device) if dtype is None else module.to(device, dtype)
