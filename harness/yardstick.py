"""The yardstick: how accurate a single-process torch BatchNorm is on a case's data, in the case's dtypes.

harness.tolerances lets the yardstick widen a tolerance only where it is itself accurate, so it should be the best
BatchNorm available, not whichever kernel a default happens to pick (on CUDA, native half-precision BatchNorm
shares SyncBatchNorm's half-rounding backward reduction, pytorch#195701, while cuDNN does not). So several
configurations run side by side, each with its own buffers, and each quantity takes the smallest error:
- on CPU: the case's memory layout (torch's CPU BatchNorm accumulates in double for float32 and in float for half,
  so it is nearly exact and one configuration is enough);
- on CUDA: the case's layout with cuDNN allowed and with cuDNN disabled, and the other layout (channels-last for a
  contiguous 4-D/5-D case, contiguous for a channels-last one).
Ranks whose spatial sizes differ cannot be concatenated: each shard (N_r, C, *S_r) is then viewed as (C, N_r·|S_r|)
and the group's batch as one (1, C, L) input, which has the same per-channel statistics.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from harness.reference.syncbn import Buffers

from .data import to_numpy, to_tensor, torch_dtype
from .spec import ModuleSpec

__all__ = ["Yardstick"]


def _any_batchnorm_class():
    import torch

    class AnyBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
        """torch's BatchNorm, for an input of any number of dims (the dim check is the only difference)."""

        def _check_input_dim(self, input) -> None:
            pass

    return AnyBatchNorm


@dataclass
class _Variant:
    module: Any
    layout: str
    cudnn: bool


class Yardstick:
    """Single-process BatchNorms in the case's dtypes (one per configuration), carrying their buffers across
    phases like the ranks do."""

    def __init__(self, spec: ModuleSpec, weight, bias, buffers: Buffers | None) -> None:
        self.spec = spec
        layouts = [spec.layout]
        if spec.device == "cuda" and spec.rank_spatial is None and len(spec.spatial) in (2, 3):
            other = {2: "channels_last", 3: "channels_last_3d"}[len(spec.spatial)]
            layouts.append("contiguous" if spec.layout != "contiguous" else other)
        configurations = [(spec.layout, True)]
        if spec.device == "cuda":
            configurations += [(spec.layout, False)] + [(layout, True) for layout in layouts[1:]]
        self.variants = [_Variant(_module(spec, weight, bias, buffers), layout, cudnn)
                         for layout, cudnn in configurations]

    def errors(self, shards, grads, training: bool, forward, backward, buffers) -> dict[str, float]:
        """Per quantity, the smallest max |error| against the reference over the configurations. One CPU thread,
        like the ranks (harness.rank.worker): a CPU reduction's rounding depends on how it is split."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._errors(shards, grads, training, forward, backward, buffers)
        finally:
            torch.set_num_threads(threads)

    def _errors(self, shards, grads, training: bool, forward, backward, buffers) -> dict[str, float]:
        best: dict[str, float] = {}
        for variant in self.variants:
            for name, error in _errors(self.spec, variant, shards, grads, training, forward, backward,
                                       buffers).items():
                best[name] = min(error, best.get(name, np.inf))
        return best


def _module(spec: ModuleSpec, weight, bias, buffers: Buffers | None):
    import torch

    module = _any_batchnorm_class()(spec.channels, eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
                                    track_running_stats=spec.track_running_stats)
    module = module.to(device="cuda" if spec.device == "cuda" else "cpu", dtype=torch_dtype(spec.effective_param_dtype))
    with torch.no_grad():
        if spec.affine:
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.from_numpy(bias))
        if buffers is not None:
            module.running_mean.copy_(torch.from_numpy(buffers.running_mean))
            module.running_var.copy_(torch.from_numpy(buffers.running_var))
            module.num_batches_tracked.fill_(buffers.num_batches_tracked)
    return module


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    """Shards of different spatial sizes as one (1, C, L) batch with the same per-channel elements."""
    return np.concatenate([np.moveaxis(a, 1, 0).reshape(a.shape[1], -1) for a in arrays], axis=1)[None]


def _unflat(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, start = [], 0
    for a in like:
        size = a.size // a.shape[1] if a.shape[1] else 0
        block = flat[0, :, start:start + size].reshape((a.shape[1], a.shape[0], *a.shape[2:]))
        out.append(np.moveaxis(block, 0, 1))
        start += size
    return out


def _errors(spec: ModuleSpec, variant: _Variant, shards, grads, training: bool, forward, backward,
            buffers) -> dict[str, float]:

    module = variant.module
    module.train(training)
    device = "cuda" if spec.device == "cuda" else "cpu"
    flat = training and len({x.shape[2:] for x in shards}) > 1
    # Training: one BatchNorm over the group's global batch; eval: one call per shard (no cross-rank coupling).
    batches = [(shards, grads)] if training else [([x], [g]) for x, g in zip(shards, grads)]
    outputs, grad_inputs = [], []
    grad_weight = np.zeros(spec.channels)
    grad_bias = np.zeros(spec.channels)
    for xs, gs in batches:
        x_np, g_np = (_flat(xs), _flat(gs)) if flat else (np.concatenate(xs), np.concatenate(gs))
        if x_np.size == 0:
            if training and module.num_batches_tracked is not None:
                module.num_batches_tracked += 1
            outputs.append(x_np)
            grad_inputs.append(x_np)
            continue
        layout = "contiguous" if flat else variant.layout
        x = to_tensor(x_np, spec.dtype, device, layout).requires_grad_(True)
        with _cudnn(variant.cudnn):
            y = module(x)
            y.backward(to_tensor(g_np, spec.dtype, device).to(y.dtype))
        outputs.append(to_numpy(y))
        grad_inputs.append(to_numpy(x.grad))
        if spec.affine:
            grad_weight += to_numpy(module.weight.grad)
            grad_bias += to_numpy(module.bias.grad)
            module.zero_grad(set_to_none=True)
    if training:
        if flat:
            outputs, grad_inputs = _unflat(outputs[0], shards), _unflat(grad_inputs[0], shards)
        else:
            split = np.cumsum([x.shape[0] for x in shards])[:-1]
            outputs = np.split(outputs[0], split) if outputs[0].size else outputs * len(shards)
            grad_inputs = np.split(grad_inputs[0], split) if grad_inputs[0].size else grad_inputs * len(shards)
    errors = {"output": _max_err(outputs, forward.outputs), "grad_input": _max_err(grad_inputs, backward.grad_inputs)}
    if spec.affine:
        errors["grad_weight"] = _max_err([grad_weight], [backward.grad_weight])
        errors["grad_bias"] = _max_err([grad_bias], [backward.grad_bias])
    if buffers is not None:
        errors["running_mean"] = _max_err([to_numpy(module.running_mean)], [buffers.running_mean])
        errors["running_var"] = _max_err([to_numpy(module.running_var)], [buffers.running_var])
    return errors


@contextlib.contextmanager
def _cudnn(enabled: bool) -> Iterator[None]:
    """cuDNN allowed or not inside the block. Not torch.backends.cudnn.flags: it also sets the legacy allow_tf32
    flag, which must not be mixed with the fp32_precision API harness.tf32 uses (torch 2.9+ raises)."""
    import torch

    before = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = before


def _max_err(actual, expected) -> float:
    values = [float(np.max(np.abs(a.reshape(e.shape) - e))) for a, e in zip(actual, expected) if e.size]
    return max(values) if values else 0.0
