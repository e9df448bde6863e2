"""The module kind: one SyncBatchNorm layer on W ranks (harness.spec.ModuleSpec).

Every rank runs harness.rank.module.run; meanwhile the controller computes the reference (``plan``: harness.expected)
and then compares (``judge`` / ``compare_case``: one loop over harness.quantities.MODULE_QUANTITIES).
"""
from __future__ import annotations

import math
from typing import Any

from ..collectives import torch_collectives
from ..compare import Comparison, compare_agreement, compare_arrays, compare_exact
from ..errors import RankError
from ..expected import ExpectedCase, ExpectedPhase, expected_module_case
from ..quantities import MODULE_QUANTITIES, Quantity
from ..result import CaseResult, Failure
from ..spec import ModuleSpec
from ..tolerances import module_tolerance
from .audit import judge_collectives
from .base import Plan

__all__ = ["plan", "judge", "required_errors", "compare_case", "attributes", "shard_attributes", "offset_attribute",
           "group_attributes"]


def plan(spec: ModuleSpec):
    return Plan(expected=lambda: expected_module_case(spec))


def attributes(p: dict[str, Any]) -> list[str]:
    """A module case's parameters as the diagnosis compares them (harness.kinds.CaseKind.attributes)."""
    dtype = p.get("dtype")
    param = p.get("param_dtype") or dtype
    sizes = list(p.get("shard_sizes") or ())
    spatials = p.get("rank_spatial") or [p.get("spatial") or ()] * len(sizes)
    counts = {n * math.prod(s) for n, s in zip(sizes, spatials)}
    momentum = p.get("momentum")
    return [f"dtype {dtype}" + (f" with {param} parameters" if param != dtype else ""), f"{dtype} input",
            f"{param} parameters", f"{2 + len(p.get('spatial') or ())}-D input", f"layout {p.get('layout')}",
            "affine" if p.get("affine", True) else "affine off",
            "running statistics" if p.get("track_running_stats") else "no running statistics",
            "training steps" if p.get("steps") else "no training step",
            "eval steps" if p.get("eval_steps") else "no eval steps",
            "process groups" if p.get("groups") else "no process groups", f"{p.get('data')} data",
            "momentum None" if momentum is None else f"momentum {float(momentum):g}", *shard_attributes(p),
            "unequal element counts per rank" if len(counts) > 1 else "equal element counts per rank",
            *group_attributes(p), *offset_attribute(p), f"world size {len(sizes)}"]


def required_errors(expected: ExpectedCase) -> dict[int, dict[str, Any]]:
    """The errors the specification requires, by rank (a rank that raises one is not at fault)."""
    return expected.errors


def judge(spec: ModuleSpec, expected: ExpectedCase, actual: list[dict[str, Any]], result: CaseResult) -> CaseResult:
    compare_case(spec, expected, actual, result)
    phases = [spec.phase_name(p) for p in range(spec.steps + spec.eval_steps)]
    group_sizes = [len(next(g for g in spec.rank_groups if r in g)) for r in range(spec.world_size)]
    judge_collectives(result, actual, phases=phases, training=phases[:spec.steps], input_dtype=spec.dtype,
                      yardstick=torch_collectives([spec.channels], group_sizes, spec.dtype))
    return result


def compare_case(spec: ModuleSpec, expected: ExpectedCase, actual: list[dict[str, Any]],
                 result: CaseResult | None = None) -> CaseResult:
    """Compare every rank's harness.rank.module.run result (``actual``, indexed by rank) with ``expected``; adds to
    ``result`` (a new one if None) and returns it."""
    result = result if result is not None else CaseResult(spec)
    _check_errors(spec, expected, actual, result)
    for p, phase in enumerate(expected.phases):
        for gi, members in enumerate(spec.rank_groups):
            _compare_group(spec, phase, p, gi, members, actual, result)
    return result


def _check_errors(spec: ModuleSpec, expected: ExpectedCase, actual: list[dict[str, Any]], result: CaseResult) -> None:
    """An error the specification requires must be raised (ValueError at that phase); any other is a failure."""
    for rank, rank_result in enumerate(actual):
        want, got = expected.errors.get(rank), rank_result["error"]
        if want is None and got is None:
            continue
        if want is not None and got is not None and got.type == want["type"] and got.phase == want["phase"]:
            result.comparisons.append(compare_exact(
                got.type, want["type"], quantity="error", phase=want["phase"], rank=rank, ranks=(rank,),
                dtype="-", reason=f"the specification requires {want['type']}: {want['message']}"))
        elif want is None:
            result.failures.append(_raised(rank, got))
        elif got is None:
            result.failures.append(Failure(
                "missing_error", f"rank {rank}: expected {want['type']} at {want['phase']} ({want['message']!r}, "
                "docs/semantics.md), but the implementation raised nothing", rank=rank, phase=want["phase"]))
        else:
            result.failures.append(Failure(
                "wrong_error", f"rank {rank}: expected {want['type']} at {want['phase']}, got {got.type} at "
                f"{got.phase} ({got.stage}): {got.message}", rank=rank, phase=got.phase, traceback=got.traceback))


def _raised(rank: int, error: RankError) -> Failure:
    return Failure.of_error(rank, error)


def _compare_group(spec: ModuleSpec, phase: ExpectedPhase, p: int, gi: int, members: tuple[int, ...],
                   actual: list[dict[str, Any]], result: CaseResult) -> None:
    expected_ranks = phase.ranks()
    records = {r: actual[r]["phases"][p] for r in members if p < len(actual[r]["phases"])}
    # A rank stopped by its own error has no later phases; that error is already reported.
    missing = [r for r in members if r not in records and r in expected_ranks and actual[r]["error"] is None]
    if missing:
        result.failures.append(Failure("missing_result", f"rank(s) {missing} returned no result for {phase.name}",
                                       rank=missing[0], phase=phase.name))
    compared = [r for r in members if r in records and r in expected_ranks]
    if not compared:
        return
    complete = len(compared) == len(members)  # group-level checks need every rank of the group
    offsets, running = {}, 0
    for r in members:
        offsets[r], running = running, running + spec.shard_sizes_at(p)[r]
    dtypes = {"input": spec.dtype, "param": spec.effective_param_dtype, "int64": "int64", "none": "-"}
    add = result.comparisons.append
    for q in MODULE_QUANTITIES:
        if not q.applies(spec) or q.source is None and q.scope != "pair":
            continue
        dtype = dtypes[q.dtype_role]
        if q.scope == "rank":
            for r in compared:
                add(_compare(q, records[r][q.name], phase.per_rank[q.name][r], phase, gi, dtype, rank=r,
                             ranks=(r,), input_dtype=spec.dtype, sample_offset=offsets[r]))
        elif q.scope == "group_sum" and complete:
            total = sum(records[r][q.name] for r in members)
            add(_compare(q, total, phase.per_group[q.name][gi], phase, gi, dtype, rank=None, ranks=tuple(members),
                         input_dtype=spec.dtype))
        elif q.scope == "pair" and complete and len(members) > 1:
            base = q.name.removesuffix(".agreement")
            for r in members[1:]:
                add(compare_agreement(records[r][base], records[members[0]][base], quantity=q.name,
                                      phase=phase.name, rank=r, first=members[0], dtype=dtype,
                                      reason=q.description))


def _compare(q: Quantity, actual: Any, expected: Any, phase: ExpectedPhase, gi: int, dtype: str, *,
             rank: int | None, ranks: tuple[int, ...], input_dtype: str, sample_offset: int = 0) -> Comparison:
    common = dict(quantity=q.name, phase=phase.name, rank=rank, ranks=ranks, dtype=dtype)
    if q.exact:
        return compare_exact(actual, expected, reason=q.description, **common)
    tolerance = module_tolerance(q.name, dtype=dtype, scale=phase.scales.get((gi, q.name), 1.0),
                                 yardstick=phase.yardstick.get((gi, q.name)), input_dtype=input_dtype)
    return compare_arrays(actual, expected, tolerance, sample_offset=sample_offset, **common)


def shard_attributes(p: dict[str, Any]) -> list[str]:
    """Uneven or empty shards in any phase (``step_shard_sizes``: the sizes of the later phases)."""
    schedule = [list(p.get("shard_sizes") or ()), *(list(s) for s in p.get("step_shard_sizes") or ())]
    return ["uneven shards" if any(len(set(sizes)) > 1 for sizes in schedule) else "even shards",
            "an empty shard" if any(0 in sizes for sizes in schedule) else "no empty shard"]


def group_attributes(p: dict[str, Any]) -> list[str]:
    """How the elements are spread within each process group (all ranks when there are none): what a SyncBN that
    weighs ranks equally, drops empty ranks or divides by the group's count depends on."""
    sizes = list(p.get("shard_sizes") or ())
    spatials = p.get("rank_spatial") or [p.get("spatial") or ()] * len(sizes)
    counts = [n * math.prod(s) for n, s in zip(sizes, spatials)]
    groups = p.get("groups") or [list(range(len(sizes)))]
    values = ["unequal element counts within a group" if any(len({counts[r] for r in g}) > 1 for g in groups)
              else "equal element counts within every group"]
    if any(0 < counts[r] for g in groups for r in g) and any(counts[r] == 0 for g in groups for r in g):
        values.append("an empty rank beside ranks with data in its group" if any(
            0 in [counts[r] for r in g] and any(counts[r] for r in g) for g in groups) else "no empty rank beside data")
    if any(all(counts[r] == 0 for r in g) for g in groups):
        values.append("a group whose shards are all empty")
    if any(sum(counts[r] for r in g) == 1 for g in groups):
        values.append("a group holding a single value per channel")
    if any(len(g) == 1 for g in groups):
        values.append("a rank alone in its group")
    values.append("a group of several ranks" if any(len(g) > 1 for g in groups) else "every rank alone in its group")
    return values


def offset_attribute(p: dict[str, Any]) -> list[str]:
    if "loc" not in p:
        return []
    offset = abs(float(p["loc"])) >= 10 * float(p.get("scale", 1.0))
    return ["offset data (|loc| >= 10·scale)" if offset else "data not offset"]
