"""harness.torch_sut: the CPU kernels against float64 formulas, the forward mirror against torch's own module, the
real autograd Function over gloo (1 rank in-process, 2 spawned ranks), and kernel overrides."""
from __future__ import annotations

import math
import os
import time
import types
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

from harness import torch_sut
from harness.torch_sut import (
    OP_NAMES,
    CpuSyncBatchNorm,
    active_kernels,
    install_cpu_kernels,
    install_device_kernels,
    load_kernel_overrides,
    torch_factory,
)

EPS = 1e-5
MEMORY_FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
}
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


@pytest.fixture(autouse=True)
def builtin_kernels():
    """Every test starts and ends with the built-in kernels installed."""
    install_cpu_kernels()
    yield
    install_cpu_kernels()


@pytest.fixture
def world_of_one(tmp_path):
    """A gloo process group of world size 1 in this process (FileStore in tmp_path), destroyed afterwards."""
    store = dist.FileStore(str(tmp_path / "store1"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=timedelta(seconds=30))
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def _data(shape, dtype, layout="contiguous", *, seed=0, loc=5.0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale + loc
    return x.to(dtype).contiguous(memory_format=MEMORY_FORMATS[layout])


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
    x = _data(shape, dtype, layout)
    mean, invstd = torch.batch_norm_stats(x, EPS)
    ref_mean, ref_var = _f64_stats(x)
    assert mean.dtype == dtype and invstd.dtype == dtype and mean.shape == (shape[1],)
    torch.testing.assert_close(mean.double(), ref_mean, **TOLERANCES[dtype])
    torch.testing.assert_close(invstd.double(), 1 / torch.sqrt(ref_var + EPS), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_norm_stats_reduced_precision_returns_float32(dtype):
    x = _data((6, 3, 4), dtype, scale=1.0, loc=0.5)
    mean, invstd = torch.batch_norm_stats(x, EPS)
    assert mean.dtype == torch.float32 and invstd.dtype == torch.float32
    ref_mean, ref_var = _f64_stats(x)  # of the rounded input: the accumulation itself is float32
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(invstd.double(), 1 / torch.sqrt(ref_var + EPS), rtol=1e-5, atol=1e-6)


def test_batch_norm_stats_inv_std_is_zero_for_zero_var_and_zero_eps():
    x = _data((4, 2, 3), torch.float64)
    x[:, 1] = 2.5  # a constant channel
    _, invstd = torch.batch_norm_stats(x, 0.0)
    assert invstd[1].item() == 0.0 and invstd[0].item() > 0
    _, invstd = torch.batch_norm_stats(x, EPS)
    assert invstd[1].item() == pytest.approx(1 / math.sqrt(EPS))


def _gather_inputs(shard_rows, dtype, *, zero_row_invstd=1.0, seed=1):
    """Per-shard (mean, invstd, count) rows from float64 formulas; a shard of 0 rows gets (0, zero_row_invstd)."""
    x = _data((sum(shard_rows), 3, 4), torch.float64, seed=seed)
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
    x = _data((1, 3), torch.float64)
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
    x = _data(shape, dtype, layout)
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
    x = _data((4, 3, 2, 2), torch.float16, "channels_last", scale=1.0, loc=0.0)
    mean, invstd = torch.zeros(3), torch.ones(3)
    weight, bias = torch.full((3,), 2.0), torch.full((3,), 0.5)
    y = torch.batch_norm_elemt(x, weight, bias, mean, invstd, EPS)
    assert y.dtype == torch.float16 and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, (x.float() * 2 + 0.5).half())
    with pytest.raises(RuntimeError, match="Expected weight to have type Float but got Double"):
        torch.batch_norm_elemt(x, weight.double(), None, mean, invstd, EPS)


def _backward_inputs(shape, dtype, layout):
    x = _data(shape, dtype, layout, seed=2)
    grad = _data(shape, dtype, layout, seed=3, loc=0.0, scale=1.0)
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
# 2. the forward mirror against torch.nn.SyncBatchNorm wherever that runs on CPU


def _module_pair(*, momentum, affine, track_running_stats, dtype=torch.float64):
    options = dict(momentum=momentum, affine=affine, track_running_stats=track_running_stats)
    upstream = torch.nn.SyncBatchNorm(3, **options).to(dtype)
    mirror = CpuSyncBatchNorm(3, **options).to(dtype)
    if affine:
        with torch.no_grad():
            upstream.weight.copy_(torch.tensor([0.5, -1.5, 2.0]))
            upstream.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    mirror.load_state_dict(upstream.state_dict())
    return upstream, mirror


def _run_steps(module, *, train_steps=3, eval_steps=2, layout="channels_last"):
    """Forward and backward on a fixed sequence of batches; everything observable, in order."""
    observed = []
    for step in range(train_steps + eval_steps):
        module.train(step < train_steps)
        x = _data((6, 3, 4, 5), torch.float64, layout, seed=10 + step).requires_grad_()
        module.zero_grad(set_to_none=True)
        y = module(x)
        y.backward(_data(y.shape, torch.float64, seed=20 + step, loc=0.0, scale=1.0))
        observed.append({
            "y": y.detach(), "grad_input": x.grad,
            **{f"grad_{name}": p.grad for name, p in module.named_parameters()},
            **{name: b.clone() for name, b in module.named_buffers()},
        })
    return observed


def _assert_same(actual, expected):
    assert len(actual) == len(expected)
    for step, (got, want) in enumerate(zip(actual, expected)):
        assert got.keys() == want.keys(), step
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0,
                                       msg=lambda m, step=step, key=key: f"step {step} {key}: {m}")


@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [None, 0.1])
def test_mirror_equals_torch_module_without_distributed(momentum, affine, track_running_stats):
    assert not dist.is_initialized()
    upstream, mirror = _module_pair(momentum=momentum, affine=affine, track_running_stats=track_running_stats)
    _assert_same(_run_steps(mirror), _run_steps(upstream))


@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("momentum", [None, 0.1])
def test_mirror_falls_back_like_torch_at_world_size_one(tmp_path, momentum, track_running_stats):
    upstream, mirror = _module_pair(momentum=momentum, affine=True, track_running_stats=track_running_stats)

    def must_not_run(*args):
        raise AssertionError("world size 1 must fall back to F.batch_norm, not call the sync kernels")

    store = dist.FileStore(str(tmp_path / "store1"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=timedelta(seconds=30))
    try:
        install_cpu_kernels({name: must_not_run for name in OP_NAMES})
        observed = _run_steps(mirror)
        # torch's own module refuses CPU input in training once torch.distributed is initialised ...
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            torch.nn.SyncBatchNorm(3).double()(_data((4, 3), torch.float64))
    finally:
        install_cpu_kernels()
        dist.destroy_process_group()
    # ... so compare with it where it runs: the same fallback without torch.distributed
    _assert_same(observed, _run_steps(upstream))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_function_at_world_size_one_matches_batch_norm(world_of_one, layout):
    """The real autograd Function (all_gather, all_reduce, the five kernels) with one rank equals F.batch_norm."""
    x = _data((5, 3, 4, 2), torch.float64, layout).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    weight = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    bias = torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64, requires_grad=True)
    weight_ref, bias_ref = (t.detach().clone().requires_grad_() for t in (weight, bias))
    running = [torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    running_ref = [t.clone() for t in running]
    y = SyncBatchNormFunction.apply(x, weight, bias, *running, EPS, 0.1, world_of_one, 1)
    y_ref = F.batch_norm(x_ref, *running_ref, weight_ref, bias_ref, True, 0.1, EPS)
    grad = _data(y.shape, torch.float64, seed=7, loc=0.0, scale=1.0)
    y.backward(grad)
    y_ref.backward(grad)
    assert y.stride() == x.stride()
    for got, want in [(y, y_ref), (x.grad, x_ref.grad), (weight.grad, weight_ref.grad),
                      (bias.grad, bias_ref.grad), (running[0], running_ref[0]), (running[1], running_ref[1])]:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# 3. two spawned ranks over gloo against single-process float64 BatchNorm on the concatenated batch

# (shard sizes, per-sample shape (C, *spatial), layout); the second has an empty rank
E2E_CASES = [((5, 3), (3, 4, 5), "channels_last"), ((6, 0), (3, 7), "contiguous")]
E2E_WEIGHT = (0.5, -1.5, 2.0)
E2E_BIAS = (0.1, 0.2, -0.3)


def _e2e_global(case_index):
    shards, sample_shape, _ = E2E_CASES[case_index]
    x = _data((sum(shards), *sample_shape), torch.float64, seed=100 + case_index, loc=3.0, scale=2.0)
    grad = _data((sum(shards), *sample_shape), torch.float64, seed=200 + case_index, loc=0.0, scale=1.0)
    return x, grad


def _e2e_rank(rank, world_size, store_path, result_dir):
    """Runs inside a spawned rank: every case, forward + backward + one eval forward, saved to result_dir."""
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world_size), rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=60))
    try:
        results = []
        for case_index, (shards, _, layout) in enumerate(E2E_CASES):
            x_global, grad_global = _e2e_global(case_index)
            start = sum(shards[:rank])
            rows = slice(start, start + shards[rank])
            module = torch_factory(3, eps=EPS, momentum=0.1, affine=True, track_running_stats=True,
                                   process_group=None, device="cpu", dtype=torch.float64)
            with torch.no_grad():
                module.weight.copy_(torch.tensor(E2E_WEIGHT, dtype=torch.float64))
                module.bias.copy_(torch.tensor(E2E_BIAS, dtype=torch.float64))
            x = x_global[rows].contiguous(memory_format=MEMORY_FORMATS[layout]).requires_grad_()
            y = module(x)
            y.backward(grad_global[rows])
            module.eval()
            y_eval = module(x_global[rows])
            results.append({
                "y": y.detach(), "grad_input": x.grad, "grad_weight": module.weight.grad,
                "grad_bias": module.bias.grad, "running_mean": module.running_mean.clone(),
                "running_var": module.running_var.clone(), "y_eval": y_eval.detach(),
            })
        torch.save(results, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawn(fn, args, nprocs, timeout_s):
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"{nprocs} spawned ranks did not finish within {timeout_s} s")


def test_two_ranks_match_single_process_batch_norm(tmp_path):
    world_size = 2
    _spawn(_e2e_rank, (world_size, str(tmp_path / "store2"), str(tmp_path)), world_size, timeout_s=120)
    per_rank = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world_size)]
    tol = dict(rtol=1e-10, atol=1e-10)
    for case_index, (shards, sample_shape, _) in enumerate(E2E_CASES):
        x, grad = _e2e_global(case_index)
        x = x.requires_grad_()
        weight = torch.tensor(E2E_WEIGHT, dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(E2E_BIAS, dtype=torch.float64, requires_grad=True)
        running_mean, running_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        y = F.batch_norm(x, running_mean, running_var, weight, bias, True, 0.1, EPS)
        y.backward(grad)
        y_eval = F.batch_norm(x.detach(), running_mean, running_var, weight, bias, False, 0.1, EPS)
        results = [per_rank[rank][case_index] for rank in range(world_size)]

        def zeros_if_none(value, shape):
            return torch.zeros(shape, dtype=torch.float64) if value is None else value

        shard_shapes = [(rows, *sample_shape) for rows in shards]
        torch.testing.assert_close(torch.cat([r["y"] for r in results]), y.detach(), **tol)
        torch.testing.assert_close(
            torch.cat([zeros_if_none(r["grad_input"], s) for r, s in zip(results, shard_shapes)]), x.grad, **tol)
        # PyTorch leaves the cross-rank sum of parameter gradients to DDP: compare the sum
        torch.testing.assert_close(sum(zeros_if_none(r["grad_weight"], (3,)) for r in results), weight.grad, **tol)
        torch.testing.assert_close(sum(zeros_if_none(r["grad_bias"], (3,)) for r in results), bias.grad, **tol)
        torch.testing.assert_close(torch.cat([r["y_eval"] for r in results]), y_eval, **tol)
        for result in results:
            torch.testing.assert_close(result["running_mean"], running_mean, **tol)
            torch.testing.assert_close(result["running_var"], running_var, **tol)


# ------------------------------------------------------------------------------------------------------------------
# 4. kernel overrides


def _elemt_plus_one(*args):
    return torch_sut.batch_norm_elemt(*args) + 1


def test_override_changes_the_result_and_reinstalling_restores_it(world_of_one):
    x = _data((4, 3, 2), torch.float64)
    mean, invstd = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    builtin = torch.batch_norm_elemt(x, None, None, mean, invstd, EPS)

    install_cpu_kernels({"batch_norm_elemt": _elemt_plus_one})
    assert active_kernels()["batch_norm_elemt"] is _elemt_plus_one
    torch.testing.assert_close(torch.batch_norm_elemt(x, None, None, mean, invstd, EPS), builtin + 1)
    # ... and through the real autograd Function
    shifted = SyncBatchNormFunction.apply(x, None, None, None, None, EPS, 0.1, world_of_one, 1)
    torch.testing.assert_close(shifted, F.batch_norm(x, None, None, training=True, eps=EPS) + 1)
    # torch_factory keeps the overrides already installed
    torch_factory(3, eps=EPS, momentum=0.1, affine=True, track_running_stats=True, process_group=None,
                  device="cpu", dtype=None)
    assert active_kernels()["batch_norm_elemt"] is _elemt_plus_one

    install_cpu_kernels()
    torch.testing.assert_close(torch.batch_norm_elemt(x, None, None, mean, invstd, EPS), builtin)
    assert active_kernels() == dict(zip(OP_NAMES, (getattr(torch_sut, name) for name in OP_NAMES)))


def test_install_rejects_unknown_names_and_non_callables():
    with pytest.raises(ValueError, match=r"batch_norm_bogus.*batch_norm_stats"):
        install_cpu_kernels({"batch_norm_bogus": _elemt_plus_one})
    with pytest.raises(TypeError, match="batch_norm_stats"):
        install_cpu_kernels({"batch_norm_stats": 3})
    assert active_kernels()["batch_norm_elemt"] is torch_sut.batch_norm_elemt  # nothing half-installed


def test_load_kernel_overrides():
    module = types.ModuleType("user_kernels")
    module.batch_norm_elemt = _elemt_plus_one
    module.helper = len
    assert load_kernel_overrides(module) == {"batch_norm_elemt": _elemt_plus_one}
    with pytest.raises(ValueError, match="defines none of the kernels"):
        load_kernel_overrides(types.ModuleType("empty"))


def test_install_device_kernels_substitutes_and_restores():
    x, stats = torch.zeros(2, 3, device="meta"), torch.zeros(3, device="meta")
    install_device_kernels({"batch_norm_elemt": lambda *args: torch.full_like(args[0], 7.0)}, device="Meta")
    try:
        assert torch.batch_norm_elemt(x, None, None, stats, stats, EPS).shape == (2, 3)
    finally:
        install_device_kernels(None, device="Meta")
    with pytest.raises(NotImplementedError):
        torch.batch_norm_elemt(x, None, None, stats, stats, EPS)


# ------------------------------------------------------------------------------------------------------------------
# the factory and conversion


def test_torch_factory_on_cpu():
    module = torch_factory(4, eps=1e-3, momentum=None, affine=False, track_running_stats=True,
                           process_group=None, device="cpu", dtype=torch.float16)
    assert type(module) is CpuSyncBatchNorm
    assert module.eps == 1e-3 and module.momentum is None and module.weight is None
    assert module.running_mean.dtype == torch.float16 and module.num_batches_tracked.dtype == torch.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_factory_on_cuda_is_upstream():
    module = torch_factory(4, eps=EPS, momentum=0.1, affine=True, track_running_stats=True,
                           process_group=None, device="cuda", dtype=torch.float32)
    assert type(module) is torch.nn.SyncBatchNorm and module.weight.is_cuda


def test_convert_sync_batchnorm_builds_the_mirror():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.InstanceNorm2d(3))
    converted = CpuSyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[1]) is CpuSyncBatchNorm and type(converted[2]) is torch.nn.InstanceNorm2d
    assert converted[1].weight is model[1].weight
