"""CPU kernels for the five ops behind ``torch.nn.SyncBatchNorm`` (registered by harness.kernel_table).

In PyTorch 2.13 these ops have CUDA kernels only. The kernels here let the REAL autograd Function
``torch.nn.modules._functions.SyncBatchNorm`` run on CPU. They follow the CUDA kernels of ``aten/src/ATen/native/
cuda/Normalization.cu`` and ``Normalization.cuh`` (named in each docstring): formulas, output dtypes, dtype checks,
memory formats and edge cases, including where CUDA departs from docs/semantics.md (listed in each docstring). They are
not bit-exact with CUDA: reduction order and the compiler's FMA contraction differ.

Accumulation: every kernel here accumulates in float32 for float16/bfloat16/float32 input and in float64 for float64
input (``at::acc_type<T, /*is_cuda=*/true>``). CUDA mostly does too, with one exception this module deliberately
does NOT mirror: see ``batch_norm_backward_reduce``. ``HARNESS_KERNEL_BEHAVIOURS`` lists, for the report, what a CPU
run takes from these kernels rather than from PyTorch's own code.

Fake implementations (``FAKE_KERNELS``): what each op returns, as metadata only (shape, dtype, memory format), for
FakeTensor tracing under ``torch.compile``. PyTorch 2.13 has none for these ops (their Meta entry is the backend
fallback, which raises): dynamo then runs the kernel itself on zeros ("unsafe fallback", static shapes only) or
breaks the graph. harness.kernel_table registers them with the CPU kernels, as an out-of-tree kernel registers its
fake implementation, so the compiled lane traces the ops as opaque calls (docs/compile.md). Each one states the
contract every kernel of that op must keep, a ``--kernels`` substitute included: the compiled code around the op
is generated for this metadata.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .spec import OP_NAMES

__all__ = [
    "HARNESS_KERNEL_BEHAVIOURS", "OP_NAMES", "BUILTIN_KERNELS", "batch_norm_backward_elemt",
    "batch_norm_backward_reduce", "batch_norm_elemt", "batch_norm_gather_stats_with_counts", "batch_norm_stats",
    "FAKE_KERNELS",
]

HARNESS_KERNEL_BEHAVIOURS = (
    "The five ops' arithmetic: harness CPU kernels following the CUDA kernels' formulas, not PyTorch's code",
    "Accumulation in float32 for float16/bfloat16/float32 input, float64 for float64 input, in every kernel",
    "CUDA's half rounding in its contiguous batch_norm_backward_reduce kernel is NOT reproduced (pytorch#195701)",
    "Empty-input batch_norm_stats: raises for contiguous 3-5-D input, mean 0 / invstd NaN otherwise, as CUDA does",
    "The gather kernel's count-0 and count-1 behaviour: NaN statistics, decayed or non-finite running stats",
    "Half counts added in half precision by the gather kernel, as CUDA does (pytorch#70901)",
    "The dtype checks and messages of CUDA's accessors, e.g. 'Expected counts to have type Half but got Float'",
    "Output memory formats and the contiguous/channels-last kernel choice per input layout",
    "CpuSyncBatchNorm.forward: upstream's SyncBatchNorm.forward mirrored line by line, minus the device check",
)

_REDUCED_PRECISION = (torch.float16, torch.bfloat16)
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SCALAR_TYPE_NAMES = {torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
                      torch.float64: "Double", torch.int32: "Int", torch.int64: "Long"}


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
    """``batch_norm_use_channels_last_kernels`` in Normalization.cu (TensorImpl's flags: the same on CPU and CUDA).
    For an EMPTY tensor ``is_contiguous()`` is True whatever the strides; the channels-last flags follow the strides
    as for non-empty tensors: False for a contiguous (0, 3, 4, 4), True for its channels_last copy."""
    return (tensor.is_contiguous(memory_format=torch.channels_last)
            or tensor.is_contiguous(memory_format=torch.channels_last_3d)
            or (tensor.is_contiguous() and tensor.dim() > 1 and tensor.stride(1) == 1))


def _index_bits(tensor: Tensor) -> int:
    """``index_t``: int32 where ``canUse32BitIndexMath(input)``, else int64."""
    return 32 if tensor.numel() <= 2**31 - 1 else 64


def _saturating_index(value: float, bits: int) -> int:
    """A float converted to ``index_t`` the way the GPU does it (cvt.rzi): truncation, saturation, NaN -> 0."""
    if math.isnan(value):
        return 0
    high, low = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    return high if value >= high else low if value <= low else int(value)


def _inv_std(var: Tensor, eps: float) -> Tensor:
    """The ``InvStd`` transform: 1/sqrt(var + eps), but 0 where var == 0 and eps == 0. Its ``epsilon`` is a double
    parameter, so ``var + epsilon`` and the square root run in double; the result is stored in ``var``'s dtype."""
    var64 = var.double()
    keep = (var64 != 0) | (eps != 0.0)
    return torch.where(keep, 1.0 / torch.sqrt(var64 + eps), torch.zeros_like(var64)).to(var.dtype)


# ---------------------------------------------------------------------------------------------------------------
# the five kernels, in the order of the aten schemas' arguments


def batch_norm_stats(input: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """aten::batch_norm_stats(Tensor input, float eps) -> (Tensor mean, Tensor invstd).

    Per channel c over n = N·prod(spatial) elements: mean_c = Σx/n, var_c = Σ(x - mean_c)²/n (biased),
    invstd_c = InvStd(var_c, eps). CUDA: ``batch_norm_collect_statistics_kernel`` (and its channels-last twin),
    Welford per thread merged with the parallel (Chan) update, in the accumulation dtype, which is also the dtype of
    both outputs (float32 for a half/bfloat16 input).

    Empty input, as CUDA does (H100 probe, torch 2.11: /work/shared/gpu-runs/2026-11-27-h100/empty_stats_probe.txt,
    from probes/probe_empty_stats.py there), by the path ``batch_norm_use_channels_last_kernels`` picks:
    - contiguous path (contiguous 3-D, 4-D, 5-D input): ``batch_norm_stats_cuda_template`` reshapes the input to
      (N, C, -1) first, which for 0 elements raises RuntimeError "cannot reshape tensor of 0 elements into shape
      [0, C, -1] because the unspecified dimension size -1 can be any value and is ambiguous"; so does this kernel.
    - channels-last path (2-D, channels_last or channels_last_3d input, and degenerate shapes such as (0, C, 1)):
      the Welford state stays (n=0, avg=0, var_n=0), so mean = 0, var = 0/0 = NaN and invstd = NaN.
    The Function never calls this op on an empty shard (torch 2.13 ``_functions.py``, forward: ``if input.numel() >
    0`` guards ``torch.batch_norm_stats``; an empty rank sends zeros) and no op case has an empty shard 0, so the
    raise changes none of the suite's verdicts for the torch SUT."""
    _check_floating(input, "batch_norm_stats_cuda")
    acc = _acc_dtype(input.dtype)
    channels = input.size(1)
    # The kernel receives epsilon as stat_accscalar_t: rounded to float for float32/half/bfloat16 inputs.
    eps_acc = float(torch.tensor(eps, dtype=acc))
    if input.numel() == 0:
        if not _uses_channels_last_kernels(input):
            input.reshape(input.size(0), channels, -1)  # CUDA's contiguous path: raises for 0 elements
            raise AssertionError("reshape of an empty tensor to (N, C, -1) did not raise")  # pragma: no cover
        mean = torch.zeros(channels, dtype=acc, device=input.device)
        var = torch.full((channels,), math.nan, dtype=acc, device=input.device)
    else:
        # Two passes, like the kernel never E[x²] - E[x]²: the mean by torch's cascade sum, then the mean square
        # about it. As accurate as CUDA's Welford per thread merged in a tree (a few roundings), where CPU
        # torch.var_mean's one Welford chain per channel is off by tens of roundings at a thousand values (27 u of
        # the mean at 1025 float64 values around 1 against an exact mean; a float64 property case failed by it).
        values = input.to(acc)
        dims = _reduce_dims(input)
        mean = values.mean(dim=dims)
        var = (values - _per_channel(mean, values)).square().mean(dim=dims)
    return mean.contiguous(), _inv_std(var, eps_acc).contiguous()


def batch_norm_gather_stats_with_counts(
    input: Tensor, mean: Tensor, invstd: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
    momentum: float, eps: float, counts: Tensor,
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
    - global count 0 (the Function filtered out every row, W = 0): the loop never runs, so mean = 0, invstd =
      1/sqrt(0/0 + eps) = NaN, and both running stats shrink by (1 - momentum) instead of staying unchanged
      (running_var gains momentum·(0/-1) = -0).
    - global count 1: var_n/(n - 1) divides by 0, so running_var becomes inf or NaN (var_n = 1/invstd² - eps is a
      rounding residue of either sign, or 0) instead of "Expected more than 1 value per channel" (which the
      Function raises only when world_size < 2).
    - count-0 rows are not skipped (the Function drops them before calling): after a row with count > 0 and with a
      finite invstd one adds nothing, but as the first row (n = 0, factor = 1/0 = inf, 0·inf) it makes mean and
      invstd NaN, and with invstd = 0 (what an empty rank sends: 1/0 = inf, inf·0) it makes invstd NaN.
    - half/bfloat16 counts (a half module: the Function casts counts to running_mean's dtype) are rounded to the
      half grid (> 2048 inexact, > 65504 inf), and ``n + count`` is evaluated in half (c10's int + Half -> Half):
      once the running total exceeds 65504, factor = 1/inf = 0 and mean collapses to 0 even when every count is
      representable (pytorch/pytorch#70901). ``n += count`` converts through float, truncating and saturating.
    """
    scalar_dtype = running_mean.dtype if running_mean is not None else input.dtype
    _check_floating(input if running_mean is None else running_mean, "batch_norm_update_stats_cuda")
    prefix = "batch_norm_gather_stats_with_counts: expected"
    if mean.dim() != 2:
        raise RuntimeError(f"{prefix} mean to be 2-dimensional (world_size, num_features), "
                           f"but got mean of sizes {list(mean.shape)}")
    if invstd.shape != mean.shape:
        raise RuntimeError(f"{prefix} invstd to have the same shape as mean ({list(mean.shape)}), "
                           f"but got invstd of sizes {list(invstd.shape)}")
    world_size, channels = mean.shape
    if counts.numel() < world_size:
        raise RuntimeError(f"{prefix} counts to have at least one element per entry in mean's first dimension "
                           f"({world_size}), but got {counts.numel()} elements")
    acc = _acc_dtype(scalar_dtype)
    _expect_dtype(mean, acc, "mean")
    _expect_dtype(invstd, acc, "invstd")
    _expect_dtype(running_mean, scalar_dtype, "running_mean")
    _expect_dtype(running_var, scalar_dtype, "running_mean")  # sic: the CUDA source names it running_mean too
    _expect_dtype(counts, scalar_dtype, "counts")

    def scalar(value: float) -> Tensor:
        return torch.tensor(value, dtype=acc, device=mean.device)

    bits = _index_bits(input)
    one, eps_acc, momentum_acc = scalar(1.0), scalar(eps), scalar(momentum)
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


def batch_norm_elemt(input: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, invstd: Tensor,
                     eps: float) -> Tensor:
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
    return torch.empty_like(input).copy_(result)


def batch_norm_backward_reduce(grad_out: Tensor, input: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None,
                               input_g: bool, weight_g: bool, bias_g: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """aten::batch_norm_backward_reduce(grad_out, input, mean, invstd, weight?, input_g, weight_g, bias_g)
    -> (sum_dy, sum_dy_xmu, grad_weight, grad_bias), over the LOCAL shard only.

    sum_dy_c = Σ g, sum_dy_xmu_c = Σ g·(x - mean_c) (accumulation dtype, like mean); grad_weight_c =
    sum_dy_xmu_c·invstd_c and grad_bias_c = sum_dy_c in the weight's dtype. CUDA: ``batch_norm_backward_reduce_kernel``
    / ``..._channels_last_kernel``. Outputs not asked for (or without a weight) are returned empty, as the
    channels-last path does (a Python kernel cannot return an undefined tensor); sum_dy / sum_dy_xmu are always
    computed, as the channels-last path does.

    Accumulation: float32 (float64 for double) throughout, like CUDA's channels-last kernel. CUDA's CONTIGUOUS kernel
    does not: for float16/bfloat16 input its ``Float2`` accumulator is constructed in the input dtype, so each
    dy·(x - mean) term and each warp-shuffle partial sum is rounded to half precision (pytorch#195701, fix in PR
    #196125; the shuffle rounding dates from PR #83871). This kernel deliberately does NOT mirror that defect; the
    harness treats it as a CUDA-only known deviation."""
    _check_floating(grad_out, "batch_norm_backward_reduce")
    if mean.dtype != invstd.dtype:
        raise RuntimeError("mean and invstd need to have the same data types")
    acc = _acc_dtype(input.dtype)
    mixed = weight is not None and weight.dtype != input.dtype
    _expect_dtype(grad_out, input.dtype, "grad_output")
    _expect_dtype(weight, acc if mixed else input.dtype, "weight")
    _expect_dtype(mean, acc, "mean")
    _expect_dtype(invstd, acc, "invstd")
    dims = _reduce_dims(input)
    grad = grad_out.to(acc)
    sum_dy = grad.sum(dim=dims)
    sum_dy_xmu = (grad * (input.to(acc) - _per_channel(mean, input))).sum(dim=dims)
    empty = torch.empty(0, dtype=mean.dtype, device=mean.device)
    grad_weight = (sum_dy_xmu * invstd).to(weight.dtype) if (weight is not None and weight_g) else empty
    grad_bias = sum_dy.to(weight.dtype) if (weight is not None and bias_g) else empty.clone()
    return sum_dy.contiguous(), sum_dy_xmu.contiguous(), grad_weight.contiguous(), grad_bias.contiguous()


def batch_norm_backward_elemt(grad_out: Tensor, input: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None,
                              sum_dy: Tensor, sum_dy_xmu: Tensor, count: Tensor) -> Tensor:
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
        if channels_last_path:  # a weight of another dtype than the input is read as accscalar_t
            if weight.dtype not in (input.dtype, acc):
                raise RuntimeError(
                    f"batchnorm_backward_element: input.scalar_type() {_type_name(input.dtype)} is not supported "
                    f"with weight.scalar_type() {_type_name(weight.dtype)}")
        else:
            half_float = input.dtype in _REDUCED_PRECISION and mean.dtype == torch.float32
            _expect_dtype(weight, acc if half_float else input.dtype, "weight")
    _expect_dtype(mean, acc, "mean")
    _expect_dtype(invstd, acc, "invstd")
    _expect_dtype(sum_dy, acc, "sum_dy")
    _expect_dtype(sum_dy_xmu, acc, "sum_dy_xmu")
    total = int(count.sum(dtype=torch.int64))
    device = input.device
    norm = torch.tensor(1.0, dtype=acc, device=device) / torch.tensor(float(total), dtype=acc, device=device)  # 1/0=inf
    mean_dy = sum_dy * norm
    factor_1 = invstd * invstd * sum_dy_xmu * norm
    factor_2 = (weight.to(acc) * invstd) if weight is not None else invstd
    result = (
        (grad_out.to(acc) - _per_channel(mean_dy, input))
        - (input.to(acc) - _per_channel(mean, input)) * _per_channel(factor_1, input)
    ) * _per_channel(factor_2, input)
    contiguous = torch.empty(input.shape, dtype=input.dtype, device=device)
    return (torch.empty_like(input) if channels_last_path else contiguous).copy_(result)


BUILTIN_KERNELS: dict[str, Callable[..., Any]] = {kernel.__name__: kernel for kernel in (
    batch_norm_stats, batch_norm_gather_stats_with_counts, batch_norm_elemt, batch_norm_backward_reduce,
    batch_norm_backward_elemt)}


# ---------------------------------------------------------------------------------------------------------------
# fake implementations: each op's output metadata, as the kernels above produce it (no data is read)


def _fake_batch_norm_stats(input: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """mean and invstd: (C,), contiguous, in the accumulation dtype of the input."""
    acc = _acc_dtype(input.dtype)
    return input.new_empty((input.size(1),), dtype=acc), input.new_empty((input.size(1),), dtype=acc)


def _fake_batch_norm_gather_stats_with_counts(input: Tensor, mean: Tensor, invstd: Tensor,
                                              running_mean: Tensor | None, running_var: Tensor | None,
                                              momentum: float, eps: float, counts: Tensor) -> tuple[Tensor, Tensor]:
    """mean and invstd: (C,) in the dtype of the gathered statistics (the accumulation dtype). The in-place update of
    running_mean / running_var changes no metadata (the schema does not declare it: docs/compile.md)."""
    return mean.new_empty((mean.size(1),)), mean.new_empty((mean.size(1),))


def _fake_batch_norm_elemt(input: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, invstd: Tensor,
                           eps: float) -> Tensor:
    """empty_like(input): the input's dtype and memory format."""
    return torch.empty_like(input)


def _fake_batch_norm_backward_reduce(grad_out: Tensor, input: Tensor, mean: Tensor, invstd: Tensor,
                                     weight: Tensor | None, input_g: bool, weight_g: bool, bias_g: bool
                                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sum_dy, sum_dy_xmu: (C,) in mean's dtype; grad_weight, grad_bias: (C,) in the weight's dtype when asked for
    and there is a weight, else empty (0,) in mean's dtype."""
    channels = input.size(1)
    grad_weight = weight.new_empty((channels,)) if weight is not None and weight_g else mean.new_empty((0,))
    grad_bias = weight.new_empty((channels,)) if weight is not None and bias_g else mean.new_empty((0,))
    return mean.new_empty((channels,)), mean.new_empty((channels,)), grad_weight, grad_bias


def _fake_batch_norm_backward_elemt(grad_out: Tensor, input: Tensor, mean: Tensor, invstd: Tensor,
                                    weight: Tensor | None, sum_dy: Tensor, sum_dy_xmu: Tensor, count: Tensor) -> Tensor:
    """The input's shape and dtype; its memory format when input and grad_out both take the channels-last kernels,
    else contiguous."""
    if _uses_channels_last_kernels(grad_out) and _uses_channels_last_kernels(input):
        return torch.empty_like(input)
    return input.new_empty(input.shape)


FAKE_KERNELS: dict[str, Callable[..., Any]] = {name: globals()[f"_fake_{name}"] for name in BUILTIN_KERNELS}
