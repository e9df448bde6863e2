"""Running one case end to end: ranks compute, the reference predicts, every quantity of every rank is compared."""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compare import Comparison, compare_arrays, compare_exact
from .errors import CaseError, RankFailure
from .pool import PoolManager, default_manager
from .spec import CaseSpec, OpSpec
from .sut import DEFAULT_SUT
from .tolerances import QUANTITY_DTYPE_ROLE, module_tolerance

__all__ = ["RunConfig", "CaseResult", "run_case", "run_module_case", "compare_case", "expected_output_dtype",
           "rerun_command"]


@dataclass
class RunConfig:
    """How to run cases: which implementation, which kernels, how long a case may take."""

    sut: str = DEFAULT_SUT
    kernels: str | None = None
    backend: str | None = None
    case_timeout: float = 60.0
    manager: PoolManager | None = None

    def __post_init__(self) -> None:
        if not self.case_timeout > 0:
            raise CaseError(f"case_timeout={self.case_timeout!r}: must be > 0 seconds")

    @property
    def pools(self) -> PoolManager:
        return self.manager or default_manager()


@dataclass
class CaseResult:
    """Everything one case produced: the comparisons (all of them, passed or not) and any rank failure."""

    spec: CaseSpec | OpSpec
    comparisons: list[Comparison] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # problems that are not a numeric comparison
    duration_s: float = 0.0
    rerun: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures and bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def report(self) -> str:
        """The failure message: the case, each failed check (what, where, by how much), and the rerun line."""
        failed = [c for c in self.comparisons if not c.passed]
        lines = [f"case {self.spec.id}: {len(failed)} of {len(self.comparisons)} comparisons failed"
                 + (f", {len(self.failures)} other failure(s)" if self.failures else "")]
        if not self.comparisons and not self.failures:
            lines.append("  nothing was compared: a case that compares nothing fails")
        for message in self.failures:
            lines.extend("  " + line for line in message.splitlines())
        for comparison in sorted(failed, key=lambda c: -c.error_ratio)[:8]:
            lines.extend("  " + line for line in comparison.describe().splitlines())
        if len(failed) > 8:
            lines.append(f"  ... and {len(failed) - 8} more failed comparisons")
        lines.append(f"rerun: {self.rerun}")
        return "\n".join(lines)


def rerun_command(case_id: str, config: RunConfig) -> str:
    parts = ["python", "-m", "harness", "run", "--case", case_id]
    if config.sut != DEFAULT_SUT:
        parts += ["--sut", config.sut]
    if config.kernels:
        parts += ["--kernels", config.kernels]
    if config.backend:
        parts += ["--backend", config.backend]
    return " ".join(shlex.quote(p) for p in parts)


def run_case(spec: CaseSpec | OpSpec, config: RunConfig) -> CaseResult:
    if isinstance(spec, OpSpec):
        from .op_cases import run_op_case

        return run_op_case(spec, config)
    return run_module_case(spec, config)


def run_module_case(spec: CaseSpec, config: RunConfig) -> CaseResult:
    from .expected import expected_module_case

    start = time.monotonic()
    result = CaseResult(spec, rerun=rerun_command(spec.id, config))
    target = "harness.rank_case:run_module_case"
    expected = None
    try:
        pool = config.pools.get(spec.world_size, spec.device, config.backend)
        pool.submit(target, {"spec": spec.to_dict(), "sut": config.sut, "kernels": config.kernels})
        expected = expected_module_case(spec)  # computed while the ranks run
        actual = pool.collect(target, timeout=config.case_timeout,
                              is_failure=lambda value: bool(value and value["error"]))
    except RankFailure as failure:
        # Ranks that answered may carry the implementation's own error, the likely cause of the others' hang.
        for rank, value in sorted(failure.partial.items()):
            if value and value.get("error") and value["error"] != (expected.errors.get(rank) if expected else None):
                got = value["error"]
                result.failures.append(f"rank {rank} raised {got['type']} at {got['phase']} ({got['stage']}): "
                                       f"{got['message']}\n--- rank {rank} traceback ---\n{got['traceback']}")
        result.failures.append(str(failure) + (f"\n--- rank {failure.rank} traceback ---\n{failure.traceback}"
                                               if failure.traceback else ""))
        result.duration_s = time.monotonic() - start
        return result
    compare_case(spec, expected, actual, result)
    result.duration_s = time.monotonic() - start
    return result


def compare_case(spec: CaseSpec, expected, actual: list[dict[str, Any]],
                 result: CaseResult | None = None) -> CaseResult:
    """Compare every rank's ``harness.rank_case.run_module_case`` result (``actual``, indexed by rank) with
    ``expected`` (``harness.expected.expected_module_case``); adds to ``result`` (a new one if None) and returns it.
    Shared by the pool runner and the torchrun launcher (harness.launch)."""
    result = result if result is not None else CaseResult(spec)
    _check_errors(spec, expected, actual, result)
    _compare_phases(spec, expected, actual, result)
    return result


def expected_output_dtype(spec: CaseSpec) -> str:
    """The output's dtype: the input's, with or without autocast. batch_norm is on neither of CUDA autocast's cast
    lists (lower precision: matmul/conv/linear...; float32: layer_norm, group_norm, losses...), so under autocast it
    runs in the dtype of its input, and the SyncBatchNorm kernels follow (float32 input stays float32)."""
    return spec.dtype


def _check_errors(spec: CaseSpec, expected, actual: list[dict[str, Any]], result: CaseResult) -> None:
    """An error the spec requires must be raised (ValueError at that phase); any other error is a failure."""
    for rank, rank_result in enumerate(actual):
        want, got = expected.errors.get(rank), rank_result["error"]
        if want is None and got is None:
            continue
        if want is not None and got is not None and got["type"] == want["type"] and got["phase"] == want["phase"]:
            result.comparisons.append(compare_exact(
                got["type"], want["type"], quantity="error", phase=want["phase"], rank=rank, ranks=(rank,),
                dtype="-", reason=f"SEMANTICS.md requires {want['type']}: {want['message']}"))
            continue
        if want is None:
            result.failures.append(f"rank {rank} raised {got['type']} at {got['phase']} ({got['stage']}): "
                                   f"{got['message']}\n--- rank {rank} traceback ---\n{got['traceback']}")
        elif got is None:
            result.failures.append(f"rank {rank}: expected {want['type']} at {want['phase']} "
                                   f"({want['message']!r}, SEMANTICS.md), but the implementation raised nothing")
        else:
            result.failures.append(f"rank {rank}: expected {want['type']} at {want['phase']}, got {got['type']} at "
                                   f"{got['phase']} ({got['stage']}): {got['message']}")


def _compare_phases(spec: CaseSpec, expected, actual: list[dict[str, Any]], result: CaseResult) -> None:
    dtypes = {"input": spec.dtype, "param": spec.effective_param_dtype}
    offsets = {}
    for members in spec.rank_groups:
        running = 0
        for r in members:
            offsets[r] = running
            running += spec.shard_sizes[r]
    add = result.comparisons.append
    for p, phase in enumerate(expected.phases):
        for gi, members in enumerate(spec.rank_groups):
            records = {r: actual[r]["phases"][p] for r in members if p < len(actual[r]["phases"])}
            # A rank stopped by its own error has no later phases; that error is already reported.
            if r_missing := [r for r in members if r not in records and r in phase.outputs
                             and actual[r]["error"] is None]:
                result.failures.append(f"rank(s) {r_missing} returned no result for {phase.name}")
            compared = [r for r in members if r in records and r in phase.outputs]
            if not compared:
                continue
            complete = len(compared) == len(members)  # group-level checks need every rank of the group

            def tolerance(quantity: str, phase=phase, gi=gi):
                return module_tolerance(quantity, dtype=dtypes[QUANTITY_DTYPE_ROLE[quantity]],
                                        scale=phase.scales.get((gi, quantity), 1.0),
                                        yardstick=phase.yardstick.get((gi, quantity)))

            for r in compared:
                record = records[r]
                common = dict(phase=phase.name, rank=r, ranks=(r,))
                add(compare_exact(record["output_dtype"], expected_output_dtype(spec), quantity="output.dtype",
                                  dtype=spec.dtype, reason="output keeps the input's dtype (SEMANTICS.md, mixed "
                                  "precision; batch_norm is not an autocast op)", **common))
                add(compare_arrays(record["output"], phase.outputs[r], tolerance("output"), quantity="output",
                                   dtype=spec.dtype, sample_offset=offsets[r], **common))
                add(compare_arrays(record["grad_input"], phase.grad_inputs[r], tolerance("grad_input"),
                                   quantity="grad_input", dtype=spec.dtype, sample_offset=offsets[r], **common))
                if spec.track_running_stats:
                    want = phase.buffers[r]
                    for name in ("running_mean", "running_var"):
                        add(compare_arrays(record[name], getattr(want, name), tolerance(name), quantity=name,
                                           dtype=dtypes["param"], **common))
                    add(compare_exact(record["num_batches_tracked"], want.num_batches_tracked,
                                      quantity="num_batches_tracked", dtype="int64",
                                      reason="a counter: +1 per training forward", **common))
            if spec.track_running_stats and complete and len(members) > 1:
                first = members[0]
                for r in members[1:]:
                    for name in ("running_mean", "running_var"):
                        same = np.array_equal(records[r][name], records[first][name], equal_nan=True)
                        add(compare_exact(same, True, quantity=f"{name}.agreement", phase=phase.name, rank=r,
                                          ranks=(first, r), dtype=dtypes["param"],
                                          reason=f"every rank of a group holds rank {first}'s {name} bit for bit"))
            if spec.affine and complete:
                for name in ("grad_weight", "grad_bias"):
                    total = np.sum([records[r][name] for r in members], axis=0)
                    add(compare_arrays(total, getattr(phase, name)[gi], tolerance(name), quantity=name,
                                       phase=phase.name, rank=None, ranks=tuple(members), dtype=dtypes["param"]))
                    for r in members:
                        add(compare_exact(records[r][name + "_dtype"], dtypes["param"], quantity=name + ".dtype",
                                          phase=phase.name, rank=r, ranks=(r,), dtype=dtypes["param"],
                                          reason="parameter gradients keep the parameters' dtype"))
