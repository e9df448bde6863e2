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
- **The run's verdict.** ``verdict_of`` (PASSED / FAILED / INCOMPLETE / NO CASES RAN, which fails: a run that
  judged nothing tested nothing; ``nothing_tested_text`` says why. An incomplete run never
  reads as passed) and ``failed_cases_by_class`` (failed cases in the severity groups above). What the failures
  have in common, the conformance table and the console summary are harness.diagnosis.
- **What the counts are about.** ``run_counts`` counts the cases that judged the SUT; op cases run with another
  SUT than torch judged torch's kernels (or the --kernels substitutes), not the SUT (harness.features
  ``case_subject``): ``apart_counts`` / ``apart_text`` count them apart. Any failure fails the run whatever it
  judged, but only a case or property test that judged the SUT (or, with --kernels, an op case: the kernels under
  test) makes a run tested; a property test "not exercised" (too few judged examples, harness.strategies) did not.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable

from .features import judges_sut
from .outcomes import FAILING, FAILURES, JUDGED, OUTCOMES
from .quantities import inputs_of

__all__ = ["describe", "where", "CLASSES", "CLASS_TITLES", "failure_class", "severity_key", "phase_order", "run_order",
           "mark_knock_ons", "case_report", "scaled_error", "is_exact", "label", "roots_and_knock_ons", "failure_text",
           "exact_statement", "scaled_text", "case_class", "case_severity_key", "case_headline",
           "failed_cases_by_class", "verdict_of", "incomplete_text",
           "nothing_tested_text", "run_counts", "apart_counts", "apart_text", "was_tested", "known_defect_text",
           "deviation_summary",
           "is_yardstick_suspect", "YARDSTICK_SUSPECT", "plural", "number", "failure_kind",
           "phase_kind", "root_detail"]

# Failure classes, most telling first (the report's groups).
CLASSES = ("compiler", "rank failure", "NaN/inf", "dtype", "exact check", "numeric")
_PHASE = re.compile(r"^([a-z_]+?)(\d+)$")
_PHASE_KINDS = {"train": 0, "eval": 1, "step": 0}


def number(value: Any) -> float:
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
    return (number(tolerance.get("atol")) == 0 and number(tolerance.get("rtol")) == 0
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


_REASON_SCALE = re.compile(r"\bx scale ([0-9][0-9.]*(?:e[+-]?\d+)?)")


def _scale(comparison: dict[str, Any]) -> float:
    """The tolerance's scale; a version-1 document has none, but its reason names it ("16 u x scale 4.73",
    harness.tolerances' wording, 3 significant digits)."""
    tolerance = comparison.get("tolerance") or {}
    if "scale" in tolerance:
        return number(tolerance["scale"])
    match = _REASON_SCALE.search(str(tolerance.get("reason") or ""))
    return number(match.group(1)) if match else math.nan


def scaled_error(comparison: dict[str, Any]) -> float:
    """max |err| in units of the quantity's magnitude (the tolerance's scale); error / tolerance if unknown."""
    scale = _scale(comparison)
    error = number(comparison.get("max_abs_err"))
    if math.isfinite(scale) and scale > 0 and not math.isnan(error):
        return error / scale
    return number(comparison.get("error_ratio"))


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


def run_order(params: dict[str, Any] | None) -> Callable[[str], tuple]:
    """Sort key of a case's phases in the order they ran: ``phase_order``, or with eval phases interleaved between
    the training steps (``interleave_eval``) train0 < eval0 < train1 < eval1 < ..."""
    if not (params or {}).get("interleave_eval"):
        return phase_order

    def interleaved(phase: str) -> tuple:
        kind, index, name = phase_order(phase)
        return (kind == 9, index, kind, name)

    return interleaved


def phase_kind(phase: str) -> str:
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
    phases = sorted({c["phase"] for c in comparisons}, key=run_order(params))
    previous = {p: phases[i - 1] if i else None for i, p in enumerate(phases)}
    index: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for c in failed:
        for rank in c.get("ranks") or [c.get("rank") or 0]:
            index[(c["quantity"], c["phase"], group_of[int(rank)])].append(c)

    def root_of(c: dict[str, Any], seen: set[int]) -> dict[str, Any] | None:
        groups = {group_of[int(r)] for r in (c.get("ranks") or [c.get("rank") or 0])}
        for name, when in inputs_of(c["quantity"], phase_kind(c["phase"])):
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


def where(comparison: dict[str, Any]) -> str:
    """'rank 1' / 'sum over ranks 0,1'."""
    if comparison.get("rank") is not None:
        return f"rank {comparison['rank']}"
    return "sum over ranks " + ",".join(map(str, comparison.get("ranks") or []))


def label(comparison: dict[str, Any]) -> str:
    """'running_var at train0, rank 1' / 'grad_weight at train0, sum over ranks 0,1'."""
    quantity = comparison["quantity"] + (f" {comparison['item']}" if comparison.get("item") else "")
    return f"{quantity} at {comparison['phase']}, {where(comparison)}"


def _compact(comparisons: Iterable[dict[str, Any]]) -> str:
    """'train0 (ranks 0,1,2), train1 (rank 0)' for a list of comparisons of one quantity; a group sum reads
    'train0 (sum over ranks 0,1,2)'."""
    by_phase: dict[str, list[str]] = defaultdict(list)
    sums: dict[str, list[str]] = defaultdict(list)
    for c in comparisons:
        if c.get("rank") is not None:
            by_phase[c["phase"]].append(str(c["rank"]))
        else:
            sums[c["phase"]].append(",".join(map(str, c.get("ranks") or [])))
    parts = []
    for phase in sorted(set(by_phase) | set(sums), key=phase_order):
        ranks = by_phase.get(phase, [])
        who = [f"{'rank' if len(ranks) == 1 else 'ranks'} {','.join(ranks)}"] if ranks else []
        who += [f"sum over ranks {group}" for group in sums.get(phase, [])]
        parts.append(f"{phase} ({'; '.join(who)})")
    return ", ".join(parts)


def describe(c: dict[str, Any]) -> list[str]:
    """A comparison record (harness.compare.Comparison.record) in the fixed message shape: what, where, how many
    elements, the worst one, by how much, against which tolerance; an equality check is one statement and its
    rule. The one formatter of comparisons: the console, the HTML report and the gate read it."""
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
    lines.append(f"  greatest absolute difference {number(c.get('max_abs_err')):.3g}, greatest relative difference "
                 f"{number(c.get('max_rel_err')):.3g}, {number(c.get('error_ratio')):.3g}x the allowed error")
    allowed = f"|err| <= {number(tolerance.get('atol')):.3g}"
    if number(tolerance.get("rtol")):
        allowed += f" + {number(tolerance.get('rtol')):.3g}·|expected|"
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


def known_defect_text(case: dict[str, Any]) -> str:
    """The note of a failed case that matches the signature of another SUT's known defect (a case record's
    ``known_defect``, harness.deviations), or ''."""
    note = case.get("known_defect")
    if not note:
        return ""
    return (f"matches the signature of known {note.get('sut')} defect: {note.get('summary')} ({note.get('link')}); "
            f"{note.get('match')}")


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
    if known_defect_text(case):
        lines.append(f"  {known_defect_text(case)}")
    if case.get("unsupported"):
        lines.append(f"  declared unsupported by the implementation: {case['unsupported']}")
    if not comparisons and not failures and not case.get("unsupported"):
        lines.append("  nothing was compared: a case that compares nothing fails")
    for failure in failures:
        lines.extend("  " + line for line in failure_text(failure).splitlines())
    for members in groups[:shown_roots]:
        worst = members[0]
        lines.extend("  " + line for line in describe(worst))
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


# -- the run: verdict, severity groups of failed cases, diagnosis, conformance, console summary -----------------------
CLASS_TITLES = {
    "compiler": "Compiler: compile failed (--compile), graph breaks under --strict-compile",
    "rank failure": "Rank failures (exceptions, crashes, hangs)",
    "NaN/inf": "NaN/inf where a number was expected",
    "dtype": "Wrong dtype",
    "exact check": "Exact checks (counters, bit-for-bit agreement, required errors)",
    "numeric": "Numeric failures (by scaled error, largest first)",
}
YARDSTICK_SUSPECT = "yardstick suspect"
_REQUIRED_ERROR = re.compile(r"expected \w*(Error|Exception)")


def exact_statement(comparison: dict[str, Any]) -> str:
    """What a failed exact check found, as a sentence (an older document has no statement: its note)."""
    if comparison.get("statement"):
        return comparison["statement"]
    note = comparison.get("note") or ""
    return f"{label(comparison)}: {note}" if note else f"{label(comparison)} differs"


def _percent(value: float) -> str:
    if math.isinf(value):
        return "∞%"
    if value >= 1e4:
        return f"{value:.3g}%"
    if value >= 10:
        return f"{value:.0f}%"
    return f"{value:.1f}%" if value >= 1 else f"{value:.2g}%"


def scaled_text(comparison: dict[str, Any]) -> str:
    """"2.0% of the quantity's magnitude" (max |err| / the tolerance's scale); "" when the scale is unknown (an
    exact check, an older document)."""
    scale = _scale(comparison)
    error = number(comparison.get("max_abs_err"))
    if is_exact(comparison) or not (math.isfinite(scale) and scale > 0) or math.isnan(error):
        return ""
    return f"{_percent(100.0 * error / scale)} of the quantity's magnitude"


def is_yardstick_suspect(comparison: dict[str, Any]) -> bool:
    """The tolerance did not trust the single-process BatchNorm's error (harness.tolerances): it shares the error."""
    return YARDSTICK_SUSPECT in str((comparison.get("tolerance") or {}).get("reason") or "")


def failure_kind(failure: Any) -> str:
    if isinstance(failure, dict):
        return str(failure.get("kind") or "rank failure")
    text = str(failure)  # an older document's failure string
    if " raised " in text:
        return "raised"
    if " crashed" in text:
        return "crashed"
    if "hung" in text or "stalled" in text:
        return "hung"
    return "missing_error" if _REQUIRED_ERROR.search(text) else "rank failure"


def _failure_class(failure: Any) -> str:
    """A failure that is not a comparison: a required error not raised and ranks that disagree on their collectives
    are exact checks, torch.compile's failure or a graph break under --strict-compile the compiler's, the rest rank
    failures (a rank raised, crashed, hung, or the harness could not run the case)."""
    kind = failure_kind(failure)
    if kind in ("compile", "graph_break"):
        return "compiler"
    return "exact check" if kind in ("missing_error", "wrong_error", "collectives") else "rank failure"


def case_class(case: dict[str, Any]) -> str:
    """The severity class of a failed case: the most telling of its failures and root comparisons."""
    groups, _ = roots_and_knock_ons(case)
    classes = [_failure_class(f) for f in case.get("failures") or []] + [failure_class(g[0]) for g in groups]
    return min(classes, key=CLASSES.index) if classes else "rank failure"  # nothing compared: nothing came back


def case_severity_key(case: dict[str, Any]) -> tuple[int, float, str]:
    """Sort key of failed cases, most severe first: class, then the worst root's scaled error, then the id."""
    cls = case_class(case)
    groups, _ = roots_and_knock_ons(case)
    value = scaled_error(groups[0][0]) if groups and cls == "numeric" else math.nan
    return CLASSES.index(cls), -(value if not math.isnan(value) else 0.0), case.get("id", "")


def root_detail(c: dict[str, Any]) -> str:
    """One root failure in a line: an exact check's statement; a number's error as a fraction of its magnitude
    and against its tolerance."""
    if is_exact(c):
        return exact_statement(c)
    text = label(c) + ": "
    if failure_class(c) == "NaN/inf":
        return text + (c.get("note") or "NaN/inf where a number was expected")
    scaled = scaled_text(c)
    text += f"max |err| {number(c.get('max_abs_err')):.3g}"
    text += f" = {scaled}" if scaled else ""
    text += f", {number(c.get('error_ratio')):.3g}x the allowed error"
    return text + (" (yardstick suspect)" if is_yardstick_suspect(c) else "")


def case_headline(case: dict[str, Any]) -> str:
    """What failed first in a failed case, in one line: its first rank failure, or its worst root cause, then how
    many other roots and knock-ons it has."""
    groups, knock_ons = roots_and_knock_ons(case)
    failures = case.get("failures") or []
    n_knock = sum(len(v) for v in knock_ons.values())
    extra = []
    if failures and _failure_class(failures[0]) == case_class(case):
        first = (failure_text(failures[0]).strip().splitlines() or [""])[0]
        if len(failures) > 1:
            extra.append(f"{len(failures) - 1} more failure(s)")
        if groups:
            extra.append(f"{len(groups)} failing quantit{'y' if len(groups) == 1 else 'ies'}")
    elif groups:
        first = root_detail(groups[0][0])
        if len(groups[0]) > 1:
            extra.append(f"also at {_compact(groups[0][1:])}")
        if len(groups) > 1:
            others = [g[0]["quantity"] + (f" {g[0]['item']}" if g[0].get("item") else "") for g in groups[1:4]]
            extra.append("other roots: " + ", ".join(others) + (f" and {len(groups) - 4} more" if len(groups) > 4
                                                                  else ""))
    elif case.get("unsupported"):
        first = f"declared unsupported: {case['unsupported']}"
    else:
        first = "nothing was compared"
    if n_knock:
        extra.append(f"{n_knock} knock-on failure{'s' if n_knock != 1 else ''}")
    return first + (f" [{'; '.join(extra)}]" if extra else "")


def failed_cases_by_class(document: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The failed cases (outcome failed or error) in their severity groups (CLASSES order, empty groups left
    out), most severe first within each."""
    by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in sorted((c for c in document.get("cases") or [] if c.get("outcome") in FAILURES),
                       key=case_severity_key):
        by_class[case_class(case)].append(case)
    return [(cls, by_class[cls]) for cls in CLASSES if by_class.get(cls)]


def run_counts(document: dict[str, Any]) -> Counter:
    """The outcomes of the cases that judged the SUT."""
    return Counter(c.get("outcome") for c in document.get("cases") or [] if judges_sut(c))


def apart_counts(document: dict[str, Any]) -> Counter:
    """The outcomes of the cases that judged something else than the SUT (op cases: the kernels)."""
    return Counter(c.get("outcome") for c in document.get("cases") or [] if not judges_sut(c))


def apart_text(document: dict[str, Any]) -> str:
    """'20 op cases tested torch's kernels, not the SUT (20 passed)', or '' when every case judged the SUT."""
    counts = apart_counts(document)
    if not counts:
        return ""
    kernels = (document.get("environment") or {}).get("kernels")
    what = f"the --kernels substitutes ({kernels})" if kernels else "torch's kernels"
    return (f"{plural(sum(counts.values()), 'op case')} tested {what}, not the SUT ("
            + ", ".join(f"{counts[o.name]} {o.label}" for o in OUTCOMES if counts[o.name]) + ")")


def was_tested(document: dict[str, Any]) -> bool:
    """Whether the run judged what it was asked to test: a case or a property test that judged the SUT, or, with
    --kernels (the substitutes are under test), an op case."""
    properties = [p for p in document.get("property_tests") or [] if p.get("outcome") in ("passed", "failed")]
    kernels = bool((document.get("environment") or {}).get("kernels"))
    return bool(properties) or any(c.get("outcome") in JUDGED and (kernels or judges_sut(c))
                                   for c in document.get("cases") or [])


def verdict_of(document: dict[str, Any]) -> str:
    """FAILED (a case or property test failed, whatever it judged: whether or not the run completed, it can never
    become green), INCOMPLETE (the run did not finish and nothing failed: never PASSED, whatever ran), NO CASES RAN
    (nothing under test was checked: no case ran, or every one was skipped, declared unsupported or judged only
    torch's kernels, and no property test was exercised) or PASSED."""
    cases = document.get("cases") or []
    properties = document.get("property_tests") or []
    if any(c.get("outcome") in FAILING for c in cases) or any(p.get("outcome") == "failed" for p in properties):
        return "FAILED"
    if document.get("status") == "incomplete":
        return "INCOMPLETE"
    if not was_tested(document):
        return "NO CASES RAN"
    return "PASSED"


def nothing_tested_text(document: dict[str, Any]) -> str:
    """Why a run judged no case ("12 cases declared unsupported (momentum=None: 7; ...), 3 skipped (needs CUDA)"),
    for the NO CASES RAN verdict: a run that tested nothing fails (exit 1), with its reasons."""
    cases = document.get("cases") or []
    parts = []
    for outcome_name, word, field in (("unsupported", "declared unsupported", "unsupported"),
                                      ("skipped", "skipped", "xfail_reason")):
        reasons = Counter((c.get(field) or "no reason given").split("\n")[0][:120] for c in cases
                          if c.get("outcome") == outcome_name and judges_sut(c))
        if reasons:
            parts.append(f"{plural(sum(reasons.values()), 'case')} {word} ("
                         + "; ".join(f"{r}: {n}" for r, n in reasons.most_common(3))
                         + ("; ..." if len(reasons) > 3 else "") + ")")
    if apart_counts(document):
        parts.append(apart_text(document))
    unexercised = [p for p in document.get("property_tests") or [] if p.get("outcome") == "not exercised"]
    if unexercised:
        parts.append(f"{plural(len(unexercised), 'property test')} not exercised")
    return "nothing was tested: " + ("; ".join(parts) if parts else "no case was selected")


def incomplete_text(document: dict[str, Any]) -> str:
    """'12 of 121 selected tests ran (interrupted)' for an incomplete document, else ''. Selected tests are the cases
    and the property tests."""
    if document.get("status") != "incomplete":
        return ""
    info = document.get("incomplete") or {}
    ran = info.get("cases_run", len(document.get("cases") or []))
    selected = info.get("cases_selected", "?")
    return f"{ran} of {selected} selected tests ran" + (f" ({info['reason']})" if info.get("reason") else "")


def deviation_summary(reason: str) -> str:
    """A known deviation's reason in one short line: its condition (the text before the first ': ')."""
    text = re.sub(r"^known deviation of [^:]+: ", "", (reason or "").strip())
    head = text.split(": ", 1)[0]
    head = head.split(". ", 1)[0]
    return head if len(head) <= 160 else head[:157] + "..."


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
