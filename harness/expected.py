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

from reference.syncbn import TOO_FEW_VALUES, Buffers, syncbn_backward, syncbn_forward

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


def _scales(gi, shards, grads, forward, backward, buffers, weight, mean_unit: float, carried: dict[str, float]
            ) -> dict[tuple[int, str], float]:
    """Magnitudes that bound each quantity's rounding error, per process group (see harness.tolerances).

    kappa_c = |mean_c|·invstd_c is the data's offset in units of its normalised spread: the mean, held in the
    dtype, is off by u·|mean|, so every normalised value x̂ = (x - mean)·invstd is off by u·kappa. Each scale counts
    kappa where that error enters to first order, and (F·u·kappa)² where it only enters squared (the variance about
    a rounded mean, and x̂ times a sum of x̂ in grad_input: for a constant channel x̂ is 0 and kappa = |mean|/sqrt(eps)
    is large, and counting kappa² as a first-order magnitude made the grad_input tolerance meaninglessly wide).
    F = FLOOR_ULPS roundings of the mean are the floor's share; a longer reduction's mean can be off by more (up to
    n·u for n values: torch's float64 CPU mean of 240 equal values at 1e6 is off by 49 u, equal values rounding
    alike), and that growth is what the yardstick measures (trusted up to YARDSTICK_TRUST x the floor). Bounding it
    by n·u in the floor instead widened 800 of 3,158 default-profile tolerances, some 16x (float32 over 131,072
    values, where torch's error is a few u), so the floor keeps F."""
    channels = shards[0].shape[1]
    w = np.ones(channels) if weight is None else np.abs(weight)
    reduce = lambda a: a.sum(axis=tuple(i for i in range(a.ndim) if i != 1))  # noqa: E731
    sum_g = np.zeros(channels)
    sum_gx = np.zeros(channels)  # Σ |g|·(x̂ + kappa): grad_weight's magnitude
    sum_g_xhat = np.zeros(channels)  # Σ |g|·x̂
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
        sum_g_xhat += reduce(np.abs(g) * xhat)
        max_g = np.maximum(max_g, np.abs(g).max(axis=tuple(i for i in range(g.ndim) if i != 1)))
        max_xhat = np.maximum(max_xhat, xhat.max(axis=tuple(i for i in range(x.ndim) if i != 1)))
        count += g.size // channels
    live = [invstd for x, invstd in zip(shards, forward.shard_invstd) if x.size]
    invstd_all = np.max(np.stack(live), axis=0) if live else np.zeros(channels)
    n = max(count, 1)
    mean_g, mean_g_xhat = sum_g / n, sum_g_xhat / n
    # grad_input = (g - mean(g) - x̂·mean(g·x̂))·w·invstd: the last product's error is u·kappa·mean(|g|·x̂) +
    # max x̂·u·kappa·mean|g| + its own rounding. To second order, a mean off by d = F·u·|mean| makes the variance
    # about it var + d², so invstd is off by a relative (F·u·kappa)²/2, and all of grad_input with it
    # ((max|g| + mean|g|)/2); x̂·mean(g·x̂) adds (F·u·kappa)²·mean|g|. That is an error bound by itself, so it enters
    # the scale divided by the floor's F·u. Found by the soak: a float64 constant channel at 1e6, 240 values, eps
    # 1e-5, grad_input off by 1.6e-9 in torch and the yardstick alike (mean off by 49 u: (49·u·kappa)²/2 = 1.5e-12
    # relative); the floor counted the square for x̂·mean(g·x̂) only, so the yardstick sat at 18.9x it, was
    # distrusted, and the case failed. It is 5.4x the floor now, and the yardstick decides.
    second_order = (FLOOR_ULPS * mean_unit * kappa) ** 2 * (max_g + 3.0 * mean_g) / 2.0
    third_term = (max_xhat * mean_g_xhat + kappa * mean_g_xhat + max_xhat * kappa * mean_g
                  + second_order / (FLOOR_ULPS * mean_unit))
    # Eval with running statistics normalises with buffers that carry their own errors (F·u·carried scale, from the
    # training phases): running_mean's shifts x̂ by invstd·that, running_var's scales invstd by a relative
    # invstd²·that/2, and with it x̂ (output) and g·w·invstd (grad_input). Found by the soak: float64, offset 1e5,
    # running_var off by 8.8e-11 (inside its tolerance, the Chan combine's u·|mean|·std), so an eval output at
    # x̂ = -50 was off by 2.2e-11, 1.2x a floor that counted only the buffer's magnitude.
    buffer_shift = buffer_rel = np.zeros(channels)
    if forward.mode == "eval_running":
        buffer_shift = invstd_all * carried.get("running_mean", 0.0)
        buffer_rel = invstd_all**2 * carried.get("running_var", 0.0) / 2.0
    scales = {
        (gi, "output"): max(_max_abs(forward.outputs),
                            float(np.max(w * (max_xhat + np.maximum(kappa, buffer_shift) + max_xhat * buffer_rel)))),
        (gi, "grad_input"): max(_max_abs(backward.grad_inputs),
                                float(np.max(w * invstd_all * (max_g * (1.0 + buffer_rel) + mean_g + third_term)))),
        (gi, "grad_weight"): float(np.max(sum_gx)),
        (gi, "grad_bias"): float(np.max(sum_g)),
    }
    if buffers is not None:
        scales[(gi, "running_mean")] = _max_abs([buffers.running_mean])
        if forward.mode == "train" and live:
            # The batch mean's rounding is u·mean|x|, not u·|mean| (a sum's error bound is Σ|x|): centred data has a
            # mean far below its values, and running_mean inherits the difference (found by the soak: float32, spread
            # 0.01 around 0, running_mean 9.2e-5 off by 4.5e-10 = 1 u·mean|x|, 2.75x a scale of |running_mean|).
            scales[(gi, "running_mean")] += float(np.max(
                sum(reduce(np.abs(x)) for x in shards if x.size) / max(count, 1)))
        running_var_scale = _max_abs([buffers.running_var])
        total = forward.population[0] if forward.population else 0
        if forward.mode == "train" and total > 1 and live:
            unbias = total / (total - 1)
            stacked = np.concatenate([np.moveaxis(x, 1, 0).reshape(channels, -1) for x in shards if x.size], axis=1)
            mean, var = stacked.mean(axis=1), stacked.var(axis=1)
            means = np.stack([m for x, m in zip(shards, forward.shard_mean) if x.size])
            # The shards' means are off by u·|mean|; the combine's Chan term n_r·(mean_r - mean)² turns that into
            # 2·u·|mean|·sqrt(var) in var, to first order (relative error u·|mean|/std, whatever eps is: the
            # soak's case with eps = 0.1 against var = 4.5e-5 failed while this counted |mean|·invstd), and into
            # (F·u·mean)² to second order (F roundings of the mean, as for grad_input: the variance about a rounded
            # mean), all that is left of a constant channel far from 0 (var 0, found by the hypothesis cases; the
            # soak found torch's float32 channels-last mean of 162 equal values off by 15 u, 16.6x a floor that
            # allowed 4 u); both enter running_var scaled by n/(n-1). Scale units: the floor multiplies by F·u.
            running_var_scale += unbias * float(np.max(var + 2.0 * np.abs(mean) * np.sqrt(var)
                                                       + FLOOR_ULPS * mean_unit * np.max(means**2, axis=0)))
            # PyTorch's protocol exchanges invstd = 1/sqrt(var + eps), not var: recovering var = 1/invstd² - eps
            # costs u·(var + eps), which dominates when var is far below eps.
            running_var_scale += unbias * float(np.max(1.0 / np.stack(live) ** 2))
        scales[(gi, "running_var")] = running_var_scale
    return scales
