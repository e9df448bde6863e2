"""What the failures of a run have in common, and how the implementation conforms, feature by feature.

Works on a results document (records only, versions 1-3). ``diagnose`` states what the failed cases share that
the passing ones do not (case parameters, the failing root quantities and phases), in counts taken from the
document and never beyond them, like hypothesis's explain phase. It returns structured findings (``Finding``: a
sentence, its role and the findings under it), which the console (``render_findings``) and the HTML report
(harness.reports.html) render alike. ``conformance_lines`` is the table of harness.features (per feature: passing,
failing, known deviation, declared unsupported); ``run_summary_lines`` is the console summary of a run (the
verdict of harness.verdict, the diagnosis, the table, the failed cases by severity with their root cause and
rerun line). A compiled run (--compile) adds what compiling took: graphs, graph breaks by case kind with their
reasons, recompilations, compile failures (harness.compile_report).
"""
from __future__ import annotations

import textwrap
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from .compile_report import summary_lines as compile_lines
from .errors import CaseError

from .features import KIND_NAMES, conformance, features_of, record_kind
from .kinds import kind_named
from .outcomes import FAILURES, OUTCOMES
from .verdict import (CLASS_TITLES, case_headline, deviation_summary, failed_cases_by_class, failure_kind,
                      incomplete_text, is_yardstick_suspect, nothing_tested_text, phase_kind, phase_order, plural,
                      roots_and_knock_ons, run_counts, verdict_of)

__all__ = ["Finding", "diagnose", "render_findings", "conformance_lines", "run_summary_lines", "CLUSTER_CHANCE"]

Finding = dict[str, Any]  # {"text": sentence, "role": what it is, "children": [Finding, ...]}
CLUSTER_CHANCE = 1e-3  # the most a cluster of failed cases may owe to chance (see _pattern_lines)
# Values most cases have: they describe no pattern unless no passing case has them.
_DEFAULTS = frozenset({"no empty shard", "no process groups", "data not offset", "no eval steps", "even shards",
                       "affine", "running statistics", "normal data", "layout contiguous", "training steps",
                       "equal element counts per rank"})


def _have(n: int) -> str:
    return "has" if n == 1 else "have"


# -- diagnosis --------------------------------------------------------------------------------------------------------
def _finding(text: str, role: str, children: list[Finding] | None = None) -> Finding:
    return {"text": text, "role": role, "children": children or []}


def render_findings(findings: list[Finding], indent: str = "") -> list[str]:
    """Findings as console lines, each level two spaces further in."""
    lines = []
    for finding in findings:
        lines.append(indent + finding["text"])
        lines += render_findings(finding.get("children") or [], indent + "  ")
    return lines


def _attributes(case: dict[str, Any]) -> list[str]:
    """A case's parameters as readable values (its kind's: harness.kinds.CaseKind.attributes, then the device, the
    area and the features of harness.features) that failed and passing cases can be compared on."""
    p = case.get("params") or {}
    kind = record_kind(case)
    try:
        values = kind_named(kind).attributes(p)
    except (KeyError, TypeError, ValueError, CaseError):  # a foreign record: its features only
        values = []
    values += [f"device {case.get('device') or p.get('device')}", f"area {case.get('area')}"]
    values += [name for name in features_of(p, kind, case) if not name.endswith(" cases")]
    return list(dict.fromkeys(values))


def _pattern_lines(kind: str, failed: list[dict[str, Any]], passed: list[dict[str, Any]]) -> list[str]:
    """What every failed case of a kind shares and no passing one has (or the most that can be said)."""
    n_f, n_p = len(failed), len(passed)
    f_name, p_name = f"failed {kind} case" + ("s" if n_f != 1 else ""), f"passing {kind} cases"
    if not n_p:
        return [f"no {kind} case passed: nothing to compare the failures with"]
    has_f: dict[str, set[int]] = defaultdict(set)
    has_p: dict[str, set[int]] = defaultdict(set)
    for i, case in enumerate(failed):
        for value in _attributes(case):
            has_f[value].add(i)
    for i, case in enumerate(passed):
        for value in _attributes(case):
            has_p[value].add(i)
    # One value per distinct set of cases (the first spelling): "float16 input" and a feature of the same cases.
    seen: set[tuple[frozenset[int], frozenset[int]]] = set()
    values = []
    for value in has_f:
        key = (frozenset(has_f[value]), frozenset(has_p[value]))
        if key not in seen:
            seen.add(key)
            values.append(value)
    shared = [v for v in values if len(has_f[v]) == n_f and len(has_p[v]) < n_p]
    clean = [v for v in shared if not has_p[v]]
    if clean:
        return [f"{n_f} of {n_f} {f_name} {_have(n_f)} {v}; 0 of {n_p} {p_name} do"
                for v in clean[:3]]
    pairs = [(a, b) for a, b in combinations(shared, 2) if not has_p[a] & has_p[b]]
    if pairs:
        a, b = min(pairs, key=lambda ab: len(has_p[ab[0]]) + len(has_p[ab[1]]))
        return [f"{n_f} of {n_f} {f_name} {_have(n_f)} {a} and {b}; 0 of {n_p} {p_name} have both "
                f"({len(has_p[a])} {_have(len(has_p[a]))} {a}, {len(has_p[b])} {_have(len(has_p[b]))} {b})"]
    # Clusters: a value no passing case has, on enough failed cases that chance does not explain it: were each
    # case to fail at the kind's failure rate, all k cases with the value failing has probability rate**k.
    rate = n_f / (n_f + n_p)
    lines, left = [], set(range(n_f))
    while len(lines) < 3:
        best = max((v for v in values if not has_p[v] and len(has_f[v] & left) >= 2
                    and rate ** len(has_f[v]) < CLUSTER_CHANCE), key=lambda v: len(has_f[v] & left), default=None)
        if best is None:
            break
        lines.append(f"{len(has_f[best])} of {n_f} {f_name} have {best}; 0 of {n_p} {p_name} do")
        left -= has_f[best]
    if lines:
        if left:
            lines.append(f"the other {plural(len(left), f'failed {kind} case')} share no parameter that every "
                         f"passing {kind} case lacks")
        return lines
    telling = [v for v in shared if v not in _DEFAULTS]
    if telling:
        fewest = min(len(has_p[v]) for v in telling)
        best = [v for v in telling if len(has_p[v]) == fewest][:2]
        return [f"{n_f} of {n_f} {f_name} have {v}; so do {len(has_p[v])} of {n_p} {p_name}" for v in best] + \
            [f"no case parameter separates failed from passing {kind} cases"]
    return [f"the failed {kind} cases share no case parameter that passing ones lack"]


def _quantity_lines(kind: str, failed: list[dict[str, Any]]) -> list[str]:
    """Which quantities failed first (roots, by the cases they failed in), where, and which never failed."""
    root_cases: Counter = Counter()
    items: dict[str, list[str]] = defaultdict(list)
    phases: set[str] = set()
    compared: dict[str, None] = {}
    failed_names: set[str] = set()
    knock = 0
    kinds: Counter = Counter()
    eval_ran = eval_knock = 0
    for case in failed:
        groups, knock_ons = roots_and_knock_ons(case)
        knock += sum(len(v) for v in knock_ons.values())
        for name in dict.fromkeys(g[0]["quantity"] for g in groups):
            root_cases[name] += 1
        for g in groups:
            phases.update(c["phase"] for c in g)
            if g[0].get("item") and g[0]["item"] not in items[g[0]["quantity"]]:
                items[g[0]["quantity"]].append(g[0]["item"])
        for c in case.get("comparisons") or []:
            compared.setdefault(c["quantity"])
            if not c["passed"]:
                failed_names.add(c["quantity"])
        kinds.update(failure_kind(f) for f in case.get("failures") or [])
        evals = [c for c in case.get("comparisons") or [] if phase_kind(c["phase"]) == "eval"]
        eval_ran += bool(evals)
        eval_knock += any(not c["passed"] for c in evals)
    lines = []
    if kinds:
        with_failures = sum(bool(c.get("failures")) for c in failed)
        lines.append(f"{with_failures} of {len(failed)} failed {kind} cases had a failure that is not a comparison: "
                     + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    if root_cases:
        named = []
        for name, n in root_cases.most_common(8):
            shown = items.get(name, [])
            detail = f" ({', '.join(shown[:4])}{', ...' if len(shown) > 4 else ''})" if shown else ""
            named.append(f"{name}{detail} in {n} of {plural(len(failed), 'case')}")
        more = f" and {len(root_cases) - 8} more" if len(root_cases) > 8 else ""
        where = ""
        if kind != "op":
            ordered = sorted(phases, key=phase_order)
            phase_kinds = {phase_kind(p) for p in ordered}
            where = "; at " + ", ".join(ordered)
            if phase_kinds == {"train"}:
                where += " (training phases only"
                if eval_ran:
                    where += f"; {eval_ran} of these cases also ran eval phases, " + (
                        f"where {eval_knock} failed only as knock-ons" if eval_knock else "which passed")
                where += ")"
            elif phase_kinds == {"eval"}:
                where += " (eval phases only)"
        if knock:
            lines.append(f"root causes: {'; '.join(named)}{more}{where}; plus {plural(knock, 'knock-on failure')} "
                         "computed from them")
        else:
            lines.append(f"failed quantities (all roots, no knock-ons): {'; '.join(named)}{more}{where}")
    never = [q for q in compared if q not in failed_names]
    if never and failed_names:
        lines.append(f"never failed in these cases: {', '.join(never[:12])}"
                     + (f" and {len(never) - 12} more" if len(never) > 12 else ""))
    return lines


def diagnose(document: dict[str, Any]) -> list[Finding]:
    """What the failed cases share and the passing ones do not, from the document's evidence only: per case kind,
    the case parameters every failed case has and no passing case has (counted), the quantities that failed first
    (roots) and those that never failed, the phases; then the known deviations, the cases declared unsupported and
    the comparisons whose yardstick was suspect, one finding each."""
    cases = document.get("cases") or []
    findings: list[Finding] = []
    if document.get("status") == "incomplete":
        findings.append(_finding(f"incomplete run: {incomplete_text(document)}; the evidence below covers only "
                                 "those", "incomplete"))
    failed = [c for c in cases if c.get("outcome") in FAILURES]
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in failed:
        by_kind[record_kind(case)].append(case)
    kinds = [k for k in KIND_NAMES if k in by_kind] + sorted(set(by_kind) - set(KIND_NAMES))
    if not failed:
        findings.append(_finding("no case failed", "failed"))
    else:
        findings.append(_finding(f"{plural(len(failed), 'failed case')}: "
                                 + ", ".join(f"{len(by_kind[k])} {k}" for k in kinds)
                                 + " (known deviations and cases declared unsupported are not counted as failed)",
                                 "failed"))
    for kind in kinds:
        passed = [c for c in cases if c.get("outcome") == "passed" and record_kind(c) == kind]
        children = [_finding(line, "pattern") for line in _pattern_lines(kind, by_kind[kind], passed)]
        children += [_finding(line, "quantities") for line in _quantity_lines(kind, by_kind[kind])]
        findings.append(_finding(f"{kind} cases: {len(by_kind[kind])} failed, {len(passed)} passed", "kind",
                                 children))
    deviations = [c for c in cases if c.get("outcome") == "xfailed"]
    gone = [c for c in cases if c.get("outcome") == "xpassed"]
    reasons = Counter(deviation_summary(c.get("xfail_reason") or "") for c in deviations + gone)
    line = (f"known deviations: {plural(len(deviations), 'case')} failed as documented"
            + (f", under {plural(len(reasons), 'reason')}" if reasons else ""))
    if gone:
        line += f"; {len(gone)} no longer fail{'s' if len(gone) == 1 else ''} (update harness/known_deviations.toml)"
    findings.append(_finding(line, "deviations"))
    compiled = compile_lines(document)
    if compiled:
        backend = (document.get("environment") or {}).get("compile") or "?"
        findings.append(_finding(f"compiled lane (--compile {backend}): {compiled[0]}", "compile",
                                 [_finding(text, "compile") for text in compiled[1:]]))
    unsupported = Counter(c.get("unsupported") or "no reason given" for c in cases if c.get("outcome") == "unsupported")
    findings.append(_finding("declared unsupported: " + (
        f"{plural(sum(unsupported.values()), 'case')} (" + "; ".join(f"{r}: {n}" for r, n in unsupported.most_common(4))
        + ("; ..." if len(unsupported) > 4 else "") + ")" if unsupported else "none"), "unsupported"))
    suspect = [(case, c) for case in cases for c in case.get("comparisons") or [] if is_yardstick_suspect(c)]
    if suspect:
        n_failed = sum(not c["passed"] for _, c in suspect)
        findings.append(_finding(
            f"yardstick suspect in {plural(len(suspect), 'comparison')} ({n_failed} failed, in "
            f"{plural(len({case['id'] for case, _ in suspect}), 'case')}): the single-process BatchNorm shares the "
            "error, so those tolerances are the analytic bound alone", "suspect"))
    return findings


# -- conformance and the console summary ------------------------------------------------------------------------------
def conformance_lines(document: dict[str, Any], *, width: int = 116) -> list[str]:
    """The conformance table in text: a line per feature with a failing, known-deviation or unsupported case,
    then the features that passed throughout, with their case counts."""
    rows = conformance(document.get("cases") or [])
    if not rows:
        return ["no case ran"]
    lines = []
    clean = []
    name_width = max(len(r.feature.name) for r in rows)
    for row in rows:
        c = row.counts
        if row.status == "passing":
            clean.append(f"{row.feature.name} ({c['passing']})")
            continue
        parts = [f"{c['passing']} pass"]
        if c["failing"]:
            parts.append(f"{c['failing']} FAIL")
        if c["known deviation"]:
            parts.append(f"{c['known deviation']} known deviation")
        if c["unsupported"]:
            reason, _ = row.unsupported_reasons.most_common(1)[0]
            others = len(row.unsupported_reasons) - 1
            parts.append(f"{c['unsupported']} unsupported ({reason}"
                         + (f"; and {plural(others, 'other reason')})" if others else ")"))
        lines.append(f"{row.feature.name:<{name_width}}  {row.cases:>4} cases: " + ", ".join(parts))
    if clean:
        lines += textwrap.wrap("passing throughout: " + ", ".join(clean), width, subsequent_indent="  ")
    return lines


def _header(document: dict[str, Any]) -> str:
    word = verdict_of(document)
    counts = run_counts(document)
    env = document.get("environment") or {}
    text = f"SyncBN conformance: {word}"
    if word == "NO CASES RAN":
        text += f" ({nothing_tested_text(document)})"
    if document.get("status") == "incomplete":
        text += f" (incomplete: {incomplete_text(document)})" if word == "FAILED" else f", {incomplete_text(document)}"
    text += f": {plural(sum(counts.values()), 'case')}"
    details = [f"{counts[o.name]} {o.label}" for o in OUTCOMES if counts[o.name]]
    if details:
        text += " (" + ", ".join(details) + ")"
    where = [f"sut {env.get('sut', '?')}", f"profile {env.get('profile', '?')}", f"torch {env.get('torch', '?')}"]
    if env.get("device_name"):
        where.append(str(env["device_name"]))
    return text + " · " + " · ".join(where)


def run_summary_lines(document: dict[str, Any], *, shown_cases: int = 15) -> list[str]:
    """The console summary of a results document: the verdict, the diagnosis, the conformance table, the failed
    cases by severity (each with its root cause in a line and its rerun command), the known deviations that passed."""
    lines = [_header(document), "", "Diagnosis:"]
    lines += render_findings(diagnose(document), "  ")
    lines += ["", "Conformance by feature (cases: pass, FAIL, known deviation, unsupported):"]
    lines += ["  " + line for line in conformance_lines(document)]
    groups = failed_cases_by_class(document)
    total = sum(len(members) for _, members in groups)
    if total:
        lines += ["", f"Failed cases by severity ({total}):"]
    shown = 0
    for cls, members in groups:
        lines.append(f"  {CLASS_TITLES[cls]}: {len(members)}")
        for case in members:
            if shown >= shown_cases:
                break
            shown += 1
            lines.append(f"    {case['id']}: {case_headline(case)}")
            if case.get("rerun"):
                lines.append(f"      rerun: {case['rerun']}")
    if total > shown:
        lines.append(f"  ... and {total - shown} more failed cases (all of them are in the results document)")
    gone = [c for c in document.get("cases") or [] if c.get("outcome") == "xpassed"]
    if gone:
        lines += ["", f"Known deviations that passed ({len(gone)}): the deviation is gone, update "
                  "harness/known_deviations.toml"]
        lines += [f"    {c['id']}" for c in gone]
    if document.get("status") == "incomplete":
        not_run = (document.get("incomplete") or {}).get("not_run") or []
        if not_run:
            lines += ["", f"Not run ({len(not_run)}): " + ", ".join(not_run[:5]) + (" ..." if len(not_run) > 5
                                                                                   else "")]
    return lines
