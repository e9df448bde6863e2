"""harness.torch_sut: the forward mirror against torch's own module, the real autograd Function over gloo (1 rank
in-process, 2 spawned ranks) on the CPU kernels, and the factory."""
from __future__ import annotations


import os
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

from kernel_data import EPS, MEMORY_FORMATS, data
from harness import cpu_kernels
from harness.kernel_table import active_kernels, install_cpu_kernels
from harness.spec import OP_NAMES
from harness.torch_sut import CpuSyncBatchNorm, torch_factory

pytestmark = pytest.mark.usefixtures("builtin_kernels")


# ------------------------------------------------------------------------------------------------------------------
# 1. the forward mirror against torch.nn.SyncBatchNorm wherever that runs on CPU


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
        x = data((6, 3, 4, 5), torch.float64, layout, seed=10 + step).requires_grad_()
        module.zero_grad(set_to_none=True)
        y = module(x)
        y.backward(data(y.shape, torch.float64, seed=20 + step, loc=0.0, scale=1.0))
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
            torch.nn.SyncBatchNorm(3).double()(data((4, 3), torch.float64))
    finally:
        install_cpu_kernels()
        dist.destroy_process_group()
    # ... so compare with it where it runs: the same fallback without torch.distributed
    _assert_same(observed, _run_steps(upstream))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_function_at_world_size_one_matches_batch_norm(world_of_one, layout):
    """The real autograd Function (all_gather, all_reduce, the five kernels) with one rank equals F.batch_norm."""
    x = data((5, 3, 4, 2), torch.float64, layout).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    weight = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    bias = torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64, requires_grad=True)
    weight_ref, bias_ref = (t.detach().clone().requires_grad_() for t in (weight, bias))
    running = [torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    running_ref = [t.clone() for t in running]
    y = SyncBatchNormFunction.apply(x, weight, bias, *running, EPS, 0.1, world_of_one, 1)
    y_ref = F.batch_norm(x_ref, *running_ref, weight_ref, bias_ref, True, 0.1, EPS)
    grad = data(y.shape, torch.float64, seed=7, loc=0.0, scale=1.0)
    y.backward(grad)
    y_ref.backward(grad)
    assert y.stride() == x.stride()
    for got, want in [(y, y_ref), (x.grad, x_ref.grad), (weight.grad, weight_ref.grad),
                      (bias.grad, bias_ref.grad), (running[0], running_ref[0]), (running[1], running_ref[1])]:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

def test_function_never_calls_batch_norm_stats_on_an_empty_shard(world_of_one):
    """An empty contiguous (0, C, L) shard would make batch_norm_stats raise, as on CUDA: the Function's
    ``if input.numel() > 0`` keeps it from being called, forward and backward."""
    calls = []

    def spy(input, eps):
        calls.append(tuple(input.shape))
        return cpu_kernels.batch_norm_stats(input, eps)

    install_cpu_kernels({"batch_norm_stats": spy})
    x = torch.empty(0, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.ones(3, dtype=torch.float64, requires_grad=True)
    y = SyncBatchNormFunction.apply(x, weight, torch.zeros(3, dtype=torch.float64), None, None, EPS, 0.1,
                                    world_of_one, 1)
    y.sum().backward()
    assert y.shape == (0, 3, 5) and calls == []
    with pytest.raises(RuntimeError, match=r"cannot reshape tensor of 0 elements into shape \[0, 3, -1\]"):
        torch.batch_norm_stats(x.detach(), EPS)
    assert calls == [(0, 3, 5)]


# ------------------------------------------------------------------------------------------------------------------
# 2. two spawned ranks over gloo against single-process float64 BatchNorm on the concatenated batch

# (shard sizes, per-sample shape (C, *spatial), layout); the second has an empty rank
E2E_CASES = [((5, 3), (3, 4, 5), "channels_last"), ((6, 0), (3, 7), "contiguous")]
E2E_WEIGHT = (0.5, -1.5, 2.0)
E2E_BIAS = (0.1, 0.2, -0.3)


def _e2e_global(case_index):
    shards, sample_shape, _ = E2E_CASES[case_index]
    x = data((sum(shards), *sample_shape), torch.float64, seed=100 + case_index, loc=3.0, scale=2.0)
    grad = data((sum(shards), *sample_shape), torch.float64, seed=200 + case_index, loc=0.0, scale=1.0)
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


@pytest.mark.processes
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


def test_torch_factory_keeps_installed_overrides():
    def elemt_plus_one(*args):
        return cpu_kernels.batch_norm_elemt(*args) + 1

    install_cpu_kernels({"batch_norm_elemt": elemt_plus_one})
    torch_factory(3, eps=EPS, momentum=0.1, affine=True, track_running_stats=True, process_group=None,
                  device="cpu", dtype=None)
    assert active_kernels()["batch_norm_elemt"] is elemt_plus_one
    assert active_kernels()["batch_norm_stats"] is cpu_kernels.batch_norm_stats

