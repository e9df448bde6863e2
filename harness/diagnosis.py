"""What the failures of a run have in common, and how the implementation conforms, feature by feature.

Works on a results document (records only, versions 1-3). ``diagnose`` gives, per case kind, one line per failing
root (a root quantity of harness.verdict, an exact check, a kind of rank failure; roots failing in exactly the same
cases share a line): in how many of the cases where it was checked it failed, at which phases, and what those cases
share against the cases where it was checked and passed (their attributes: the kind's ``CaseKind.attributes``, the
device, the area, the features of harness.features), with its knock-ons and an example folded under it. Pooling
every failed case before asking what they share would hide independent defects behind each other; asked per root,
each defect reads as its own line. A condition is claimed only when chance cannot explain it, like hypothesis's
explain phase: the probability that the failures, falling at random among the checked cases, would show it, times
the number of values (or pairs) tried, must be below CLUSTER_CHANCE; otherwise the line says the cases are too few,
or that no case parameter sets them apart. The findings are structured (``Finding``: a sentence, its role, the
findings under it, and for a root its ``data``), rendered alike by the console (``render_findings``) and the HTML
report (harness.reports.html), and stored in the results document. ``conformance_lines`` is the table of
harness.features (per feature: passing, failing, known deviation, declared unsupported); ``communication_lines`` what
the ranks exchanged per training step against torch's SyncBatchNorm (harness.collectives); ``run_summary_lines`` is
the console summary of a run (the verdict of harness.verdict, the diagnosis, the table, the communication, the
failed cases by severity with their root cause and rerun line). A compiled run
(--compile) adds what compiling took: graphs, graph breaks by case kind with their reasons, recompilations, compile
failures (harness.compile_report).
"""
from __future__ import annotations

import math
import textwrap
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from .compile_report import summary_lines as compile_lines
from .counts import judged_findings
from .errors import CaseError

from .collectives import SEQUENCE
from .features import COST_KEYS, KIND_NAMES, NOT_JUDGED, case_cost, conformance, features_of, record_kind
from .kinds import kind_named
from .outcomes import FAILURES, OUTCOMES
from .verdict import (CLASS_TITLES, apart_text, case_headline, deviation_summary, failed_cases_by_class, failure_kind,
                      failure_text, incomplete_text, is_yardstick_suspect, known_defect_text, label,
                      nothing_tested_text, phase_kind, phase_order, plural, root_detail, roots_and_knock_ons,
                      run_counts, severity_key, verdict_of)

__all__ = ["Finding", "diagnose", "render_findings", "conformance_lines", "run_summary_lines", "communication_lines",
           "byte_text", "case_attributes", "CLUSTER_CHANCE"]

Finding = dict[str, Any]  # {"text": sentence, "role": what it is, "children": [Finding, ...]}
CLUSTER_CHANCE = 1e-3  # the most a claimed condition may owe to chance (see _condition)
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


def case_attributes(case: dict[str, Any]) -> list[str]:
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


# -- one line per root ------------------------------------------------------------------------------------------------
# A failure that is not a comparison, as the root it is: a required error not raised is the "error" check, ranks
# that disagree on their collectives the sequence check; a peer's connection error follows another rank's death.
_FAILURE_ROOTS = {"missing_error": "error", "wrong_error": "error", "collectives": SEQUENCE}
_CONSEQUENCES = frozenset({"peer"})
_FAILURE_NAMES = {"raised": "a rank raised", "crashed": "a rank crashed", "hung": "ranks hung past the case timeout",
                  "stalled": "a rank stopped answering", "missing_result": "a rank returned no result",
                  "harness": "the harness could not run the case", "unsupported": "declared unsupported (strict)"}


def _failure_root(failure: Any) -> str | None:
    kind = failure_kind(failure)
    if kind in _CONSEQUENCES:
        return None
    return _FAILURE_ROOTS.get(kind, kind)


def _evidence(case: dict[str, Any]) -> dict[str, Any]:
    """What one case says about each root: the roots that failed in it (their comparisons or failures), the
    quantities that failed in it only as knock-ons, the checks it passed, the phases of each, the knock-ons folded
    under each root."""
    groups, knock_ons = roots_and_knock_ons(case)
    comparisons = case.get("comparisons") or []
    roots: dict[str, list[dict[str, Any]]] = defaultdict(list)
    folded: dict[str, Counter] = defaultdict(Counter)
    for members in groups:
        key = members[0]["quantity"]
        roots[key] += members
        for c in members:
            for k in knock_ons.get(label(c), []):
                folded[key][k["quantity"]] += 1
    failures = case.get("failures") or []
    for failure in failures:
        key = _failure_root(failure)
        if key is not None:
            roots[key].append({"failure": failure, "phase": (failure.get("phase") if isinstance(failure, dict)
                                                             else "") or ""})
    failed = {c["quantity"] for c in comparisons if not c["passed"]}
    checked: dict[str, set[str]] = defaultdict(set)
    for c in comparisons:
        checked[c["quantity"]].add(c["phase"])
    passed: set[str] = {q for q in checked if q not in failed}
    if case.get("outcome") == "passed" and not comparisons:  # a trimmed document: it passed whatever it checked
        passed = _EVERY
    ran = bool(comparisons) and not any(_failure_root(f) not in (None, "error", SEQUENCE) for f in failures)
    if ran:  # a case whose ranks all finished had none of the rank failures
        passed |= {kind for kind in _FAILURE_NAMES if kind not in roots}
    return {"roots": dict(roots), "knock_only": failed - set(roots), "passed": passed, "checked": checked,
            "folded": folded}


class _Every(frozenset):
    """Every check: what a passing case whose record keeps no comparisons (a trimmed document) passed."""

    def __contains__(self, key: object) -> bool:
        return True


_EVERY = _Every()


def _root_name(key: str, items: list[dict[str, Any]]) -> str:
    if key in _FAILURE_NAMES:
        return _FAILURE_NAMES[key]
    shown = list(dict.fromkeys(c["item"] for c in items if c.get("item")))
    return key + (f" ({', '.join(shown[:4])}{', ...' if len(shown) > 4 else ''})" if shown else "")


def _with(n: int, value: str) -> str:
    return f"{n} with {value}"


def _all_among(n_with: int, n_failed: int, total: int) -> float:
    """The chance that ``n_failed`` failures, falling at random among ``total`` cases, all land among ``n_with``."""
    return math.comb(n_with, n_failed) / math.comb(total, n_failed) if n_with >= n_failed else 0.0


def _condition(failed: list[list[str]], passed: list[list[str]]) -> dict[str, Any]:
    """What the cases where a root failed share against those where it was checked and passed (each case: its
    attribute values), as a structured condition: ``kind`` "every" (a value every failure has and no pass has),
    "pair" (two values only the failures have together), "necessary" (a value every failure has, some passes too),
    "groups" (values only failures have, each on several), "none" or "everywhere" (it never passed); with the
    counts and ``chance``, the most that chance could explain it (the probability that failures falling at random
    would show it, times the number of values or pairs tried: Bonferroni). A condition is ``significant`` when
    ``chance`` < CLUSTER_CHANCE; the wording says when it is not."""
    n_f, n_p = len(failed), len(passed)
    total = n_f + n_p
    if not n_p:
        return {"kind": "everywhere", "failed": n_f, "passed": 0, "significant": False, "chance": 1.0}
    has_f: dict[str, set[int]] = defaultdict(set)
    has_p: dict[str, set[int]] = defaultdict(set)
    for i, values in enumerate(failed):
        for v in values:
            has_f[v].add(i)
    for i, values in enumerate(passed):
        for v in values:
            has_p[v].add(i)
    seen: set[tuple[frozenset[int], frozenset[int]]] = set()
    values = []
    for v in list(has_f) + [v for v in has_p if v not in has_f]:
        key = (frozenset(has_f[v]), frozenset(has_p[v]))
        if key not in seen and len(has_f[v]) + len(has_p[v]) < total:  # a value every case has says nothing
            seen.add(key)
            values.append(v)
    tried = max(len(values), 1)
    base = {"failed": n_f, "passed": n_p}
    every = [v for v in values if len(has_f[v]) == n_f]
    clean = [v for v in every if not has_p[v]]
    if clean:
        chance = min(1.0, tried * _all_among(n_f, n_f, total))
        return {**base, "kind": "every", "values": clean[:2], "chance": chance,
                "significant": chance < CLUSTER_CHANCE}
    pairs = [(a, b) for a, b in combinations(every, 2) if not has_p[a] & has_p[b]]
    if pairs:
        a, b = min(pairs, key=lambda ab: len(has_p[ab[0]]) + len(has_p[ab[1]]))
        chance = min(1.0, math.comb(tried, 2) * _all_among(n_f, n_f, total))
        if chance < CLUSTER_CHANCE:
            return {**base, "kind": "pair", "values": [a, b], "passed_with": [len(has_p[a]), len(has_p[b])],
                    "chance": chance, "significant": True}
    if every:
        v = min(every, key=lambda value: len(has_p[value]))
        chance = min(1.0, tried * _all_among(n_f + len(has_p[v]), n_f, total))
        if chance < CLUSTER_CHANCE:
            return {**base, "kind": "necessary", "values": [v], "passed_with": len(has_p[v]), "chance": chance,
                    "significant": True, "exceptions": _exceptions(has_p[v], values, has_f, has_p)}
    groups, left = [], set(range(n_f))
    while len(groups) < 3:  # values no passing case has, on failures that chance does not explain (all of them fail)
        def chance_of(value: str) -> float:  # every case with the value failed: all of them among the failures
            return min(1.0, tried * _all_among(n_f, len(has_f[value]), total))

        best = max((v for v in values if not has_p[v] and len(has_f[v] & left) >= 2 and chance_of(v) < CLUSTER_CHANCE),
                   key=lambda v: len(has_f[v] & left), default=None)
        if best is None:
            break
        groups.append({"value": best, "failed": len(has_f[best]), "chance": chance_of(best)})
        left -= has_f[best]
    if groups:
        return {**base, "kind": "groups", "groups": groups, "unexplained": len(left), "significant": True,
                "chance": max(g["chance"] for g in groups)}
    if every:  # a value every failure has, too common among the passes to tell from chance
        v = min(every, key=lambda value: len(has_p[value]))
        return {**base, "kind": "necessary", "values": [v], "passed_with": len(has_p[v]),
                "chance": min(1.0, tried * _all_among(n_f + len(has_p[v]), n_f, total)), "significant": False}
    return {**base, "kind": "none", "significant": False, "chance": 1.0}


def _exceptions(cases: set[int], values: list[str], has_f: dict[str, set[int]], has_p: dict[str, set[int]]
                ) -> list[list[Any]]:
    """The passing ``cases`` described by values no failed case has (at most two, covering them all), as
    [[value, cases], ...]; [] when two such values do not cover them."""
    left, found = set(cases), []
    while left and len(found) < 2:
        best = max((v for v in values if not has_f[v] and has_p[v] & left), key=lambda v: len(has_p[v] & left),
                   default=None)
        if best is None:
            return []
        found.append([best, len(has_p[best] & left)])
        left -= has_p[best]
    return found if not left else []


def _condition_text(condition: dict[str, Any]) -> tuple[str, list[str]]:
    """The condition as a clause and, for groups of failures, one line per group."""
    kind, n_f, n_p = condition["kind"], condition["failed"], condition["passed"]
    if kind == "everywhere":
        return "in every case where it was checked", []
    if kind == "every":
        v = condition["values"][0]
        also = f" (and {condition['values'][1]})" if len(condition["values"]) > 1 else ""
        if condition["significant"]:
            return f"every one with {v}{also}; it passed in all {n_p} cases without", []
        return (f"all {n_f} have {v}{also}, none of the {n_p} where it passed do (too few cases to rule out "
                f"chance)", [])
    if kind == "pair":
        a, b = condition["values"]
        with_a, with_b = condition["passed_with"]
        return (f"every one with {a} and {b}; none of the {n_p} where it passed has both ({with_a} "
                f"{_have(with_a)} {a}, {with_b} {_have(with_b)} {b})", [])
    if kind == "necessary":
        v, with_v = condition["values"][0], condition["passed_with"]
        if condition["significant"]:
            exceptions = condition.get("exceptions") or []
            why = f" ({', '.join(f'{n} with {w}' for w, n in exceptions)})" if exceptions else ""
            return (f"every one with {v}; none of the {n_p - with_v} without it failed, {with_v} with it passed"
                    f"{why}", [])
        if v not in _DEFAULTS and 2 * with_v <= n_p:
            return (f"all {n_f} have {v}, as do {with_v} of the {n_p} where it passed: no case parameter sets them "
                    "apart", [])
        return f"no case parameter sets them apart from the {n_p} where it passed", []
    if kind == "groups":
        lines = [f"{g['failed']} with {g['value']} (none of the {n_p} where it passed has it)"
                 for g in condition["groups"]]
        if condition["unexplained"]:
            lines.append(f"the other {condition['unexplained']} share no case parameter that every passing case "
                         "lacks")
        return f"in {len(condition['groups'])} group{'s' if len(condition['groups']) > 1 else ''}:", lines
    return f"no case parameter sets them apart from the {n_p} where it passed", []


def _phase_text(root_phases: set[str], checked_phases: set[str]) -> str:
    if not root_phases or root_phases == {""}:
        return ""
    ordered = sorted(p for p in root_phases if p)
    ordered.sort(key=phase_order)
    text = ", at " + (", ".join(ordered) if len(ordered) <= 3 else f"{ordered[0]} ... {ordered[-1]}")
    failed_kinds = {phase_kind(p) for p in ordered}
    checked_kinds = {phase_kind(p) for p in checked_phases if p}
    if failed_kinds < checked_kinds and len(failed_kinds) == 1:
        name = {"train": "training", "eval": "eval", "step": "training"}.get(next(iter(failed_kinds)), "")
        if name:
            text += f" ({name} phases only)"
    return text


def _root_findings(kind: str, cases: list[dict[str, Any]]) -> list[Finding]:
    """One finding per root quantity, exact check or kind of rank failure that failed in a case of ``kind`` (roots
    failing in exactly the same cases share one): where it failed against where it was checked and passed, the
    phases, the knock-ons folded under it, an example."""
    evidence = [_evidence(case) for case in cases]
    attributes = [case_attributes(case) for case in cases]
    keys = list(dict.fromkeys(k for e in evidence for k in e["roots"]))
    by_sets: dict[tuple[frozenset[int], frozenset[int]], list[str]] = {}
    for key in keys:
        failed = frozenset(i for i, e in enumerate(evidence) if key in e["roots"])
        passed = frozenset(i for i, e in enumerate(evidence) if key in e["passed"] and key not in e["roots"])
        by_sets.setdefault((failed, passed), []).append(key)
    findings: list[Finding] = []
    failed_sets: list[frozenset[int]] = []
    for (failed, passed), names in sorted(by_sets.items(), key=lambda item: (-len(item[0][0]), item[1][0])):
        items = [c for i in failed for key in names for c in evidence[i]["roots"][key]]
        knock_only = sum(1 for i, e in enumerate(evidence) if i not in failed and set(names) & e["knock_only"])
        condition = _condition([attributes[i] for i in sorted(failed)], [attributes[i] for i in sorted(passed)])
        clause, group_lines = _condition_text(condition)
        root_phases = {c["phase"] for c in items}
        checked_phases = {p for i in failed | passed for key in names for p in evidence[i]["checked"].get(key, ())}
        name = " and ".join(_root_name(key, [c for c in items if c.get("quantity") == key]) for key in names)
        n_f = len(failed)
        if any(evidence[i]["passed"] is _EVERY for i in passed):
            text = (f"{name}: failed in {plural(n_f, 'case')}{_phase_text(root_phases, checked_phases)}; against "
                    f"the {len(passed)} passing ones (this document keeps no comparisons of passing cases): {clause}")
        else:
            text = (f"{name}: failed in {n_f} of {n_f + len(passed)} case{'s' if n_f + len(passed) != 1 else ''} "
                    f"where it was checked{_phase_text(root_phases, checked_phases)}; {clause}")
        if knock_only:
            text += f" (in {knock_only} more it failed only as a knock-on of another root)"
        children = [_finding(line, "group") for line in group_lines]
        folded: Counter = Counter()
        for i in failed:
            for key in names:
                folded.update(evidence[i]["folded"].get(key, {}))
        if folded:
            children.append(_finding("knock-ons folded under it: " + ", ".join(
                f"{q} {n}" for q, n in folded.most_common(5)) + (" ..." if len(folded) > 5 else ""), "knock-ons"))
        example = _example(cases, failed, names)
        if example:
            children.append(_finding(example, "example"))
        data = {"roots": names, "failed": n_f, "checked": n_f + len(passed), "knock_on_only": knock_only,
                "phases": sorted((p for p in root_phases if p), key=phase_order), "condition": condition,
                "failed_cases": [cases[i]["id"] for i in sorted(failed)][:20], "knock_ons": dict(folded)}
        findings.append({**_finding(text, "root", children), "data": data})
        failed_sets.append(failed)
    _note_shared_conditions(findings, failed_sets, attributes)
    return findings


def _note_shared_conditions(findings: list[Finding], failed_sets: list[frozenset[int]],
                            attributes: list[list[str]]) -> None:
    """A root line without a condition of its own whose failures all have the value another line's condition
    names (a defect seen through a second quantity, where the first one's tolerance hid it) says so: a fact about
    the failed cases, for the reader to weigh, not a claim that they share a cause."""
    named = [(i, f["data"]["condition"]["values"][0]) for i, f in enumerate(findings)
             if f["data"]["condition"]["kind"] in ("every", "necessary") and f["data"]["condition"]["significant"]]
    for i, finding in enumerate(findings):
        if finding["data"]["condition"]["significant"] or finding["data"]["condition"]["kind"] == "everywhere":
            continue
        own = finding["data"]["condition"].get("values") or []
        for j, value in named:
            if j != i and value not in own and all(value in attributes[k] for k in failed_sets[i]):
                other = " and ".join(findings[j]["data"]["roots"])
                finding["text"] += f" (all {len(failed_sets[i])} have {value}, as {other}'s failures do)"
                break


def _example(cases: list[dict[str, Any]], failed: frozenset[int], names: list[str]) -> str:
    """The most severe failure of the root, with its case: a statement, or an error against its magnitude."""
    best = None
    for i in failed:
        case = cases[i]
        for failure in case.get("failures") or []:
            if _failure_root(failure) in names:
                text = (failure_text(failure).strip().splitlines() or [""])[0]
                return f"e.g. {case['id']}: {text}"
        groups, _ = roots_and_knock_ons(case)
        for members in groups:
            if members[0]["quantity"] in names and (best is None or severity_key(members[0]) < severity_key(best[1])):
                best = (case, members[0])
    if best is None:
        return ""
    return f"e.g. {best[0]['id']}: {root_detail(best[1])}"


def _never_failed(cases: list[dict[str, Any]], roots: set[str]) -> str:
    """The quantities compared in the failed cases that never failed (and are no root: a failure that is not a
    comparison can be one)."""
    compared: dict[str, None] = {}
    failed: set[str] = set(roots)
    for case in cases:
        for c in case.get("comparisons") or []:
            compared.setdefault(c["quantity"])
            if not c["passed"]:
                failed.add(c["quantity"])
    never = [q for q in compared if q not in failed]
    if not (never and failed):
        return ""
    return f"never failed: {', '.join(never[:12])}" + (f" and {len(never) - 12} more" if len(never) > 12 else "")


def diagnose(document: dict[str, Any]) -> list[Finding]:
    """What the failures say, from the document's evidence only: per case kind, one finding per failing root (where
    it failed against where it was checked and passed, its condition when chance cannot explain it, its phases,
    knock-ons and an example) and the quantities that never failed; then the known deviations, what was judged
    (declared unsupported, counted apart, property tests) and the comparisons whose yardstick was suspect."""
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
        children = _root_findings(kind, by_kind[kind] + passed)
        never = _never_failed(by_kind[kind], {key for f in children for key in f["data"]["roots"]})
        if never:
            children.append(_finding(never, "never failed"))
        findings.append(_finding(f"{kind} cases: {len(by_kind[kind])} failed, {len(passed)} passed; each failing "
                                 "root against the cases where it was checked and passed:", "kind", children))
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
    findings += judged_findings(document)  # declared unsupported (and for what), counted apart, property tests
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
        return ["no case judged the SUT"]
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
        if c[NOT_JUDGED]:  # declared unsupported for another feature: this one was not judged in them
            parts.append(f"{c[NOT_JUDGED]} not judged (declared unsupported for "
                         + ", ".join(f"{f}: {n}" for f, n in row.not_judged_for.most_common(3))
                         + (", ..." if len(row.not_judged_for) > 3 else "") + ")")
        lines.append(f"{row.feature.name:<{name_width}}  {row.cases:>4} cases: " + ", ".join(parts))
    if clean:
        lines += textwrap.wrap("passing throughout: " + ", ".join(clean), width, subsequent_indent="  ")
    return lines


def byte_text(n: float) -> str:
    """'52 B', '1.2 kB', '3.4 MB'."""
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.3g} B"


def communication_lines(document: dict[str, Any], *, shown_features: int = 5) -> list[str]:
    """What the ranks said to each other (harness.collectives.cost of every case that measured it): collectives and
    bytes per training step and rank against torch's SyncBatchNorm, the cases that issue more collectives than it
    (reported, never failed), and the features whose cost differs most from torch's."""
    costs = [(case, cost) for case in document.get("cases") or [] if (cost := case_cost(case)) is not None]
    unmeasured = Counter((case.get("collectives") or {}).get("unmeasured") for case in document.get("cases") or [])
    unmeasured.pop(None, None)
    notes = [f"not counted in {plural(n, 'case')}: {why}" for why, n in unmeasured.most_common()]
    if not costs:
        return notes
    mean = {key: sum(cost[key] for _, cost in costs) / len(costs) for key in COST_KEYS}
    lines = [f"{mean['per_step']:.3g} collectives and {byte_text(mean['bytes_per_step'])} per training step and "
             f"rank (torch's SyncBatchNorm: {mean['torch_per_step']:.3g} and {byte_text(mean['torch_bytes_per_step'])}"
             f"), mean over {plural(len(costs), 'case')}"]
    costlier = [(case, cost) for case, cost in costs if cost["per_step"] > cost["torch_per_step"]]
    if costlier:
        case, cost = costlier[0]
        lines.append(f"{plural(len(costlier), 'case')} issue more collectives per training step than torch's "
                     f"SyncBatchNorm (reported, not failed), e.g. {case['id']}: {cost['per_step']:g} instead of "
                     f"{cost['torch_per_step']:g}")
    differing = []
    for row in conformance(document.get("cases") or []):
        cost = row.mean_cost()
        if cost is not None and abs(cost["per_step"] - cost["torch_per_step"]) > 1e-9:
            differing.append((cost["per_step"] - cost["torch_per_step"], row.feature.name, cost))
    if differing:
        differing.sort(key=lambda item: -item[0])
        more = f" and {len(differing) - shown_features} more" if len(differing) > shown_features else ""
        lines += textwrap.wrap("by feature, where the mean differs from torch's: " + ", ".join(
            f"{name} {cost['per_step']:.3g} (torch's {cost['torch_per_step']:.3g})"
            for _, name, cost in differing[:shown_features]) + more, 116, subsequent_indent="  ")
    return lines + notes


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
    if apart_text(document):  # op cases of another SUT: they judged torch's kernels, not the SUT
        text += f"; {apart_text(document)}"
    where = [f"sut {env.get('sut', '?')}", f"profile {env.get('profile', '?')}", f"torch {env.get('torch', '?')}"]
    if env.get("device_name"):
        where.append(str(env["device_name"]))
    return text + " · " + " · ".join(where)


def run_summary_lines(document: dict[str, Any], *, shown_cases: int = 15) -> list[str]:
    """The console summary of a results document: the verdict, the diagnosis, the conformance table, the failed
    cases by severity (each with its root cause in a line and its rerun command), the known deviations that passed."""
    lines = [_header(document), "", "Diagnosis:"]
    lines += render_findings(diagnose(document), "  ")
    lines += ["", "Conformance by feature (cases that judged the SUT: pass, FAIL, known deviation, unsupported, not "
              "judged):"]
    lines += ["  " + line for line in conformance_lines(document)]
    communication = communication_lines(document)
    if communication:
        lines += ["", "Communication (the collective audit):"] + ["  " + line for line in communication]
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
            if known_defect_text(case):
                lines.append(f"      {known_defect_text(case)}")
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
