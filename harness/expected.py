"""What a module case should produce: the float64 reference on the exact values the ranks saw, plus the yardstick.

For every phase and every quantity of harness.quantities: the expected value per rank (or per process group, for
group sums), the magnitude that bounds its rounding error (``scales``, see harness.tolerances) and the yardstick:
the error of a single-process BatchNorm in the case's dtypes on the same global batch of each group, on the
case's device (in training one BatchNorm over the group's shards; in eval one per shard, eval having no
cross-rank coupling).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.reference.syncbn import TOO_FEW_VALUES, Buffers, syncbn_backward, syncbn_forward

from .data import make_grad_output, make_input, make_params, quantize
from .spec import ModuleSpec
from .tolerances import FLOOR_ULPS, UNIT_ROUNDOFF
from .yardstick import Yardstick

__all__ = ["ExpectedPhase", "ExpectedCase", "expected_module_case"]


@dataclass
class ExpectedPhase:
    name: str
    training: bool
    per_rank: dict[str, dict[int, Any]] = field(default_factory=dict)  # quantity -> rank -> expected value
    per_group: dict[str, dict[int, Any]] = field(default_factory=dict)  # group-sum quantity -> group index -> value
    scales: dict[tuple[int, str], float] = field(default_factory=dict)  # (group, quantity) -> magnitude
    yardstick: dict[tuple[int, str], float] = field(default_factory=dict)  # (group, quantity) -> max |error|

    def ranks(self) -> set[int]:
        """The ranks this phase has expected values for (a rank stopped by a required error has none)."""
        return set(self.per_rank.get("output", {}))

    def set_rank(self, quantity: str, rank: int, value: Any) -> None:
        self.per_rank.setdefault(quantity, {})[rank] = value


@dataclass
class ExpectedCase:
    spec: ModuleSpec
    phases: list[ExpectedPhase]
    errors: dict[int, dict[str, Any]]  # by rank: the error the spec requires, {"phase", "type", "message"}


def _max_abs(arrays) -> float:
    values = [float(np.max(np.abs(a))) for a in arrays if a is not None and np.size(a)]
    return max(values) if values else 0.0


def expected_module_case(spec: ModuleSpec, *, yardstick: bool = True) -> ExpectedCase:
    """Run the reference over every group and phase; an error the spec requires ends the phases of the ranks that
    raise it (the whole group in training, a lone rank in eval without running statistics)."""
    params = make_params(spec)
    pdt = spec.effective_param_dtype
    weight = quantize(params.weight, pdt) if spec.affine else None
    bias = quantize(params.bias, pdt) if spec.affine else None
    initial = Buffers(quantize(params.running_mean, pdt), quantize(params.running_var, pdt),
                      params.num_batches_tracked) if spec.track_running_stats else None
    phases = [ExpectedPhase(spec.phase_name(p), p < spec.steps) for p in range(spec.steps + spec.eval_steps)]
    errors: dict[int, dict[str, Any]] = {}
    for gi, members in enumerate(spec.rank_groups):
        buffers = initial.copy() if initial is not None else None
        batchnorm = Yardstick(spec, weight, bias, buffers) if yardstick else None
        live = list(members)  # ranks not yet stopped by an error the spec requires
        carried: dict[str, float] = {}
        for p, phase in enumerate(phases):
            # eval without running statistics has no cross-rank coupling: a rank whose shard holds one value per
            # channel raises alone, the others go on.
            local = not phase.training and not spec.track_running_stats
            for r in [r for r in live if local and spec.rank_count(r) == 1]:
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
                phase.set_rank("output", r, forward.outputs[i])
                phase.set_rank("output.dtype", r, spec.dtype)  # batch_norm keeps its input's dtype, autocast too
                phase.set_rank("grad_input", r, backward.grad_inputs[i])
                if spec.affine:
                    phase.set_rank("grad_weight.dtype", r, pdt)
                    phase.set_rank("grad_bias.dtype", r, pdt)
                if buffers is not None:
                    phase.set_rank("running_mean", r, buffers.running_mean)
                    phase.set_rank("running_var", r, buffers.running_var)
                    phase.set_rank("num_batches_tracked", r, buffers.num_batches_tracked)
            if spec.affine:
                phase.per_group.setdefault("grad_weight", {})[gi] = backward.grad_weight
                phase.per_group.setdefault("grad_bias", {})[gi] = backward.grad_bias
            phase.scales.update(_scales(gi, shards, grads, forward, backward, buffers, weight,
                                        UNIT_ROUNDOFF[spec.dtype], carried))
            # Buffers carry their rounding errors into later phases (eval included): so do their scales.
            for name in ("running_mean", "running_var"):
                if (gi, name) in phase.scales:
                    carried[name] = phase.scales[(gi, name)] = max(carried.get(name, 0.0), phase.scales[(gi, name)])
            if batchnorm is not None:
                errors_of = batchnorm.errors(shards, grads, phase.training, forward, backward, buffers)
                phase.yardstick.update({(gi, name): error for name, error in errors_of.items()})
    return ExpectedCase(spec, phases, errors)


@dataclass
class _Magnitudes:
    """Per-channel magnitudes of one group's phase, from which every scale is built (docs/tolerances.md): sums and
    maxima of |g| and of the normalised |x̂|, the data's offset kappa = |mean|·invstd, the count."""

    sum_g: np.ndarray
    sum_gx: np.ndarray  # Σ |g|·(x̂ + kappa): grad_weight's magnitude
    sum_g_xhat: np.ndarray  # Σ |g|·x̂
    max_g: np.ndarray
    max_xhat: np.ndarray
    kappa: np.ndarray
    invstd: np.ndarray  # the largest invstd of the live shards
    count: int


def _magnitudes(shards, grads, forward) -> _Magnitudes:
    channels = shards[0].shape[1]
    zeros = lambda: np.zeros(channels)  # noqa: E731
    m = _Magnitudes(zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), 0)
    for g, x, mean, invstd in zip(grads, shards, forward.shard_mean, forward.shard_invstd):
        if not g.size:
            continue
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat = np.abs(x - mean.reshape(shape)) * invstd.reshape(shape)
        m.kappa = np.maximum(m.kappa, np.abs(mean) * invstd)
        shard_kappa = (np.abs(mean) * invstd).reshape(shape)
        m.sum_g += _channel_sum(np.abs(g))
        m.sum_gx += _channel_sum(np.abs(g) * (xhat + shard_kappa))
        m.sum_g_xhat += _channel_sum(np.abs(g) * xhat)
        m.max_g = np.maximum(m.max_g, np.abs(g).max(axis=tuple(i for i in range(g.ndim) if i != 1)))
        m.max_xhat = np.maximum(m.max_xhat, xhat.max(axis=tuple(i for i in range(x.ndim) if i != 1)))
        m.count += g.size // channels
    live = [invstd for x, invstd in zip(shards, forward.shard_invstd) if x.size]
    m.invstd = np.max(np.stack(live), axis=0) if live else np.zeros(channels)
    return m


def _channel_sum(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=tuple(i for i in range(a.ndim) if i != 1))


def _scales(gi, shards, grads, forward, backward, buffers, weight, mean_unit: float, carried: dict[str, float]
            ) -> dict[tuple[int, str], float]:
    """Magnitudes that bound each quantity's rounding error, per process group: the table and the derivations of
    docs/tolerances.md ("The scale"); ``mean_unit`` is u of the dtype the mean is held in, ``carried`` the buffers'
    scales of the phases before (eval normalises with buffers that carry their errors)."""
    m = _magnitudes(shards, grads, forward)
    channels = shards[0].shape[1]
    w = np.ones(channels) if weight is None else np.abs(weight)
    n = max(m.count, 1)
    mean_g, mean_g_xhat = m.sum_g / n, m.sum_g_xhat / n
    # grad_input = (g - mean(g) - x̂·mean(g·x̂))·w·invstd; the mean's rounding also enters squared, through invstd
    # (second order; an error bound by itself, so divided by the floor's F·u).
    second_order = (FLOOR_ULPS * mean_unit * m.kappa) ** 2 * (m.max_g + 3.0 * mean_g) / 2.0
    third_term = (m.max_xhat * mean_g_xhat + m.kappa * mean_g_xhat + m.max_xhat * m.kappa * mean_g
                  + second_order / (FLOOR_ULPS * mean_unit))
    # Eval with running statistics: the buffers' carried errors shift x̂ (running_mean) and scale invstd
    # (running_var).
    buffer_shift = buffer_rel = np.zeros(channels)
    if forward.mode == "eval_running":
        buffer_shift = m.invstd * carried.get("running_mean", 0.0)
        buffer_rel = m.invstd**2 * carried.get("running_var", 0.0) / 2.0
    scales = {
        (gi, "output"): max(_max_abs(forward.outputs),
                            float(np.max(w * (m.max_xhat + np.maximum(m.kappa, buffer_shift)
                                              + m.max_xhat * buffer_rel)))),
        (gi, "grad_input"): max(_max_abs(backward.grad_inputs),
                                float(np.max(w * m.invstd * (m.max_g * (1.0 + buffer_rel) + mean_g + third_term)))),
        (gi, "grad_weight"): float(np.max(m.sum_gx)),
        (gi, "grad_bias"): float(np.max(m.sum_g)),
    }
    if buffers is not None:
        scales[(gi, "running_mean")] = _running_mean_scale(shards, forward, buffers, m)
        scales[(gi, "running_var")] = _running_var_scale(shards, forward, buffers, mean_unit)
    return scales


def _running_mean_scale(shards, forward, buffers, m: _Magnitudes) -> float:
    """max |running_mean|, plus in training the batch mean's rounding, u·mean|x| (a sum's error bound is Σ|x|)."""
    scale = _max_abs([buffers.running_mean])
    if forward.mode == "train" and any(x.size for x in shards):
        scale += float(np.max(sum(_channel_sum(np.abs(x)) for x in shards if x.size) / max(m.count, 1)))
    return scale


def _running_var_scale(shards, forward, buffers, mean_unit: float) -> float:
    """max |running_var|, plus in training (n/(n-1) times) the combine's first-order term 2·|mean|·std, the
    shards' means' rounding squared (F·u·mean²), var itself, and the u·(var + eps) of recovering var from invstd."""
    scale = _max_abs([buffers.running_var])
    total = forward.population[0] if forward.population else 0
    live = [invstd for x, invstd in zip(shards, forward.shard_invstd) if x.size]
    if forward.mode == "train" and total > 1 and live:
        channels = shards[0].shape[1]
        unbias = total / (total - 1)
        stacked = np.concatenate([np.moveaxis(x, 1, 0).reshape(channels, -1) for x in shards if x.size], axis=1)
        mean, var = stacked.mean(axis=1), stacked.var(axis=1)
        means = np.stack([mu for x, mu in zip(shards, forward.shard_mean) if x.size])
        scale += unbias * float(np.max(var + 2.0 * np.abs(mean) * np.sqrt(var)
                                       + FLOOR_ULPS * mean_unit * np.max(means**2, axis=0)))
        scale += unbias * float(np.max(1.0 / np.stack(live) ** 2))
    return scale
