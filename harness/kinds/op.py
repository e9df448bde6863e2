"""The op kind: one of the five kernels called alone, against harness.reference.ops on the same rounded inputs
(harness.spec.OpSpec).

The op runs inside a rank of the world-size-1 pool (harness.rank.op.run: a kernel that crashes takes down a rank,
not pytest). Shard 0 is the op's input; the other shards only feed the statistics that gather and backward_elemt
combine: the controller computes them (``build_op_call``) and sends the op's arguments as the rank's request.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import harness.reference.ops as ref

from ..compare import compare_arrays, compare_exact
from ..data import make_grad_output, make_input, make_params, quantize
from ..result import CaseResult, Failure
from ..spec import OpSpec
from ..tolerances import op_tolerance
from .base import Plan
from .module import offset_attribute, shard_attributes

__all__ = ["plan", "judge", "build_op_call", "compare_op", "attributes"]


def _acc(dtype: str) -> str:
    """The accumulation dtype of the CUDA kernels: double for double, float for everything else."""
    return "float64" if dtype == "float64" else "float32"


def _per_channel_sum(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=tuple(i for i in range(a.ndim) if i != 1))


def _bcast(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (like.ndim - 2))


def build_op_call(spec: OpSpec) -> tuple[list[Any], list[tuple[str, np.ndarray | None, str, int, float]]]:
    """The op's arguments (tensors as ``("tensor", array, dtype, layout)``) and, per output, (name, expected,
    expected dtype, reduction count, magnitude) for the tolerance."""
    acc = _acc(spec.dtype)
    params = make_params(spec)
    shards = [quantize(make_input(spec, 0, r, params), spec.dtype) for r in range(len(spec.shard_sizes))]
    grads = [quantize(make_grad_output(spec, 0, r), spec.dtype) for r in range(len(spec.shard_sizes))]
    x, g = shards[0], grads[0]
    count = x.size // spec.channels
    weight = quantize(params.weight, acc) if spec.affine else None
    bias = quantize(params.bias, acc) if spec.affine else None

    def tensor(a: np.ndarray | None, dtype: str, layout: str = "contiguous"):
        return None if a is None else ("tensor", a, dtype, layout)

    # Global statistics of all shards, rounded to the accumulation dtype as a real caller would hold them.
    stats = [ref.batch_norm_stats(s, spec.eps) for s in shards if s.size]
    counts = np.array([s.size // spec.channels for s in shards if s.size], dtype=np.float64)
    mean_all = quantize(np.stack([m for m, _ in stats]), acc)
    invstd_all = quantize(np.stack([i for _, i in stats]), acc)
    mean, invstd = ref.batch_norm_gather_stats_with_counts(x, mean_all, invstd_all, None, None, 0.0, spec.eps,
                                                           counts)
    mean, invstd = quantize(mean, acc), quantize(invstd, acc)
    kappa = float(np.max(np.abs(mean) * invstd))  # offset of the data in units of its spread
    w = np.ones(spec.channels) if weight is None else np.abs(weight)
    layout = spec.layout
    if spec.op == "batch_norm_stats":
        m, i = ref.batch_norm_stats(x, spec.eps)
        args = [tensor(x, spec.dtype, layout), spec.eps]
        outputs = [("mean", m, acc, count, float(np.max(np.abs(x)))),
                   ("invstd", i, acc, count, float(np.max(i)) * (1 + kappa))]
    elif spec.op == "batch_norm_gather_stats_with_counts":
        running_mean, running_var = quantize(params.running_mean, acc), quantize(params.running_var, acc)
        rm, rv = running_mean.copy(), running_var.copy()
        m, i = ref.batch_norm_gather_stats_with_counts(x, mean_all, invstd_all, rm, rv, spec.momentum, spec.eps,
                                                       counts)
        world = len(counts)
        args = [tensor(x, spec.dtype, layout), tensor(mean_all, acc), tensor(invstd_all, acc),
                tensor(running_mean, acc), tensor(running_var, acc), spec.momentum, spec.eps, tensor(counts, acc)]
        outputs = [("mean", m, acc, world, float(np.max(np.abs(mean_all)))),
                   ("invstd", i, acc, world, float(np.max(i)) * (1 + kappa) ** 2),
                   ("running_mean", rm, acc, world, float(max(np.max(np.abs(rm)), np.max(np.abs(m))))),
                   ("running_var", rv, acc, world, float(np.max(np.abs(rv))) * (1 + kappa) ** 2)]
    elif spec.op == "batch_norm_elemt":
        y = ref.batch_norm_elemt(x, weight, bias, mean, invstd, spec.eps)
        magnitude = (np.abs(x) + _bcast(np.abs(mean), x)) * _bcast(invstd * w, x)
        magnitude = float(np.max(magnitude)) + (float(np.max(np.abs(bias))) if bias is not None else 0.0)
        args = [tensor(x, spec.dtype, layout), tensor(weight, acc), tensor(bias, acc), tensor(mean, acc),
                tensor(invstd, acc), spec.eps]
        outputs = [("output", y, spec.dtype, 1, magnitude)]
    elif spec.op == "batch_norm_backward_reduce":
        sum_dy, sum_dy_xmu, grad_weight, grad_bias = ref.batch_norm_backward_reduce(
            g, x, mean, invstd, weight, True, spec.affine, spec.affine)
        abs_g = float(np.max(_per_channel_sum(np.abs(g))))
        abs_gx = float(np.max(_per_channel_sum(np.abs(g) * (np.abs(x) + _bcast(np.abs(mean), x)))))
        args = [tensor(g, spec.dtype, layout), tensor(x, spec.dtype, layout), tensor(mean, acc), tensor(invstd, acc),
                tensor(weight, acc), True, spec.affine, spec.affine]
        outputs = [("sum_dy", sum_dy, acc, count, abs_g), ("sum_dy_xmu", sum_dy_xmu, acc, count, abs_gx),
                   ("grad_weight", grad_weight, acc, count, abs_gx * float(np.max(invstd))),
                   ("grad_bias", grad_bias, acc, count, abs_g)]
    else:  # batch_norm_backward_elemt
        sums = [ref.batch_norm_backward_reduce(gr, s, mean, invstd, weight, True, False, False)[:2]
                for gr, s in zip(grads, shards) if s.size]
        sum_dy = quantize(np.sum([s[0] for s in sums], axis=0), acc)
        sum_dy_xmu = quantize(np.sum([s[1] for s in sums], axis=0), acc)
        int_counts = np.array([s.size // spec.channels for s in shards if s.size], dtype=np.int64)
        n = int(int_counts.sum())
        dx = ref.batch_norm_backward_elemt(g, x, mean, invstd, weight, sum_dy, sum_dy_xmu, int_counts)
        magnitude = (np.abs(g) + _bcast(np.abs(sum_dy) / n, x)
                     + (np.abs(x) + _bcast(np.abs(mean), x)) * _bcast(invstd**2 * np.abs(sum_dy_xmu) / n, x))
        magnitude = float(np.max(magnitude * _bcast(w * invstd, x)))
        args = [tensor(g, spec.dtype, layout), tensor(x, spec.dtype, layout), tensor(mean, acc), tensor(invstd, acc),
                tensor(weight, acc), tensor(sum_dy, acc), tensor(sum_dy_xmu, acc),
                ("tensor", int_counts.astype(np.float64), "int32", "contiguous")]
        outputs = [("grad_input", dx, spec.dtype, 1, magnitude)]
    return args, outputs


def plan(spec: OpSpec):
    args, outputs = build_op_call(spec)
    return Plan(request={"args": args}, expected=lambda: outputs)


def attributes(p: dict[str, Any]) -> list[str]:
    """An op case's parameters as the diagnosis compares them (harness.kinds.CaseKind.attributes)."""
    return [f"op {p.get('op')}", f"dtype {p.get('dtype')}", f"{2 + len(p.get('spatial') or ())}-D input",
            f"layout {p.get('layout')}", "affine" if p.get("affine", True) else "affine off",
            *shard_attributes(p), *offset_attribute(p)]


def judge(spec: OpSpec, outputs, actual: list[Any], result: CaseResult) -> CaseResult:
    return compare_op(spec, outputs, actual[0]["outputs"], result)


def compare_op(spec: OpSpec, outputs, actual: list[Any], result: CaseResult) -> CaseResult:
    """Compare what harness.rank.op.run returned (``actual``) with build_op_call's ``outputs``."""
    if len(actual) != len(outputs):
        result.failures.append(Failure("raised", f"{spec.op} returned {len(actual)} values, expected "
                                       f"{len(outputs)} ({', '.join(o[0] for o in outputs)})", rank=0))
    for (name, expected, dtype, count, magnitude), got in zip(outputs, actual):
        common = dict(phase=spec.op, rank=0, ranks=(0,), dtype=dtype)
        if expected is None:
            absent = got is None or got[0].size == 0
            result.comparisons.append(compare_exact(absent, True, quantity=name + ".absent",
                                                    reason="not asked for: None or empty, like CUDA", **common))
            continue
        array, got_dtype = got if got is not None else (None, None)
        result.comparisons.append(compare_exact(got_dtype, dtype, quantity=name + ".dtype",
                                                reason="the CUDA kernel's output dtype", **common))
        tolerance = op_tolerance(dtype=dtype, count=count, scale=magnitude)
        result.comparisons.append(compare_arrays(array, expected, tolerance, quantity=name, **common))
    return result
