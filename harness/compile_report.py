"""The compiled lane's facts on the controller side, over records only (docs/compile.md).

Each rank of a compiled case returns what compiling it took (harness.rank.compiled: graphs, graph breaks with their
reasons and frames, recompilations with the guard that failed, compile and run seconds, cache hits). ``merge``
makes the case's ``compile`` record of them (an optional field of a results document's case record):

    {"backend", "ranks", "graphs": [per rank], "compile_s": [per rank], "run_s": [per rank], "cache_hits",
     "cache_misses", "graph_breaks": [{"reason", "detail", "where", "count", "ranks"}],
     "recompiles": [{"reason", "where", "count", "ranks"}]}

(a break or recompilation's count is the most any one rank had; ``ranks`` the ranks that had it). The rest reads a
results document: a run's totals (``totals``), the graph breaks by case kind and reason (``breaks_by_kind``), and
the console's lines (``summary_lines``), which the diagnosis, the conformance table and the HTML report share.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

__all__ = ["merge", "graph_breaks", "is_compiled", "compiled_whole", "totals", "breaks_by_kind", "compile_failures",
           "summary_lines", "case_line", "strict_message"]


def merge(per_rank: dict[int, Any]) -> dict[str, Any] | None:
    """The case's compile record from every rank's value (rank -> what its entry returned; a value without a
    report, e.g. of a rank that raised before compiling, is left out); None when no rank compiled."""
    reports = [(rank, value["compile"]) for rank, value in sorted(per_rank.items())
               if isinstance(value, dict) and isinstance(value.get("compile"), dict)]
    if not reports:
        return None
    record: dict[str, Any] = {"backend": reports[0][1]["backend"], "ranks": [rank for rank, _ in reports]}
    for key in ("graphs", "compile_s", "run_s"):
        record[key] = [report.get(key, 0) for _, report in reports]
    for key in ("cache_hits", "cache_misses"):
        record[key] = sum(int(report.get(key, 0)) for _, report in reports)
    for key, fields in (("graph_breaks", ("reason", "detail", "where")), ("recompiles", ("reason", "where"))):
        merged: dict[tuple[str, ...], dict[str, Any]] = {}
        for rank, report in reports:
            for item in report.get(key) or []:
                entry = merged.setdefault(tuple(item.get(f, "") for f in fields),
                                          {**{f: item.get(f, "") for f in fields}, "count": 0, "ranks": []})
                entry["count"] = max(entry["count"], int(item.get("count", 1)))
                entry["ranks"].append(rank)
        record[key] = list(merged.values())
    return record


def is_compiled(case: dict[str, Any]) -> bool:
    """Whether a case record ran compiled (it has a compile record)."""
    return isinstance(case.get("compile"), dict)


def compiled_whole(case: dict[str, Any]) -> bool:
    """A case that ran compiled graphs and no graph break (and whose compile did not fail)."""
    return (is_compiled(case) and sum(case["compile"].get("graphs") or []) > 0 and not graph_breaks(case)
            and case.get("outcome") != "compile_failed")


def graph_breaks(case: dict[str, Any]) -> int:
    """The graph breaks a compiled case had (0 for a case that did not run compiled)."""
    record = case.get("compile") if isinstance(case, dict) else None
    if not isinstance(record, dict):
        return 0
    return sum(int(b.get("count", 1)) for b in record.get("graph_breaks") or [])


def strict_message(record: dict[str, Any]) -> str:
    """What --strict-compile reports for a case with graph breaks."""
    breaks = record.get("graph_breaks") or []
    shown = "; ".join(f"{b['reason']} at {b['where']}" + (f" (x{b['count']})" if b["count"] > 1 else "")
                      for b in breaks[:3])
    more = f"; and {len(breaks) - 3} more" if len(breaks) > 3 else ""
    return (f"{sum(b['count'] for b in breaks)} graph break(s) under --compile {record['backend']}: {shown}{more} "
            f"(--strict-compile: a graph break fails)")


def _kind(case: dict[str, Any]) -> str:
    return str(case.get("kind") or case.get("level") or "module")


def compile_failures(cases: Iterable[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The cases whose outcome is "compile failed", grouped by the failure's first line (most cases first); a known
    deviation of the compiler is listed with the known deviations, not here."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        if case.get("outcome") != "compile_failed":
            continue
        for failure in case.get("failures") or []:
            if isinstance(failure, dict) and failure.get("kind") == "compile":
                first = (str(failure.get("message") or "").strip().splitlines() or [""])[0]
                groups[first.split(": ", 1)[-1] if first.startswith("rank ") else first].append(case)
                break
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


def totals(cases: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """A run's compiled lane in numbers (None when no case ran compiled): backends, cases, graphs compiled (all
    ranks), compile and run seconds (each case's slowest rank, summed), cache hits and misses, cases with graph
    breaks, recompilations."""
    compiled = [c for c in cases if is_compiled(c)]
    if not compiled:
        return None
    records = [c["compile"] for c in compiled]
    return {"backends": sorted({r.get("backend", "?") for r in records}), "cases": len(compiled),
            "graphs": sum(sum(r.get("graphs") or []) for r in records),
            "compile_s": sum(max(r.get("compile_s") or [0.0]) for r in records),
            "run_s": sum(max(r.get("run_s") or [0.0]) for r in records),
            "cache_hits": sum(r.get("cache_hits", 0) for r in records),
            "cache_misses": sum(r.get("cache_misses", 0) for r in records),
            "cases_with_breaks": sum(graph_breaks(c) > 0 for c in compiled),
            "graph_breaks": sum(graph_breaks(c) for c in compiled),
            "recompiles": sum(int(x.get("count", 1)) for r in records for x in r.get("recompiles") or [])}


def breaks_by_kind(cases: Iterable[dict[str, Any]]) -> dict[str, list[tuple[str, str, str, int, int]]]:
    """Per case kind, each graph break (reason, detail, where) with the cases that had it and its count over them,
    most cases first."""
    by_kind: dict[str, dict[tuple[str, str, str], list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for case in cases:
        record = case.get("compile")
        if not isinstance(record, dict):
            continue
        for b in record.get("graph_breaks") or []:
            entry = by_kind[_kind(case)][(b.get("reason", ""), b.get("detail", ""), b.get("where", ""))]
            entry[0] += 1
            entry[1] += int(b.get("count", 1))
    return {kind: sorted(((*key, n_cases, n) for key, (n_cases, n) in found.items()), key=lambda t: (-t[3], t[0]))
            for kind, found in by_kind.items()}


def _recompile_reasons(cases: Iterable[dict[str, Any]]) -> Counter:
    reasons: Counter = Counter()
    for case in cases:
        record = case.get("compile")
        for r in (record.get("recompiles") or []) if isinstance(record, dict) else []:
            reasons[(r.get("reason", ""), r.get("where", ""))] += int(r.get("count", 1))
    return reasons


def case_line(record: dict[str, Any]) -> str:
    """One case's compile record in a line: graphs, breaks, recompilations, seconds."""
    breaks = sum(int(b.get("count", 1)) for b in record.get("graph_breaks") or [])
    recompiles = sum(int(r.get("count", 1)) for r in record.get("recompiles") or [])
    cached = f" ({record.get('cache_hits', 0)} from the cache)" if record.get("cache_hits") else ""
    return (f"{record.get('backend')}: {sum(record.get('graphs') or [])} graphs over {len(record.get('ranks') or [])}"
            f" ranks{cached}, {breaks} graph breaks, {recompiles} "
            f"recompilations, compile {max(record.get('compile_s') or [0.0]):.2f} s, run "
            f"{max(record.get('run_s') or [0.0]):.2f} s")


def _cases(n: int, kind: str = "") -> str:
    return f"{n} {kind + ' ' if kind else ''}case{'s' * (n != 1)}"


def summary_lines(document: dict[str, Any], *, shown: int = 6) -> list[str]:
    """The compiled lane of a run for the console: totals, the graph breaks per case kind with their reasons and
    frames, the recompilations by the guard that failed, the compile failures by their first line; [] when no
    case ran compiled."""
    cases = document.get("cases") or []
    total = totals(cases)
    failures = compile_failures(cases)
    if total is None and not failures:
        return []
    lines = []
    if total is not None:
        ratio = f" ({total['compile_s'] / total['run_s']:.1f}x the run time)" if total["run_s"] > 0 else ""
        cached = total["cache_hits"] + total["cache_misses"]
        cache = f"; {total['cache_hits']} from the cache, {total['cache_misses']} compiled anew" if cached else ""
        lines.append(f"{total['cases']} cases compiled, {total['graphs']} graphs (all ranks{cache}), "
                     f"compile {total['compile_s']:.1f} s{ratio}, run {total['run_s']:.1f} s; "
                     f"{total['cases_with_breaks']} of {total['cases']} cases with graph breaks, "
                     f"{total['recompiles']} recompilations")
    for kind, found in sorted(breaks_by_kind(cases).items()):
        n_kind = sum(1 for c in cases if is_compiled(c) and _kind(c) == kind)
        lines.append(f"graph breaks in {kind} cases ({len(found)} distinct, {_cases(n_kind, kind)} compiled):")
        for reason, detail, where, n_cases, count in found[:shown]:
            lines.append(f"  {reason} at {where}: {_cases(n_cases)} ({count} break{'s' * (count != 1)})"
                         + (f"; {detail}" if detail else ""))
        if len(found) > shown:
            lines.append(f"  ... and {len(found) - shown} more")
    reasons = _recompile_reasons(cases)
    if reasons:
        lines.append("recompilations (the guard that failed): " + "; ".join(
            f"{reason} in {where} x{n}" for (reason, where), n in reasons.most_common(4))
            + ("; ..." if len(reasons) > 4 else ""))
    for first, members in failures[:shown]:
        lines.append(f"compile failed in {_cases(len(members))}: {first} (first: {members[0]['id']})")
    return lines
