"""What a case should produce: the float64 reference on the exact values the ranks saw, plus the yardstick.

The yardstick (see harness.tolerances) is the error of a single-process BatchNorm in the case's dtypes on the same
global batch of each process group: in training one BatchNorm over the group's concatenated shards, in eval one per
shard (eval has no cross-rank dependence), on the case's device. On CPU, torch's BatchNorm accumulates float32 in
double (``at::acc_type<float, /*is_cuda=*/false>``), so its error is tiny and the conditioning-aware floor of
harness.tolerances does the work there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reference.syncbn import TOO_FEW_VALUES, Buffers, syncbn_backward, syncbn_forward

from .data import make_grad_output, make_input, make_params, quantize, torch_dtype
from .rank_case import phase_name
from .spec import CaseSpec
from .tolerances import UNIT_ROUNDOFF

__all__ = ["ExpectedPhase", "ExpectedCase", "expected_module_case"]


@dataclass
class ExpectedPhase:
    name: str
    training: bool
    outputs: dict[int, np.ndarray] = field(default_factory=dict)  # by rank
    grad_inputs: dict[int, np.ndarray] = field(default_factory=dict)
    buffers: dict[int, Buffers] = field(default_factory=dict)
    grad_weight: dict[int, np.ndarray | None] = field(default_factory=dict)  # by group index
    grad_bias: dict[int, np.ndarray | None] = field(default_factory=dict)
    scales: dict[tuple[int, str], float] = field(default_factory=dict)  # (group, quantity) -> magnitude
    yardstick: dict[tuple[int, str], float] = field(default_factory=dict)  # (group, quantity) -> max |error|


@dataclass
class ExpectedCase:
    spec: CaseSpec
    phases: list[ExpectedPhase]
    errors: dict[int, dict[str, Any]]  # by rank: the error the spec requires, {"phase", "type", "message"}


def _max_abs(arrays) -> float:
    values = [float(np.max(np.abs(a))) for a in arrays if a is not None and np.size(a)]
    return max(values) if values else 0.0


def expected_module_case(spec: CaseSpec, *, yardstick: bool = True) -> ExpectedCase:
    """Run the reference over every group and phase; an error the spec requires ends the phases of the ranks that
    raise it (the whole group in training, a lone rank in eval without running statistics)."""
    params = make_params(spec)
    pdt = spec.effective_param_dtype
    weight = quantize(params.weight, pdt) if spec.affine else None
    bias = quantize(params.bias, pdt) if spec.affine else None
    initial = Buffers(quantize(params.running_mean, pdt), quantize(params.running_var, pdt),
                      params.num_batches_tracked) if spec.track_running_stats else None
    total_phases = spec.steps + spec.eval_steps
    phases = [ExpectedPhase(phase_name(spec, p), p < spec.steps) for p in range(total_phases)]
    errors: dict[int, dict[str, Any]] = {}
    for gi, members in enumerate(spec.rank_groups):
        buffers = initial.copy() if initial is not None else None
        batchnorm = _batchnorm_module(spec, weight, bias, buffers) if yardstick else None
        live = list(members)  # ranks not yet stopped by an error the spec requires
        carried: dict[str, float] = {}
        for p, phase in enumerate(phases):
            # eval without running statistics has no cross-rank coupling: a rank whose shard holds one value per
            # channel raises alone, the others go on.
            local = not phase.training and not spec.track_running_stats
            for r in [r for r in live if local and spec.shard_sizes[r] * spec.elements_per_sample == 1]:
                errors[r] = {"phase": phase.name, "type": "ValueError", "message": TOO_FEW_VALUES}
                live.remove(r)
            if not live:
                break
            shards = [quantize(make_input(spec, p, r, params), spec.dtype) for r in live]
            grads = [quantize(make_grad_output(spec, p, r), spec.dtype) for r in live]
            try:
                forward = syncbn_forward(shards, weight=weight, bias=bias, buffers=buffers, momentum=spec.momentum,
                                         eps=spec.eps, training=phase.training,
                                         track_running_stats=spec.track_running_stats)
            except ValueError as exc:  # a global count of 1 in training: every rank of the group raises
                for r in live:
                    errors[r] = {"phase": phase.name, "type": "ValueError", "message": str(exc)}
                break
            backward = syncbn_backward(shards, grads, weight=weight, forward=forward)
            buffers = forward.buffers if spec.track_running_stats else None
            for i, r in enumerate(live):
                phase.outputs[r] = forward.outputs[i]
                phase.grad_inputs[r] = backward.grad_inputs[i]
                if buffers is not None:
                    phase.buffers[r] = buffers
            phase.grad_weight[gi] = backward.grad_weight
            phase.grad_bias[gi] = backward.grad_bias
            phase.scales.update(_scales(gi, shards, grads, forward, backward, buffers, weight,
                                        UNIT_ROUNDOFF[spec.dtype]))
            # Buffers carry their rounding errors into later phases (eval included): so do their scales.
            for name in ("running_mean", "running_var"):
                if (gi, name) in phase.scales:
                    carried[name] = phase.scales[(gi, name)] = max(carried.get(name, 0.0), phase.scales[(gi, name)])
            if batchnorm is not None:
                phase.yardstick.update(_yardstick(spec, batchnorm, gi, shards, grads, phase, forward, backward,
                                                  buffers))
    return ExpectedCase(spec, phases, errors)


def _scales(gi, shards, grads, forward, backward, buffers, weight, mean_unit: float
            ) -> dict[tuple[int, str], float]:
    """Magnitudes that bound each quantity's rounding error (see harness.tolerances).

    kappa_c = |mean_c|·invstd_c is the data's offset in units of its normalised spread: holding the mean in the
    dtype already costs u·kappa in every normalised value x̂, so each scale counts |x̂| + kappa where x̂ appears."""
    channels = shards[0].shape[1]
    w = np.ones(channels) if weight is None else np.abs(weight)
    reduce = lambda a: a.sum(axis=tuple(i for i in range(a.ndim) if i != 1))  # noqa: E731
    sum_g = np.zeros(channels)
    sum_gx = np.zeros(channels)
    max_g = np.zeros(channels)
    max_xhat = np.zeros(channels)
    kappa = np.zeros(channels)
    count = 0
    for g, x, mean, invstd in zip(grads, shards, forward.shard_mean, forward.shard_invstd):
        if not g.size:
            continue
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = np.abs(x - mean.reshape(shape)) * invstd.reshape(shape)
        kappa = np.maximum(kappa, np.abs(mean) * invstd)
        shard_kappa = (np.abs(mean) * invstd).reshape(shape)
        sum_g += reduce(np.abs(g))
        sum_gx += reduce(np.abs(g) * (xhat + shard_kappa))
        max_g = np.maximum(max_g, np.abs(g).max(axis=tuple(i for i in range(g.ndim) if i != 1)))
        max_xhat = np.maximum(max_xhat, xhat.max(axis=tuple(i for i in range(x.ndim) if i != 1)))
        count += g.size // channels
    live = [invstd for x, invstd in zip(shards, forward.shard_invstd) if x.size]
    invstd_all = np.max(np.stack(live), axis=0) if live else np.zeros(channels)
    x_term = max_xhat + kappa
    mean_g = sum_g / max(count, 1)
    scales = {
        (gi, "output"): max(_max_abs(forward.outputs), float(np.max(w * x_term))),
        (gi, "grad_input"): max(_max_abs(backward.grad_inputs),
                                float(np.max(w * invstd_all * (max_g + mean_g + x_term * sum_gx / max(count, 1))))),
        (gi, "grad_weight"): float(np.max(sum_gx)),
        (gi, "grad_bias"): float(np.max(sum_g)),
    }
    if buffers is not None:
        scales[(gi, "running_mean")] = _max_abs([buffers.running_mean])
        running_var_scale = _max_abs([buffers.running_var]) * (1.0 + float(np.max(kappa)))
        total = forward.population[0] if forward.population else 0
        if forward.mode == "train" and total > 1 and live:
            # PyTorch's protocol exchanges invstd = 1/sqrt(var + eps), not var: recovering var = 1/invstd² - eps
            # costs u·(var + eps), which dominates when var is far below eps; it enters scaled by n/(n-1).
            running_var_scale += float(np.max(1.0 / np.stack(live) ** 2)) * total / (total - 1)
            # The shards' means, held in the input's dtype, are off by u·|mean|; the combine's Chan term
            # (mean_r - mean)²·n_r adds that error squared, which is all that is left when the spread is 0
            # (a constant channel far from 0: var 0, error ~ u²·mean², found by the hypothesis cases).
            means = [m for x, m in zip(shards, forward.shard_mean) if x.size]
            running_var_scale += mean_unit * float(np.max(np.stack(means) ** 2)) * total / (total - 1)
        scales[(gi, "running_var")] = running_var_scale
    return scales


def _batchnorm_module(spec: CaseSpec, weight, bias, buffers: Buffers | None):
    import torch

    cls = {0: torch.nn.BatchNorm1d, 1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}
    module = cls[len(spec.spatial)](spec.channels, eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
                                    track_running_stats=spec.track_running_stats)
    module = module.to(device=_device(spec), dtype=torch_dtype(spec.effective_param_dtype))
    with torch.no_grad():
        if spec.affine:
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.from_numpy(bias))
        if buffers is not None:
            module.running_mean.copy_(torch.from_numpy(buffers.running_mean))
            module.running_var.copy_(torch.from_numpy(buffers.running_var))
            module.num_batches_tracked.fill_(buffers.num_batches_tracked)
    return module


def _device(spec: CaseSpec) -> str:
    return "cuda" if spec.device == "cuda" else "cpu"


def _yardstick(spec: CaseSpec, module, gi: int, shards, grads, phase: ExpectedPhase, forward, backward,
               buffers) -> dict[tuple[int, str], float]:
    """Max |error| of single-process torch BatchNorm (same dtypes, same device) against the reference; ``module``
    carries its own buffers from phase to phase."""
    from .rank_case import _tensor, _to_numpy

    module.train(phase.training)
    device = _device(spec)
    # Training: one BatchNorm over the group's global batch; eval: one call per shard (no cross-rank coupling).
    batches = [(shards, grads)] if phase.training else [([x], [g]) for x, g in zip(shards, grads)]
    outputs, grad_inputs = [], []
    grad_weight = np.zeros(spec.channels)
    grad_bias = np.zeros(spec.channels)
    for xs, gs in batches:
        x_np, g_np = np.concatenate(xs), np.concatenate(gs)
        if x_np.size == 0:
            if phase.training and module.num_batches_tracked is not None:
                module.num_batches_tracked += 1
            outputs.append(x_np)
            grad_inputs.append(x_np)
            continue
        x = _tensor(x_np, spec.dtype, device, spec.layout).requires_grad_(True)
        y = module(x)
        y.backward(_tensor(g_np, str(y.dtype)[6:], device))
        outputs.append(_to_numpy(y))
        grad_inputs.append(_to_numpy(x.grad))
        if spec.affine:
            grad_weight += _to_numpy(module.weight.grad)
            grad_bias += _to_numpy(module.bias.grad)
            module.zero_grad(set_to_none=True)
    split = np.cumsum([x.shape[0] for x in shards])[:-1]
    if phase.training:
        outputs = np.split(outputs[0], split) if outputs[0].size else outputs * len(shards)
        grad_inputs = np.split(grad_inputs[0], split) if grad_inputs[0].size else grad_inputs * len(shards)
    errors = {
        (gi, "output"): _max_err(outputs, forward.outputs),
        (gi, "grad_input"): _max_err(grad_inputs, backward.grad_inputs),
    }
    if spec.affine:
        errors[(gi, "grad_weight")] = _max_err([grad_weight], [backward.grad_weight])
        errors[(gi, "grad_bias")] = _max_err([grad_bias], [backward.grad_bias])
    if buffers is not None:
        errors[(gi, "running_mean")] = _max_err([_to_numpy(module.running_mean)], [buffers.running_mean])
        errors[(gi, "running_var")] = _max_err([_to_numpy(module.running_var)], [buffers.running_var])
    return errors


def _max_err(actual, expected) -> float:
    values = [float(np.max(np.abs(a.reshape(e.shape) - e))) for a, e in zip(actual, expected) if e.size]
    return max(values) if values else 0.0
