"""harness.cpu_kernels: each CPU kernel against float64 formulas and CUDA's edge cases (empty input, count 0/1,
half counts, dtype checks), the registration machinery (overrides, device kernels), and the report's list."""
from __future__ import annotations

import math
import re
import types

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

from kernel_data import EPS, MEMORY_FORMATS, data
from harness import cpu_kernels
from harness.cpu_kernels import HARNESS_KERNEL_BEHAVIOURS, OP_NAMES
from harness.kernel_table import (
    active_kernels,
    active_overrides,
    install_cpu_kernels,
    install_device_kernels,
    load_kernel_overrides,
)

pytestmark = pytest.mark.usefixtures("builtin_kernels")


# (layout, shape): BatchNorm1d on (N, C) and (N, C, L), 2d, 3d
LAYOUTS = [
    ("contiguous", (7, 3)),
    ("contiguous", (5, 4, 6)),
    ("contiguous", (5, 4, 3, 2)),
    ("channels_last", (5, 4, 3, 2)),
    ("channels_last_3d", (3, 4, 2, 3, 2)),
]
# float64 inputs are compared almost exactly, float32 ones at a few ulps of their accumulation
TOLERANCES = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-6, atol=2e-6)}


def _dims(x):
    return (0, *range(2, x.dim()))


def _bcast(vector, like):
    return vector.reshape((1, -1) + (1,) * (like.dim() - 2))


def _f64_stats(x):
    """float64 mean and biased var per channel, two-pass."""
    x64 = x.double()
    mean = x64.mean(_dims(x))
    var = ((x64 - _bcast(mean, x)) ** 2).mean(_dims(x))
    return mean, var


# ------------------------------------------------------------------------------------------------------------------
# 1. each kernel against float64 formulas


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout,shape", LAYOUTS)
def test_batch_norm_stats_matches_float64(dtype, layout, shape):
    x = data(shape, dtype, layout)
    mean, invstd = torch.batch_norm_stats(x, EPS)
    ref_mean, ref_var = _f64_stats(x)
    assert mean.dtype == dtype and invstd.dtype == dtype and mean.shape == (shape[1],)
    torch.testing.assert_close(mean.double(), ref_mean, **TOLERANCES[dtype])
    torch.testing.assert_close(invstd.double(), 1 / torch.sqrt(ref_var + EPS), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_norm_stats_reduced_precision_returns_float32(dtype):
    x = data((6, 3, 4), dtype, scale=1.0, loc=0.5)
    mean, invstd = torch.batch_norm_stats(x, EPS)
    assert mean.dtype == torch.float32 and invstd.dtype == torch.float32
    ref_mean, ref_var = _f64_stats(x)  # of the rounded input: the accumulation itself is float32
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(invstd.double(), 1 / torch.sqrt(ref_var + EPS), rtol=1e-5, atol=1e-6)


def test_batch_norm_stats_inv_std_is_zero_for_zero_var_and_zero_eps():
    x = data((4, 2, 3), torch.float64)
    x[:, 1] = 2.5  # a constant channel
    _, invstd = torch.batch_norm_stats(x, 0.0)
    assert invstd[1].item() == 0.0 and invstd[0].item() > 0
    _, invstd = torch.batch_norm_stats(x, EPS)
    assert invstd[1].item() == pytest.approx(1 / math.sqrt(EPS))


# (shape, layout, raises): the first five rows as CUDA did on an H100 (torch 2.11,
# /work/shared/gpu-runs/2026-11-27-h100/empty_stats_probe.txt); channels_last_3d and (0, 5, 2) by the same kernel
# choice (batch_norm_use_channels_last_kernels), not probed.
EMPTY_STATS_ROWS = [
    ((0, 3, 4, 4), "contiguous", True),
    ((0, 3, 4, 4), "channels_last", False),
    ((0, 3), "contiguous", False),
    ((0, 3, 5), "contiguous", True),
    ((0, 3, 2, 2, 2), "contiguous", True),
    ((0, 3, 2, 2, 2), "channels_last_3d", False),
    ((0, 5, 2), "contiguous", True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("shape,layout,raises", EMPTY_STATS_ROWS)
def test_batch_norm_stats_on_empty_input_raises_or_gives_nan_like_cuda(shape, layout, raises, dtype):
    x = torch.empty(shape, dtype=dtype).contiguous(memory_format=MEMORY_FORMATS[layout])
    # An empty tensor is contiguous whatever its strides; the channels-last flags and stride(1) pick the kernel.
    assert x.is_contiguous()
    assert cpu_kernels._uses_channels_last_kernels(x) is not raises
    if raises:
        message = (f"cannot reshape tensor of 0 elements into shape [0, {shape[1]}, -1] because the unspecified "
                   "dimension size -1 can be any value and is ambiguous")
        with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$") as raised:
            torch.batch_norm_stats(x, EPS)
        assert type(raised.value) is RuntimeError
    else:
        mean, invstd = torch.batch_norm_stats(x, EPS)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        assert mean.dtype == invstd.dtype == acc and mean.shape == invstd.shape == (shape[1],)
        assert (mean == 0).all() and torch.isnan(invstd).all()


def test_empty_contiguous_and_channels_last_tensors_report_different_channels_last_flags():
    """What the kernel choice above rests on, in torch's TensorImpl (shared by CPU and CUDA tensors)."""
    contiguous = torch.empty(0, 3, 4, 4)
    channels_last = contiguous.contiguous(memory_format=torch.channels_last)
    assert contiguous.stride() == (48, 16, 4, 1) and channels_last.stride() == (48, 1, 12, 3)
    assert contiguous.is_contiguous() and channels_last.is_contiguous()
    assert not contiguous.is_contiguous(memory_format=torch.channels_last)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)


def _gather_inputs(shard_rows, dtype, *, zero_row_invstd=1.0, seed=1):
    """Per-shard (mean, invstd, count) rows from float64 formulas; a shard of 0 rows gets (0, zero_row_invstd)."""
    x = data((sum(shard_rows), 3, 4), torch.float64, seed=seed)
    per_row = 4
    means, invstds, counts, start = [], [], [], 0
    for rows in shard_rows:
        shard = x[start:start + rows]
        start += rows
        if rows == 0:
            means.append(torch.zeros(3, dtype=torch.float64))
            invstds.append(torch.full((3,), zero_row_invstd, dtype=torch.float64))
        else:
            mean, var = _f64_stats(shard)
            means.append(mean)
            invstds.append(1 / torch.sqrt(var + EPS))
        counts.append(float(rows * per_row))
    return (x, torch.stack(means).to(dtype), torch.stack(invstds).to(dtype),
            torch.tensor(counts, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("momentum", [0.1, 1.0])
def test_gather_stats_with_counts_matches_float64(dtype, momentum):
    # uneven shards, one of count 0 (with a finite invstd: the kernel merges it as a no-op)
    x, mean_rows, invstd_rows, counts = _gather_inputs([3, 1, 0, 5], dtype)
    running_mean = torch.linspace(-1, 1, 3, dtype=dtype)
    running_var = torch.linspace(0.5, 2, 3, dtype=dtype)
    initial_mean, initial_var = running_mean.clone().double(), running_var.clone().double()
    mean, invstd = torch.batch_norm_gather_stats_with_counts(
        x.to(dtype), mean_rows, invstd_rows, running_mean, running_var, momentum, EPS, counts)
    ref_mean, ref_var = _f64_stats(x)
    n = x.numel() // x.size(1)
    assert mean.dtype == dtype and invstd.dtype == dtype
    tol = TOLERANCES[dtype] if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean.double(), ref_mean, **tol)
    torch.testing.assert_close(invstd.double(), 1 / torch.sqrt(ref_var + EPS), **tol)
    # updated in place, with the unbiased GLOBAL variance
    torch.testing.assert_close(running_mean.double(), (1 - momentum) * initial_mean + momentum * ref_mean, **tol)
    torch.testing.assert_close(running_var.double(),
                               (1 - momentum) * initial_var + momentum * ref_var * n / (n - 1), **tol)


def test_gather_without_running_stats():
    x, mean_rows, invstd_rows, counts = _gather_inputs([2, 6], torch.float64)
    mean, invstd = torch.batch_norm_gather_stats_with_counts(x, mean_rows, invstd_rows, None, None, 0.1, EPS, counts)
    ref_mean, ref_var = _f64_stats(x)
    torch.testing.assert_close(mean, ref_mean, **TOLERANCES[torch.float64])
    torch.testing.assert_close(invstd, 1 / torch.sqrt(ref_var + EPS), **TOLERANCES[torch.float64])


@pytest.mark.parametrize("rows,zero_row_invstd,mean_is_nan", [
    ([0, 3], 1.0, True),    # count 0 first: factor = 1/(0 + 0) = inf, then 0 * inf
    ([3, 0], 0.0, False),   # the row an empty rank sends (invstd 0) after a real one: (1/0)^2 * 0
])
def test_gather_count_zero_rows_that_cuda_turns_into_nan(rows, zero_row_invstd, mean_is_nan):
    # CUDA does not skip count-0 rows; the Function filters them out before calling the kernel.
    x, mean_rows, invstd_rows, counts = _gather_inputs(rows, torch.float64, zero_row_invstd=zero_row_invstd)
    mean, invstd = torch.batch_norm_gather_stats_with_counts(x, mean_rows, invstd_rows, None, None, 0.1, EPS, counts)
    assert torch.isnan(invstd).all()
    assert torch.isnan(mean).all() == mean_is_nan
    if not mean_is_nan:
        torch.testing.assert_close(mean, _f64_stats(x)[0])


def test_gather_global_count_zero_decays_running_stats():
    # CUDA departure (SEMANTICS: running stats stay unchanged): mean 0, invstd NaN, both running stats * (1 - m)
    empty = torch.zeros(0, 3, dtype=torch.float64)
    running_mean = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    running_var = torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64)
    mean, invstd = torch.batch_norm_gather_stats_with_counts(
        torch.zeros(0, 3, dtype=torch.float64), empty, empty, running_mean, running_var, 0.25, EPS,
        torch.zeros(0, dtype=torch.float64))
    assert (mean == 0).all() and torch.isnan(invstd).all()
    torch.testing.assert_close(running_mean, torch.tensor([0.75, -1.5, 2.25], dtype=torch.float64))
    torch.testing.assert_close(running_var, torch.tensor([3.0, 3.75, 4.5], dtype=torch.float64))


def test_gather_global_count_one_gives_non_finite_running_var():
    # CUDA departure (SEMANTICS: "Expected more than 1 value per channel"): running_var = var_n / 0
    x = data((1, 3), torch.float64)
    mean_rows, invstd_rows = (t.unsqueeze(0) for t in torch.batch_norm_stats(x, EPS))
    running_mean, running_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    mean, invstd = torch.batch_norm_gather_stats_with_counts(
        x, mean_rows, invstd_rows, running_mean, running_var, 0.1, EPS, torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(mean, x[0])
    assert not torch.isfinite(running_var).any()


def test_gather_half_counts_overflow_the_running_total():
    # half module: counts in half; n + count is evaluated in half, so 40000 + 40000 = inf and mean collapses to 0
    mean_rows = torch.full((2, 3), 7.0)
    invstd_rows = torch.ones(2, 3)
    running_mean = torch.zeros(3, dtype=torch.float16)
    running_var = torch.ones(3, dtype=torch.float16)
    input = torch.zeros(2, 3, dtype=torch.float16)
    counts = torch.tensor([40000.0, 40000.0], dtype=torch.float16)
    mean, _ = torch.batch_norm_gather_stats_with_counts(
        input, mean_rows, invstd_rows, running_mean, running_var, 0.1, EPS, counts)
    assert mean.dtype == torch.float32 and (mean == 0).all()
    # the same counts in float32 (a float32 module) give the right mean
    mean, _ = torch.batch_norm_gather_stats_with_counts(
        input, mean_rows, invstd_rows, torch.zeros(3), torch.ones(3), 0.1, EPS, counts.float())
    torch.testing.assert_close(mean, torch.full((3,), 7.0))


def test_gather_checks_dtypes_like_the_cuda_accessors():
    mean_rows, invstd_rows = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(RuntimeError, match="Expected counts to have type Half but got Float"):
        torch.batch_norm_gather_stats_with_counts(
            torch.zeros(2, 3, dtype=torch.float16), mean_rows, invstd_rows, torch.zeros(3, dtype=torch.float16),
            torch.ones(3, dtype=torch.float16), 0.1, EPS, torch.ones(2))
    with pytest.raises(RuntimeError, match="Expected mean to have type Double but got Float"):
        torch.batch_norm_gather_stats_with_counts(
            torch.zeros(2, 3, dtype=torch.float64), mean_rows, invstd_rows, None, None, 0.1, EPS,
            torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout,shape", LAYOUTS)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_elemt_matches_float64(dtype, layout, shape, affine):
    x = data(shape, dtype, layout)
    channels = shape[1]
    mean = torch.linspace(4, 6, channels, dtype=dtype)
    invstd = torch.linspace(0.2, 0.5, channels, dtype=dtype)
    weight = torch.linspace(-1, 2, channels, dtype=dtype) if affine else None
    bias = torch.linspace(0.5, -0.5, channels, dtype=dtype) if affine else None
    y = torch.batch_norm_elemt(x, weight, bias, mean, invstd, EPS)
    expected = (x.double() - _bcast(mean.double(), x)) * _bcast(invstd.double(), x)
    if affine:
        expected = expected * _bcast(weight.double(), x) + _bcast(bias.double(), x)
    assert y.dtype == dtype and y.stride() == x.stride()  # keeps the input's memory format
    torch.testing.assert_close(y.double(), expected, **TOLERANCES[dtype])


def test_batch_norm_elemt_mixed_precision():
    x = data((4, 3, 2, 2), torch.float16, "channels_last", scale=1.0, loc=0.0)
    mean, invstd = torch.zeros(3), torch.ones(3)
    weight, bias = torch.full((3,), 2.0), torch.full((3,), 0.5)
    y = torch.batch_norm_elemt(x, weight, bias, mean, invstd, EPS)
    assert y.dtype == torch.float16 and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, (x.float() * 2 + 0.5).half())
    with pytest.raises(RuntimeError, match="Expected weight to have type Float but got Double"):
        torch.batch_norm_elemt(x, weight.double(), None, mean, invstd, EPS)


def _backward_inputs(shape, dtype, layout):
    x = data(shape, dtype, layout, seed=2)
    grad = data(shape, dtype, layout, seed=3, loc=0.0, scale=1.0)
    channels = shape[1]
    mean = torch.linspace(4, 6, channels, dtype=dtype)
    invstd = torch.linspace(0.2, 0.5, channels, dtype=dtype)
    weight = torch.linspace(-1, 2, channels, dtype=dtype)
    return x, grad, mean, invstd, weight


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout,shape", LAYOUTS)
def test_batch_norm_backward_reduce_matches_float64(dtype, layout, shape):
    x, grad, mean, invstd, weight = _backward_inputs(shape, dtype, layout)
    sum_dy, sum_dy_xmu, grad_weight, grad_bias = torch.batch_norm_backward_reduce(
        grad, x, mean, invstd, weight, True, True, True)
    xmu = x.double() - _bcast(mean.double(), x)
    ref_sum_dy = grad.double().sum(_dims(x))
    ref_sum_dy_xmu = (grad.double() * xmu).sum(_dims(x))
    tol = TOLERANCES[dtype] if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-4)
    for got, want in [(sum_dy, ref_sum_dy), (sum_dy_xmu, ref_sum_dy_xmu),
                      (grad_weight, ref_sum_dy_xmu * invstd.double()), (grad_bias, ref_sum_dy)]:
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **tol)
    # without a weight: no parameter gradients (empty, as CUDA's channels-last path returns)
    *_, grad_weight, grad_bias = torch.batch_norm_backward_reduce(grad, x, mean, invstd, None, True, False, False)
    assert grad_weight.numel() == 0 and grad_bias.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_batch_norm_backward_reduce_accumulates_half_input_in_float32(dtype, layout):
    # CUDA's contiguous kernel rounds each term and partial sum to half (pytorch#195701): deliberately not mirrored,
    # so both layouts stay at float32 accuracy (the H100 probe saw 4e-4 to 1e-3 relative error there for float16).
    x = data((16, 4, 32, 8), dtype, layout, seed=4, loc=0.0, scale=1.0)
    grad = data((16, 4, 32, 8), dtype, layout, seed=5, loc=0.0, scale=1.0)
    mean, var = _f64_stats(x)
    mean32, invstd32 = mean.float(), (1 / torch.sqrt(var + EPS)).float()
    sum_dy, sum_dy_xmu, *_ = torch.batch_norm_backward_reduce(grad, x, mean32, invstd32, None, True, False, False)
    ref_sum_dy = grad.double().sum(_dims(x))
    ref_sum_dy_xmu = (grad.double() * (x.double() - _bcast(mean32.double(), x))).sum(_dims(x))
    for got, want in [(sum_dy, ref_sum_dy), (sum_dy_xmu, ref_sum_dy_xmu)]:
        assert got.dtype == torch.float32
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout,shape", LAYOUTS)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_backward_elemt_matches_float64(dtype, layout, shape, affine):
    x, grad, mean, invstd, weight = _backward_inputs(shape, dtype, layout)
    weight = weight if affine else None
    sum_dy = torch.linspace(-3, 3, shape[1], dtype=dtype)
    sum_dy_xmu = torch.linspace(2, -1, shape[1], dtype=dtype)
    counts = torch.tensor([[5], [0], [17]], dtype=torch.int32)  # uneven, one empty rank: n = 22
    grad_input = torch.batch_norm_backward_elemt(grad, x, mean, invstd, weight, sum_dy, sum_dy_xmu, counts)
    n = 22.0
    inv = _bcast(invstd.double(), x)
    expected = (grad.double() - _bcast(sum_dy.double(), x) / n
                - (x.double() - _bcast(mean.double(), x)) * inv**2 * _bcast(sum_dy_xmu.double(), x) / n) * inv
    if affine:
        expected = expected * _bcast(weight.double(), x)
    assert grad_input.dtype == dtype and grad_input.stride() == x.stride()
    torch.testing.assert_close(grad_input.double(), expected, **TOLERANCES[dtype])
    with pytest.raises(RuntimeError, match="expected scalar type Int but found Long"):
        torch.batch_norm_backward_elemt(grad, x, mean, invstd, weight, sum_dy, sum_dy_xmu, counts.long())


def test_batch_norm_backward_elemt_layout_follows_both_tensors():
    # channels-last input with a contiguous grad_out takes CUDA's contiguous kernel: a contiguous result
    x, grad, mean, invstd, weight = _backward_inputs((3, 4, 2, 5), torch.float64, "channels_last")
    count = torch.tensor([3], dtype=torch.int32)
    sums = torch.zeros(4, dtype=torch.float64)
    grad_input = torch.batch_norm_backward_elemt(grad.contiguous(), x, mean, invstd, weight, sums, sums, count)
    assert grad_input.is_contiguous()

# ------------------------------------------------------------------------------------------------------------------
# 2. kernel overrides


def _elemt_plus_one(*args):
    return cpu_kernels.batch_norm_elemt(*args) + 1


def test_override_changes_the_result_and_reinstalling_restores_it(world_of_one):
    x = data((4, 3, 2), torch.float64)
    mean, invstd = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    builtin = torch.batch_norm_elemt(x, None, None, mean, invstd, EPS)

    install_cpu_kernels({"batch_norm_elemt": _elemt_plus_one})
    assert active_kernels()["batch_norm_elemt"] is _elemt_plus_one
    torch.testing.assert_close(torch.batch_norm_elemt(x, None, None, mean, invstd, EPS), builtin + 1)
    # ... and through the real autograd Function
    shifted = SyncBatchNormFunction.apply(x, None, None, None, None, EPS, 0.1, world_of_one, 1)
    torch.testing.assert_close(shifted, F.batch_norm(x, None, None, training=True, eps=EPS) + 1)
    assert active_overrides() == {"batch_norm_elemt": _elemt_plus_one}

    install_cpu_kernels()
    torch.testing.assert_close(torch.batch_norm_elemt(x, None, None, mean, invstd, EPS), builtin)
    assert active_kernels() == dict(zip(OP_NAMES, (getattr(cpu_kernels, name) for name in OP_NAMES)))


def test_install_rejects_unknown_names_and_non_callables():
    with pytest.raises(ValueError, match=r"batch_norm_bogus.*batch_norm_stats"):
        install_cpu_kernels({"batch_norm_bogus": _elemt_plus_one})
    with pytest.raises(TypeError, match="batch_norm_stats"):
        install_cpu_kernels({"batch_norm_stats": 3})
    assert active_kernels()["batch_norm_elemt"] is cpu_kernels.batch_norm_elemt  # nothing half-installed


def test_load_kernel_overrides():
    module = types.ModuleType("user_kernels")
    module.batch_norm_elemt = _elemt_plus_one
    module.helper = len
    assert load_kernel_overrides(module) == {"batch_norm_elemt": _elemt_plus_one}
    with pytest.raises(ValueError, match="defines none of the kernels"):
        load_kernel_overrides(types.ModuleType("empty"))


def test_install_device_kernels_substitutes_and_restores():
    """The Meta key stands in for a device: its kernel is the fake implementation install_cpu_kernels registered
    (the op's output metadata); a substitute replaces it, and removing the substitute brings it back."""
    x, stats = torch.zeros(2, 3, device="meta"), torch.zeros(3, device="meta")
    install_device_kernels({"batch_norm_elemt": lambda *args: torch.zeros(5, device="meta")}, device="Meta")
    try:
        assert torch.batch_norm_elemt(x, None, None, stats, stats, EPS).shape == (5,)
    finally:
        install_device_kernels(None, device="Meta")
    assert torch.batch_norm_elemt(x, None, None, stats, stats, EPS).shape == (2, 3)


# ------------------------------------------------------------------------------------------------------------------
# fake implementations: the metadata the compiled lane traces with is the metadata the kernels return


def _metadata(outputs):
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [(tuple(t.shape), t.dtype, t.stride()) for t in outputs]


def _fake_cases():
    """(op, args) over dtypes (mixed precision included), layouts, affine, grad flags, and a contiguous grad_out
    against channels-last input (the layout rule of backward_elemt)."""
    cases = []
    for dtype, param in ((torch.float64, torch.float64), (torch.float32, torch.float32),
                         (torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16)):
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        for layout, shape in LAYOUTS:
            x = data(shape, dtype, layout)
            grad = data(shape, dtype, layout, seed=3, loc=0.0, scale=1.0)
            channels = shape[1]
            mean = torch.linspace(4, 6, channels, dtype=acc)
            invstd = torch.linspace(0.2, 0.5, channels, dtype=acc)
            weight = torch.linspace(-1, 2, channels, dtype=param)
            counts = torch.tensor([3.0, 4.0], dtype=param)
            cases.append(("batch_norm_stats", (x, EPS)))
            cases.append(("batch_norm_gather_stats_with_counts",
                          (x, torch.stack([mean, mean + 1]), torch.stack([invstd, invstd]), weight.clone(),
                           weight.abs() + 1, 0.1, EPS, counts)))
            for w in (weight, None):
                cases.append(("batch_norm_elemt", (x, w, None if w is None else weight, mean, invstd, EPS)))
                for flags in ((True, True, True), (True, False, False)):
                    cases.append(("batch_norm_backward_reduce", (grad, x, mean, invstd, w, *flags)))
                count = torch.tensor([2, 3], dtype=torch.int32)
                w_acc = None if w is None else w.to(acc)
                cases.append(("batch_norm_backward_elemt", (grad, x, mean, invstd, w_acc, mean, invstd, count)))
                cases.append(("batch_norm_backward_elemt", (grad.contiguous(), x, mean, invstd, w_acc, mean, invstd,
                                                            count)))
    return cases


def test_fake_implementations_report_the_metadata_the_kernels_return():
    """For every op and input, the fake implementation (what torch.compile traces with, run here on meta tensors
    through the registered Meta kernel) gives each output the shape, dtype and strides the CPU kernel returns."""
    checked = 0
    for op, args in _fake_cases():
        real = getattr(torch, op)(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        meta = getattr(torch, op)(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args])
        assert _metadata(meta) == _metadata(real), (op, [getattr(a, "dtype", a) for a in args])
        checked += 1
    assert checked == 4 * len(LAYOUTS) * 12


def test_a_fake_implementation_that_forgets_the_memory_format_differs():
    """The comparison above can fail: a fake implementation that returns a contiguous output where the kernel keeps
    the input's channels_last format (a common slip) reports other strides."""
    x = data((5, 4, 3, 2), torch.float32, "channels_last")
    stats = torch.ones(4)
    real = torch.batch_norm_elemt(x, None, None, stats, stats, EPS)
    careless = torch.empty(x.shape, dtype=x.dtype, device="meta")
    assert _metadata(careless) != _metadata(real)
    assert _metadata(cpu_kernels.FAKE_KERNELS["batch_norm_elemt"](x.to("meta"), None, None, stats, stats, EPS)) \
        == _metadata(real)


def test_harness_kernel_behaviours_are_short_lines_for_the_report():
    assert 6 <= len(HARNESS_KERNEL_BEHAVIOURS) <= 10
    assert len(set(HARNESS_KERNEL_BEHAVIOURS)) == len(HARNESS_KERNEL_BEHAVIOURS)
    for line in HARNESS_KERNEL_BEHAVIOURS:
        assert isinstance(line, str) and line == line.strip() and "\n" not in line and 0 < len(line) <= 110
