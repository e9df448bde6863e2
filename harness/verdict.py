"""Turning comparisons into a verdict a maintainer can act on: root causes before knock-ons, by severity.

Works on records (plain data: ``Comparison.record()``, ``CaseResult.record()``, the cases of a results document),
so the console, the HTML report and the gate read the same verdict, also from a results file written by another
run or an older version of the harness.

- **Knock-ons.** A failed comparison whose inputs already failed (harness.quantities ``computed_from``: a
  quantity of the same phase it is computed from, or state carried from the phase before, in the same process
  group) is a knock-on of that input's root and is folded under it.
- **Severity.** Failures are grouped by class, most telling first: a rank that crashed, hung or raised; a NaN or
  inf where a number was expected; a wrong dtype; an exact check (a counter, bit-for-bit agreement, a required
  error); then numeric failures, ordered by their error in units of the quantity's magnitude (``max |err| /
  scale``), which compares across dtypes, unlike error / tolerance (a 2% bias in float64 is not "1e12 times
  worse" than the same bias in float32).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Iterable

from .quantities import inputs_of

__all__ = ["CLASSES", "failure_class", "severity_key", "phase_order", "mark_knock_ons", "case_report",
           "scaled_error", "is_exact", "label", "roots_and_knock_ons", "failure_text"]

# Failure classes, most telling first (the report's groups).
CLASSES = ("rank failure", "NaN/inf", "dtype", "exact check", "numeric")
_PHASE = re.compile(r"^([a-z_]+?)(\d+)$")
_PHASE_KINDS = {"train": 0, "eval": 1, "step": 0}


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)  # also reads the strings "inf", "-inf", "nan" of a results document
    except (TypeError, ValueError):
        return math.nan


def is_exact(comparison: dict[str, Any]) -> bool:
    """An equality check (older documents have no ``exact`` field: zero tolerance and a scalar shape)."""
    if "exact" in comparison:
        return bool(comparison["exact"])
    tolerance = comparison.get("tolerance") or {}
    return (_number(tolerance.get("atol")) == 0 and _number(tolerance.get("rtol")) == 0
            and not comparison.get("shape"))


def failure_class(comparison: dict[str, Any]) -> str:
    quantity = comparison["quantity"]
    if quantity.endswith(".dtype"):
        return "dtype"
    if is_exact(comparison):
        return "exact check"
    if "NaN/inf" in (comparison.get("note") or "") or (comparison.get("note") or "").startswith("the implementation "
                                                                                             "returned nothing"):
        return "NaN/inf"
    return "numeric"


def scaled_error(comparison: dict[str, Any]) -> float:
    """max |err| in units of the quantity's magnitude (the tolerance's scale); error / tolerance if unknown."""
    scale = _number((comparison.get("tolerance") or {}).get("scale"))
    error = _number(comparison.get("max_abs_err"))
    if math.isfinite(scale) and scale > 0 and not math.isnan(error):
        return error / scale
    return _number(comparison.get("error_ratio"))


def severity_key(comparison: dict[str, Any]) -> tuple[int, float]:
    """Sort key, most severe first: class, then scaled error, largest first."""
    value = scaled_error(comparison)
    return CLASSES.index(failure_class(comparison)), -(value if not math.isnan(value) else math.inf)


def phase_order(phase: str) -> tuple[int, int, str]:
    """train0 < train1 < eval0 < eval1; step0 < step1; anything else (an op name) on its own."""
    match = _PHASE.match(phase)
    if not match or match.group(1) not in _PHASE_KINDS:
        return (9, 0, phase)
    return (_PHASE_KINDS[match.group(1)], int(match.group(2)), phase)


def _phase_kind(phase: str) -> str:
    match = _PHASE.match(phase)
    return match.group(1) if match else "op"


def _groups(params: dict[str, Any] | None) -> dict[int, int]:
    """rank -> index of its process group, from a case's params (one group when there are none)."""
    params = params or {}
    groups = params.get("groups")
    if groups:
        return {int(r): i for i, members in enumerate(groups) for r in members}
    return defaultdict(int)


def mark_knock_ons(comparisons: list[dict[str, Any]], params: dict[str, Any] | None = None) -> None:
    """Set ``knock_on_of`` on every failed comparison whose inputs failed: the label of its root (the first
    failure of the chain), or "" for a root. Comparisons are records; they are changed in place."""
    failed = [c for c in comparisons if not c["passed"]]
    group_of = _groups(params)
    phases = sorted({c["phase"] for c in comparisons}, key=phase_order)
    previous = {p: phases[i - 1] if i else None for i, p in enumerate(phases)}
    index: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for c in failed:
        for rank in c.get("ranks") or [c.get("rank") or 0]:
            index[(c["quantity"], c["phase"], group_of[int(rank)])].append(c)

    def root_of(c: dict[str, Any], seen: set[int]) -> dict[str, Any] | None:
        groups = {group_of[int(r)] for r in (c.get("ranks") or [c.get("rank") or 0])}
        for name, when in inputs_of(c["quantity"], _phase_kind(c["phase"])):
            phase = c["phase"] if when == "same" else previous.get(c["phase"])
            for group in groups:
                for cause in index.get((name, phase, group), []) if phase else []:
                    if id(cause) in seen:
                        continue
                    seen.add(id(cause))
                    return root_of(cause, seen) or cause
        return None

    for c in sorted(failed, key=lambda c: phase_order(c["phase"])):
        root = root_of(c, {id(c)})
        c["knock_on_of"] = label(root) if root is not None else ""


def label(comparison: dict[str, Any]) -> str:
    """'running_var at train0, rank 1' / 'grad_weight at train0, sum over ranks 0,1'."""
    quantity = comparison["quantity"] + (f" {comparison['item']}" if comparison.get("item") else "")
    where = (f"rank {comparison['rank']}" if comparison.get("rank") is not None
             else "sum over ranks " + ",".join(map(str, comparison.get("ranks") or [])))
    return f"{quantity} at {comparison['phase']}, {where}"


def _compact(comparisons: Iterable[dict[str, Any]]) -> str:
    """'train0 (ranks 0,1,2), train1 (rank 0)' for a list of comparisons of one quantity."""
    by_phase: dict[str, list[str]] = defaultdict(list)
    for c in comparisons:
        who = str(c["rank"]) if c.get("rank") is not None else "Σ" + ".".join(map(str, c.get("ranks") or []))
        by_phase[c["phase"]].append(who)
    parts = []
    for phase in sorted(by_phase, key=phase_order):
        ranks = by_phase[phase]
        parts.append(f"{phase} ({'rank' if len(ranks) == 1 else 'ranks'} {','.join(ranks)})")
    return ", ".join(parts)


def _describe(c: dict[str, Any]) -> list[str]:
    """A comparison record in the fixed message shape of harness.compare.Comparison.describe."""
    tolerance = c.get("tolerance") or {}
    if is_exact(c):
        return [f"{c.get('statement') or c.get('note') or label(c) + ' differs'} ({tolerance.get('reason', '')})"]
    total = c.get("total") or 0
    pct = 100.0 * (c.get("mismatched") or 0) / total if total else 0.0
    lines = [f"{label(c)}: mismatched elements: {c.get('mismatched')} / {total} ({pct:.1f}%)"]
    if c.get("note"):
        lines.append(f"  {c['note']}")
    worst = c.get("worst") or {}
    if worst.get("index"):
        location = worst.get("location") or ""
        lines.append(f"  worst at {location}: actual {worst.get('actual')!r}, expected {worst.get('expected')!r}")
    lines.append(f"  greatest absolute difference {_number(c.get('max_abs_err')):.3g}, greatest relative difference "
                 f"{_number(c.get('max_rel_err')):.3g}, {_number(c.get('error_ratio')):.3g}x the allowed error")
    allowed = f"|err| <= {_number(tolerance.get('atol')):.3g}"
    if _number(tolerance.get("rtol")):
        allowed += f" + {_number(tolerance.get('rtol')):.3g}·|expected|"
    lines.append(f"  allowed ({c.get('dtype')}): {allowed} ({tolerance.get('reason', '')})")
    return lines


def roots_and_knock_ons(case: dict[str, Any]) -> tuple[list[list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """(root groups: failed roots grouped by quantity, most severe group first and worst first within;
    knock-ons by the label of their root)."""
    comparisons = case.get("comparisons") or []
    if any(not c["passed"] and "knock_on_of" not in c for c in comparisons):
        mark_knock_ons(comparisons, case.get("params"))
    failed = [c for c in comparisons if not c["passed"]]
    roots: dict[str, list[dict[str, Any]]] = defaultdict(list)
    knock_ons: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in failed:
        if c.get("knock_on_of"):
            knock_ons[c["knock_on_of"]].append(c)
        else:
            roots[c["quantity"] + (" " + c["item"] if c.get("item") else "")].append(c)
    groups = [sorted(members, key=severity_key) for members in roots.values()]
    groups.sort(key=lambda members: (severity_key(members[0]), phase_order(members[0]["phase"])))
    return groups, knock_ons


def failure_text(failure: Any) -> str:
    """A failure record (or the string of an older results document) as text, its traceback after it."""
    if isinstance(failure, str):
        return failure
    text = failure.get("message", "")
    if failure.get("traceback"):
        text += f"\n--- rank {failure.get('rank')} traceback ---\n{failure['traceback'].rstrip()}"
    return text


def case_report(case_id: str, case: dict[str, Any], *, shown_roots: int = 6) -> str:
    """The console message of a failed case: what failed first (rank failures, then the root causes worst
    first, each with where else the same quantity failed and the knock-ons folded under it), the rerun line last."""
    groups, knock_ons = roots_and_knock_ons(case)
    comparisons = case.get("comparisons") or []
    failed = sum(not c["passed"] for c in comparisons)
    failures = case.get("failures") or []
    head = f"case {case_id}: {failed} of {len(comparisons)} comparisons failed"
    if failed:
        n_knock = sum(len(v) for v in knock_ons.values())
        head += f" ({sum(len(g) for g in groups)} root, {n_knock} knock-on)"
    if failures:
        head += f", {len(failures)} other failure(s)"
    lines = [head]
    if case.get("unsupported"):
        lines.append(f"  declared unsupported by the implementation: {case['unsupported']}")
    if not comparisons and not failures and not case.get("unsupported"):
        lines.append("  nothing was compared: a case that compares nothing fails")
    for failure in failures:
        lines.extend("  " + line for line in failure_text(failure).splitlines())
    for members in groups[:shown_roots]:
        worst = members[0]
        lines.extend("  " + line for line in _describe(worst))
        others = [c for c in members if c is not worst]
        if others:
            lines.append(f"    same quantity also failed at: {_compact(others)}")
        folded = [k for c in members for k in knock_ons.get(label(c), [])]
        if folded:
            by_quantity: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for k in folded:
                by_quantity[k["quantity"]].append(k)
            text = "; ".join(f"{q} at {_compact(v)}" for q, v in by_quantity.items())
            lines.append(f"    knock-on failures (computed from it): {text}")
    if len(groups) > shown_roots:
        lines.append(f"  ... and {len(groups) - shown_roots} more failing quantities")
    lines.append(f"rerun: {case.get('rerun', '')}")
    return "\n".join(lines)
