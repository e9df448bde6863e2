"""What a run judged, as findings of the diagnosis: the cases declared unsupported and the features each declaration
concerns, the cases that judged something else than the SUT, and what each property test really tried.

Works on a results document (records only; an older document without ``subject``, ``unsupported_features`` or a
property test's tally reads as before). harness.diagnosis adds these findings to its own; the console
(``render_findings``) and the HTML report render them alike.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .features import unsupported_features
from .verdict import apart_text, plural

__all__ = ["judged_findings", "unsupported_finding", "property_lines"]

Finding = dict[str, Any]  # harness.diagnosis.Finding


def _finding(text: str, role: str, children: list[Finding] | None = None) -> Finding:
    return {"text": text, "role": role, "children": children or []}


def unsupported_finding(document: dict[str, Any]) -> Finding:
    """'declared unsupported: 61 cases (4-D input only, got 5-D: 40, concerning 5-D input (inferred); ...)': per
    reason, how many cases and the features the declaration concerns (harness.features.unsupported_features)."""
    cases = document.get("cases") or []
    concerns = unsupported_features(cases)
    by_reason: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        if case.get("outcome") == "unsupported" and case.get("id") in concerns:
            by_reason[case.get("unsupported") or "no reason given"].append(case["id"])
    if not by_reason:
        return _finding("declared unsupported: none", "unsupported")
    parts = []
    for reason, ids in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0]))[:4]:
        texts = Counter(concerns[i].text() for i in ids)
        parts.append(f"{reason}: {len(ids)}, concerning " + "; ".join(t for t, _ in texts.most_common(2))
                     + (" ..." if len(texts) > 2 else ""))
    total = sum(len(ids) for ids in by_reason.values())
    return _finding(f"declared unsupported: {plural(total, 'case')} (" + "; ".join(parts)
                    + ("; ..." if len(by_reason) > 4 else "") + "); under their other features they count as not "
                    "judged", "unsupported")


def property_lines(document: dict[str, Any]) -> list[str]:
    """One line per property test: its outcome and, when it recorded them, how many examples it judged and why the
    others were not ('test_generated_half_case: NOT EXERCISED: 0 of 25 examples judged (minimum 10; ...)')."""
    lines = []
    for p in document.get("property_tests") or []:
        name = str(p.get("nodeid", "")).split("::")[-1]
        outcome = str(p.get("outcome", "?"))
        text = p.get("note") or f"{p.get('passed_examples', '?')} of {p.get('examples', '?')} examples passed"
        lines.append(f"{name}: {outcome.upper() if outcome == 'not exercised' else outcome}: {text}")
    return lines


def judged_findings(document: dict[str, Any]) -> list[Finding]:
    """The diagnosis' findings about what was judged: cases declared unsupported (per reason, the features),
    cases that judged something else than the SUT (counted apart), the property tests."""
    findings = [unsupported_finding(document)]
    apart = apart_text(document)
    if apart:
        findings.append(_finding(apart + ": not in the SUT's counts nor in its conformance table", "apart"))
    lines = property_lines(document)
    if lines:
        findings.append(_finding(f"property tests: {len(lines)}", "properties",
                                 [_finding(line, "property") for line in lines]))
    return findings
