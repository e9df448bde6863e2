"""The HTML report of a run: one self-contained file (inline CSS and SVG, no script, no network).

The first screen answers "did it pass, what is wrong, what is supported": the verdict bar (PASSED, FAILED,
INCOMPLETE with how many cases ran, NO CASES RAN), the counts (the cases that judged the SUT; op cases that judged
torch's kernels under another SUT apart), the worst failure, the diagnosis (harness.diagnosis.diagnose: what the
failed cases share that the passing ones do not; what was judged, harness.counts), the conformance table
(harness.features: per feature, cases passing, failing, failing as a known deviation, declared unsupported for this
feature, not judged). A compiled run (--compile) has a section of its own after the conformance table: graphs,
compile and run seconds, the graph breaks per case kind with their reasons and frames, recompilations, compile
failures, and every compiled case's numbers (harness.compile_report). Then the failed cases in severity groups (rank
failures, NaN/inf, dtype, exact checks, numeric by scaled error: harness.verdict), each with its root causes first
(an exact check as its statement, a number as its error in units of the quantity's magnitude and against its
tolerance), the knock-on failures folded under their root, a rank x channel heat map of max |err| / allowed, a
histogram of element errors against the tolerance line and the rerun command; then the known deviations (by reason,
the full reason folded), the cases declared unsupported (by reason, with the features it concerns), passing cases
with near misses (error above half the tolerance), property tests (what each tried), skipped cases and the
environment (with what a CPU run takes from the harness's own kernels). Every string that comes from a run (and so
possibly from the implementation under test) goes through html.escape. Version-1 documents (an older run) render
too.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from harness import compile_report
from harness import files
from harness.features import COLUMNS, case_cost, conformance
from harness.outcomes import FAILING, OUTCOMES
from harness.counts import property_lines
from harness.diagnosis import byte_text, communication_lines, diagnose
from harness.features import NOT_JUDGED, unsupported_features
from harness.verdict import apart_counts, apart_text, describe, known_defect_text, nothing_tested_text
from harness.verdict import (CLASS_TITLES, case_headline, deviation_summary, exact_statement, failed_cases_by_class,
                             failure_text, incomplete_text, is_exact, roots_and_knock_ons,
                             run_counts, scaled_text, verdict_of)
from harness.verdict import label as comparison_label
from harness.verdict import where

from .html_case import case_card, case_fragment, case_worst, e, fmt, ratio_of
from .results import as_float

__all__ = ["render_html", "write_html", "case_fragment", "NEAR_MISS"]

NEAR_MISS = 0.5  # a passing comparison above this fraction of its tolerance is called out
DETAILED_CASES = 12  # failed cases shown in full (cards: plots, tables); the rest are listed in a table


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
main{max-width:1320px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:14px;margin:0 0 4px;word-break:break-all}
.verdict{padding:14px 24px;color:#fff}.verdict.pass{background:#1a7f37}.verdict.fail{background:#b42318}
.verdict.incomplete{background:#9a6700}.verdict.none{background:#57606a}
.verdict .sub{opacity:.9;font-size:13px;margin-top:2px;word-break:break-all}
.counts{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0}
.count{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;min-width:90px}
.count b{font-size:20px;display:block}.count.failed b,.count.error b,.count.xpassed b{color:#b42318}
.count.passed b{color:#1a7f37}.count.xfailed b,.count.unsupported b{color:#9a6700}
ul.diag{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px 8px 28px;margin:6px 0}
ul.diag ul{padding-left:18px;list-style:circle;font-weight:400}ul.diag li.kind{font-weight:600}
ul.diag li.example,ul.diag li.knock-ons,ul.diag li.never-failed{color:#57606a;font-size:13px}
td.costlier{color:#9a6700;font-weight:600}
table{border-collapse:collapse;background:#fff;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 7px;
vertical-align:top;text-align:left}th{background:#f3f5f7;font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}
table.conf tr.failing td.failing{color:#b42318;font-weight:600}table.conf tr.unsupported td,
table.conf tr.partly td.unsupported{color:#9a6700}table.conf td.feature{white-space:nowrap}
table.conf tr.unjudged td,table.conf td.not-judged{color:#57606a}
table.cmp tr.fail td:first-child{color:#b42318;font-weight:600}table.cmp tr.knock td{color:#57606a}
table.cmp tr.also td{color:#57606a;font-size:12px}td.stmt{font-weight:600}
.flag{display:inline-block;border-radius:4px;padding:0 5px;font-size:11px;background:#fff1c2;color:#7a4d00;
border:1px solid #e7c26a}
.case{background:#fff;border:1px solid #d0d7de;border-left:5px solid #b42318;border-radius:6px;padding:10px 14px;
margin:12px 0}.headline{color:#b42318;font-weight:600;margin-bottom:4px;word-break:break-word}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;color:#fff;background:#57606a}
.badge.failed,.badge.error,.badge.xpassed{background:#b42318}.badge.xfailed{background:#9a6700}
.badge.passed{background:#1a7f37}
.params{display:flex;flex-wrap:wrap;gap:2px 12px;font:12px ui-monospace,SFMono-Regular,Menlo,monospace;
color:#424a53;margin:4px 0 6px}
.groups{display:flex;flex-wrap:wrap;gap:8px 28px;margin-top:8px}
.group{border:1px solid #eaeef2;border-radius:6px;padding:6px 8px}.gtitle{font-size:12px;font-weight:600}
.group .plots{display:flex;gap:18px;align-items:flex-start}
svg text{font:10px ui-monospace,Menlo,monospace;fill:#424a53}svg text.cap{font-size:11px}svg text.tol{fill:#b42318}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;overflow:auto;max-height:320px;font-size:12px;
white-space:pre-wrap;word-break:break-word}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}.cmd{background:#f6f8fa;padding:2px 6px;
border-radius:4px;user-select:all;word-break:break-all}.rerun{margin-top:6px}
.dim{color:#6e7781;font-size:12px}
.env{display:grid;grid-template-columns:max-content minmax(0,1fr) max-content minmax(0,1fr);gap:2px 10px;
font-size:12px;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;max-width:860px}
.env .k{font-weight:600;color:#424a53}.env div{word-break:break-word}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
td code,li code,.worst code{word-break:break-all}table{max-width:100%}
.worst{background:#fff;border:1px solid #d0d7de;border-left:5px solid #b42318;border-radius:6px;padding:4px 14px 10px;
margin:12px 0}.worst h2{border:0;margin:8px 0 4px}.worst pre{max-height:none}
"""


def _outcome_counts(document: dict[str, Any]) -> str:
    outcomes = run_counts(document)  # the cases that judged the SUT; op cases of another SUT: apart
    boxes = [f'<div class="count {o.name}"><b>{outcomes.get(o.name, 0)}</b>{o.label}</div>' for o in OUTCOMES
             if outcomes.get(o.name, 0) or o.name in ("passed", "failed")]
    apart = apart_counts(document)
    if apart:
        boxes.append(f'<div class="count apart"><b>{sum(apart.values())}</b>{e(apart_text(document))}</div>')
    summary = document.get("summary", {})
    in_deviations = summary.get("deviation_failed_comparisons", 0)
    boxes.append(f'<div class="count"><b>{e(summary.get("comparisons", 0))}</b>comparisons, '
                 f'{e(summary.get("failed_comparisons", 0))} failed'
                 + (f', {e(in_deviations)} in known deviations' if in_deviations else '') + '</div>')
    return '<div class="counts">' + "".join(boxes) + "</div>"


def _verdict_bar(document: dict[str, Any]) -> str:
    word = verdict_of(document)
    env = document.get("environment", {})
    css = {"PASSED": "pass", "FAILED": "fail", "INCOMPLETE": "incomplete"}.get(word, "fail")  # nothing tested fails
    title = f"SyncBN conformance: {word}"
    if word == "NO CASES RAN":
        title += f" ({nothing_tested_text(document)})"
    if document.get("status") == "incomplete":  # FAILED (a failure was seen) or INCOMPLETE (none was)
        title += f" (incomplete: {incomplete_text(document)})" if word == "FAILED" else f": {incomplete_text(document)}"
    context = [f"{len(document.get('cases') or [])} cases", f"sut {env.get('sut', '?')}",
               f"profile {env.get('profile', '?')}", f"torch {env.get('torch', '?')}"]
    if env.get("device_name"):
        context.append(str(env["device_name"]))
    context.append(str(document.get("created", "")))
    return f'<div class="verdict {css}"><h1>{e(title)}</h1><div class="sub">{e(" · ".join(context))}</div></div>'


def _worst_failure(document: dict[str, Any]) -> str:
    """The first screen's answer to "what is wrong": the most severe failed case (harness.verdict's order), its root
    failure with its numbers (what, where, by how much, against which tolerance) and the command that reruns it."""
    groups = failed_cases_by_class(document)
    if not groups:
        return ""
    cls, members = groups[0]
    case = members[0]
    roots, _ = roots_and_knock_ons(case)
    detail = describe(roots[0][0]) if roots else [failure_text(f) for f in (case.get("failures") or [])[:1]]
    lines = "\n".join(line for text in detail for line in text.splitlines()[:8])
    rerun = case.get("rerun") or ""
    kind = CLASS_TITLES[cls].split(" (")[0].lower()
    return (f'<section class="worst"><h2>Worst failure <span class=dim>({e(kind)}; <a href="#{e(case["id"])}">its '
            f'card</a> if shown below)</span></h2>'
            f'<div class="headline">{e(case_headline(case))}</div><code>{e(case["id"])}</code>'
            + (f"<p>{e(known_defect_text(case))}</p>" if known_defect_text(case) else "")
            + f"<pre>{e(lines)}</pre>"
            + (f'<div class="rerun">rerun: <code class="cmd">{e(rerun)}</code></div>' if rerun else "")
            + "</section>")


def _not_run(document: dict[str, Any]) -> str:
    info = document.get("incomplete") or {}
    not_run = info.get("not_run") or []
    if document.get("status") != "incomplete":
        return ""
    rows = "".join(f"<li><code>{e(case_id)}</code></li>" for case_id in not_run)
    return (f"<p><b>The run did not complete</b>: {e(incomplete_text(document))}. Nothing here says the cases that"
            f" did not run pass.</p>"
            + (f"<details><summary>{len(not_run)} cases did not run</summary><ul>{rows}</ul></details>" if rows
               else ""))


def _findings(findings: list[dict[str, Any]]) -> str:
    """harness.diagnosis' findings as nested lists (a finding about a case kind in bold)."""
    items = []
    for finding in findings:
        role = str(finding.get("role") or "").replace(" ", "-")
        css = f' class="{e(role)}"' if role else ""
        children = finding.get("children") or []
        items.append(f"<li{css}>{e(finding['text'])}" + (f"<ul>{_findings(children)}</ul>" if children else "")
                     + "</li>")
    return "".join(items)


def _diagnosis(document: dict[str, Any]) -> str:
    return '<h2>Diagnosis</h2><ul class="diag">' + _findings(diagnose(document)) + "</ul>"


def _conformance_table(document: dict[str, Any]) -> str:
    rows = conformance(document.get("cases") or [])
    if not rows:
        return "<h2>Conformance by feature</h2><p>No case ran.</p>"
    out = []
    for row in rows:
        c = row.counts
        css = {"failing": "failing", "unsupported": "unsupported", "partly unsupported": "partly",
               NOT_JUDGED: "unjudged", "partly judged": "partly"}.get(row.status, "")
        failing_title = ", ".join(row.failing_cases[:20]) + (" ..." if len(row.failing_cases) > 20 else "")
        reasons = "; ".join(f"{r} ({n})" for r, n in row.unsupported_reasons.most_common(3))
        if c[NOT_JUDGED]:
            reasons += ("; " if reasons else "") + "not judged: declared unsupported for " + ", ".join(
                f"{f} ({n})" for f, n in row.not_judged_for.most_common(3))
        cells = "".join(f'<td class="num {col.replace(" ", "-")}"'
                        + (f' title="{e(failing_title)}"' if col == "failing" and c[col] else "")
                        + f">{c[col] or ''}</td>" for col in COLUMNS)
        out.append(f'<tr class="{css}"><td class="feature" title="{e(row.feature.description)}">'
                   f"{e(row.feature.name)}</td><td class=num>{row.cases}</td>"
                   + cells + f"<td>{e(reasons)}</td>" + _cost_cells(row.mean_cost()) + "</tr>")
    head = ("<tr><th>feature</th><th>cases</th><th>supported, passing</th><th>supported, failing</th>"
            "<th>known deviation</th><th>declared unsupported</th><th>not judged</th><th>unsupported because</th>"
            "<th title=\"per training step and rank, mean over the cases that measured it\">collectives / step "
            "(torch's)</th><th>bytes / step (torch's)</th></tr>")
    apart = apart_text(document)
    communication = communication_lines(document)
    return ("<h2>Conformance by feature</h2><p class=dim>The cases that judged the SUT; a case counts in every "
            "feature it has, except that a case declared unsupported counts as unsupported only under the features "
            "its declaration concerns (named by the SUT, or inferred: the unsupported cases' features no judged "
            "case has) and as not judged under the others; a known deviation fails as documented "
            "(harness/known_deviations.toml); skipped cases count nowhere. Communication is the collective "
            "audit's: what the SUT's ranks issued per training step, against torch's SyncBatchNorm on the same cases "
            "(more collectives are reported, never failed)."
            + (f" Not in this table: {e(apart)}." if apart else "") + "</p>"
            f'<table class="conf">{head}{"".join(out)}</table>'
            + (f"<p>{'<br>'.join(e(line) for line in communication)}</p>" if communication else "")
            + _area_table(document))


def _cost_cells(cost: dict[str, float] | None) -> str:
    if cost is None:
        return "<td></td><td></td>"
    css = " costlier" if cost["per_step"] > cost["torch_per_step"] + 1e-9 else ""
    nbytes = f'{byte_text(cost["bytes_per_step"])} ({byte_text(cost["torch_bytes_per_step"])})'
    return (f'<td class="num{css}">{cost["per_step"]:.3g} ({cost["torch_per_step"]:.3g})</td>'
            f'<td class="num{css}">{e(nbytes)}</td>')


def _area_table(document: dict[str, Any]) -> str:
    areas: dict[str, Counter] = defaultdict(Counter)
    for case in document["cases"]:
        areas[case["area"]][case["outcome"]] += 1
    rows = []
    for area in sorted(areas):
        counts = areas[area]
        bad = sum(counts[name] for name in FAILING)
        rows.append(f"<tr><td>{e(area)}</td><td class=num>{sum(counts.values())}"
                    f"</td><td class=num>{counts['passed']}</td><td class=num>{bad or ''}</td>"
                    f"<td class=num>{counts['xfailed'] or ''}</td><td class=num>{counts['unsupported'] or ''}</td>"
                    "</tr>")
    return ("<details><summary>by catalogue area</summary><table><tr><th>area</th><th>cases</th><th>passed</th>"
            "<th>failed</th><th>known deviations</th><th>unsupported</th></tr>" + "".join(rows) + "</table></details>")


def _compiled_lane(document: dict[str, Any]) -> str:
    """What compiling took (--compile): totals, graph breaks per case kind, recompilations, compile failures, and
    every compiled case; "" for an eager run."""
    cases = document.get("cases") or []
    total = compile_report.totals(cases)
    failures = compile_report.compile_failures(cases)
    if total is None and not failures:
        return ""
    env = document.get("environment") or {}
    out = [f"<h2>Compiled lane (--compile {e(env.get('compile') or '?')}"
           + (", --strict-compile" if env.get("strict_compile") else "") + ")</h2>"]
    if total is not None:
        ratio = f" ({total['compile_s'] / total['run_s']:.1f}x the run time)" if total["run_s"] > 0 else ""
        out.append(f"<p>{total['cases']} cases compiled: {total['graphs']} graphs over all ranks "
                   f"({total['cache_hits']} from the cache, {total['cache_misses']} compiled anew); compile "
                   f"{total['compile_s']:.1f} s{e(ratio)}, run {total['run_s']:.1f} s (each case's slowest rank); "
                   f"{total['cases_with_breaks']} cases with graph breaks, {total['recompiles']} recompilations. "
                   "<span class=dim>docs/compile.md says what is generated and what stays an opaque call.</span></p>")
    for kind, found in sorted(compile_report.breaks_by_kind(cases).items()):
        rows = "".join(f"<tr><td>{e(reason)}</td><td><code>{e(where)}</code></td><td class=num>{n_cases}</td>"
                       f"<td class=num>{count}</td><td>{e(detail)}</td></tr>"
                       for reason, detail, where, n_cases, count in found)
        out.append(f"<h3>Graph breaks in {e(kind)} cases</h3><table><tr><th>reason</th><th>where</th><th>cases</th>"
                   f"<th>breaks</th><th>explanation</th></tr>{rows}</table>")
    recompiles: dict[tuple[str, str], int] = defaultdict(int)
    for case in cases:
        for r in (case.get("compile") or {}).get("recompiles") or []:
            recompiles[(r.get("reason", ""), r.get("where", ""))] += int(r.get("count", 1))
    if recompiles:
        rows = "".join(f"<tr><td><code>{e(reason)}</code></td><td><code>{e(where)}</code></td><td class=num>{n}</td>"
                       "</tr>" for (reason, where), n in sorted(recompiles.items(), key=lambda item: -item[1]))
        out.append("<h3>Recompilations (the guard that failed)</h3><table><tr><th>guard</th><th>function</th>"
                   f"<th>recompilations</th></tr>{rows}</table>")
    if failures:
        rows = "".join(f"<tr class=fail><td>{e(first)}</td><td class=num>{len(members)}</td><td><details><summary>"
                       f"{len(members)} cases</summary><ul>"
                       + "".join(f"<li><code>{e(c['id'])}</code></li>" for c in members) + "</ul></details></td></tr>"
                       for first, members in failures)
        out.append("<h3>Compile failed</h3><table><tr><th>the error's first line (and where)</th><th>cases</th>"
                   f"<th>which</th></tr>{rows}</table>")
    compiled = [c for c in cases if compile_report.is_compiled(c)]
    if compiled:
        rows = "".join(
            f"<tr><td><code>{e(c['id'])}</code></td><td>{e(c['outcome'])}</td>"
            f"<td class=num>{sum(c['compile'].get('graphs') or [])}</td>"
            f"<td class=num>{compile_report.graph_breaks(c)}</td>"
            f"<td class=num>{sum(int(r.get('count', 1)) for r in c['compile'].get('recompiles') or [])}</td>"
            f"<td class=num>{max(c['compile'].get('compile_s') or [0.0]):.2f}</td>"
            f"<td class=num>{max(c['compile'].get('run_s') or [0.0]):.2f}</td></tr>" for c in compiled)
        out.append(f"<details><summary>every compiled case ({len(compiled)})</summary><table><tr><th>case</th>"
                   "<th>outcome</th><th>graphs (all ranks)</th><th>graph breaks</th><th>recompilations</th>"
                   f"<th>compile s</th><th>run s</th></tr>{rows}</table></details>")
    return "".join(out)


def _failures(document: dict[str, Any]) -> str:
    groups = failed_cases_by_class(document)
    total = sum(len(members) for _, members in groups)
    out = [f"<h2>Failures ({total} cases, most telling first)</h2>"]
    if not total:
        out.append("<p>None.</p>")
    if document.get("version") == 1:
        out.append("<p class=dim>A version-1 results document: the tolerance's scale is read from its reason where "
                   "it names one; exact checks have no statement there, their note stands in.</p>")
    shown = 0
    rest = []
    for cls, members in groups:
        out.append(f'<h3 class="sev">{e(CLASS_TITLES[cls])}: {len(members)}</h3>')
        for case in members:
            if shown < DETAILED_CASES:
                out.append(case_card(case))
                shown += 1
            else:
                rest.append((cls, case))
    if rest:
        rows = "".join(f'<tr><td><code>{e(c["id"])}</code></td><td>{e(cls)}</td><td>{e(case_headline(c))}</td>'
                       f'<td><code class="cmd">{e(c.get("rerun", ""))}</code></td></tr>' for cls, c in rest)
        out.append(f"<details><summary>{len(rest)} more failed cases</summary><table><tr><th>case</th><th>class"
                   f"</th><th>what failed first</th><th>rerun</th></tr>{rows}</table></details>")
    return "".join(out)


def _what_differs(case: dict[str, Any]) -> str:
    groups, _ = roots_and_knock_ons(case)
    if case.get("failures"):
        return e((failure_text(case["failures"][0]).splitlines() or [""])[0])
    if not groups:
        return ""
    c = groups[0][0]
    if is_exact(c):
        return e(exact_statement(c))
    scaled = scaled_text(c)
    return (f"{e(comparison_label(c))}: {fmt(c['error_ratio'])}x allowed" + (f", {e(scaled)}" if scaled else ""))


def _deviations(document: dict[str, Any]) -> str:
    cases = [c for c in document["cases"] if c["outcome"] in ("xfailed", "xpassed")]
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        by_reason[case.get("xfail_reason") or ""].append(case)
    out = [f"<h2>Known deviations ({len(cases)} cases, {len(by_reason)} reasons)</h2>"]
    if not cases:
        return out[0] + "<p>None.</p>"
    rows = []
    for reason, members in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        gone = [c for c in members if c["outcome"] == "xpassed"]
        status = (f"<b>{len(gone)} passed although marked as a known deviation: update "
                  "harness/known_deviations.toml</b><br>" if gone else "")
        ids = "".join(f"<li><code>{e(c['id'])}</code>{' <b>passed</b>' if c['outcome'] == 'xpassed' else ''}: "
                      f"{_what_differs(c)}</li>" for c in members)
        rows.append(f'<tr class="{"fail" if gone else ""}"><td>{status}{e(deviation_summary(reason))}'
                    f"<details><summary>full reason</summary><p>{e(reason)}</p></details></td>"
                    f"<td class=num>{len(members)}</td><td><details><summary>{len(members)} cases</summary>"
                    f"<ul>{ids}</ul></details></td></tr>")
    out.append("<table><tr><th>known deviation</th><th>cases</th><th>cases and what differs</th></tr>"
               + "".join(rows) + "</table>")
    return "".join(out)


def _unsupported(document: dict[str, Any]) -> str:
    cases = [c for c in document["cases"] if c["outcome"] == "unsupported"]
    out = f"<h2>Declared unsupported ({len(cases)} cases)</h2>"
    if not cases:
        return out + "<p>None.</p>"
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        by_reason[case.get("unsupported") or "no reason given"].append(case)
    concerns = unsupported_features(document["cases"])

    def features(members: list[dict[str, Any]]) -> str:
        texts = Counter(concerns[c["id"]].text() for c in members if c["id"] in concerns)
        return "; ".join(f"{t} ({n})" if len(texts) > 1 else t for t, n in texts.most_common())

    rows = "".join(f"<tr><td>{e(reason)}</td><td>{e(features(members))}</td><td class=num>{len(members)}</td><td>"
                   f"<details><summary>{len(members)} cases</summary><ul>"
                   + "".join(f"<li><code>{e(c['id'])}</code></li>" for c in members) + "</ul></details></td></tr>"
                   for reason, members in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])))
    return (out + "<table><tr><th>the implementation's reason</th><th>features it concerns</th><th>cases</th>"
            "<th>which</th></tr>" + rows + "</table>")


def _passing(document: dict[str, Any]) -> str:
    passing = [c for c in document["cases"] if c["outcome"] == "passed"]
    near = sorted(((case, k) for case in passing for k in case["comparisons"]
                   if not is_exact(k) and ratio_of(k) > NEAR_MISS), key=lambda item: -ratio_of(item[1]))
    out = [f"<h2>Passing cases ({len(passing)}; near misses above {NEAR_MISS:g}x the tolerance: {len(near)})</h2>"]
    if near:
        rows = "".join(f'<tr><td><code>{e(case["id"])}</code></td><td>{e(k["quantity"])}</td><td>{e(k["phase"])}'
                       f'</td><td>{e(where(k))}</td><td class=num>{fmt(k["error_ratio"])}</td>'
                       f'<td>{e(scaled_text(k))}</td></tr>' for case, k in near[:100])
        out.append("<table><tr><th>case</th><th>quantity</th><th>phase</th><th>where</th><th>err / allowed</th>"
                   f"<th>error</th></tr>{rows}</table>")
    by_area: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in passing:
        by_area[case["area"]].append(case)
    for area in sorted(by_area):
        rows = "".join(f'<tr><td><code>{e(c["id"])}</code></td><td class=num>{len(c["comparisons"])}</td>'
                       f'<td class=num>{fmt(case_worst(c, failed_only=False))}</td>'
                       f'{_cost_cells(case_cost(c))}'
                       f'<td class=num>{as_float(c.get("duration_s")):.2f}s</td></tr>' for c in by_area[area])
        out.append(f"<details><summary>{e(area)}: {len(by_area[area])} passed</summary><table><tr><th>case</th>"
                   f"<th>comparisons</th><th>worst err / allowed</th><th>collectives / step (torch's)</th>"
                   f"<th>bytes / step (torch's)</th><th>time</th></tr>{rows}</table></details>")
    return "".join(out)


def _properties(document: dict[str, Any]) -> str:
    properties = document.get("property_tests") or []
    if not properties:
        return ""
    rows = "".join(
        f'<tr class="{"fail" if p["outcome"] == "failed" else ""}"><td><code>{e(p["nodeid"])}</code></td>'
        f'<td>{e(p["outcome"])}</td><td class=num>{e(p["passed_examples"])} / {e(p["examples"])}</td>'
        f'<td>{e(line.split(": ", 2)[-1])}</td><td>{e(", ".join(p["dtypes"]))}</td>'
        f'<td class=num>{"-" if p["worst_passing_ratio"] is None else fmt(p["worst_passing_ratio"])}</td>'
        f'<td><code>{e(p["worst_passing_case"] or "")}</code></td></tr>'
        for p, line in zip(properties, property_lines(document)))
    return (f"<h2>Property tests ({len(properties)}: generated cases, not listed above unless failing)</h2>"
            "<p class=dim>A property test that judged fewer examples than its minimum is not exercised: not a pass "
            "(harness/strategies.py).</p>"
            "<table><tr><th>test</th><th>outcome</th><th>examples passed / run</th><th>what it tried</th>"
            f"<th>dtypes</th><th>worst passing err / allowed</th><th>its case</th></tr>{rows}</table>")


def _skipped(document: dict[str, Any]) -> str:
    skipped = [c for c in document["cases"] if c["outcome"] == "skipped"]
    if not skipped:
        return ""
    rows = "".join(f'<tr><td><code>{e(c["id"])}</code></td><td>{e(c.get("xfail_reason", ""))}</td></tr>'
                   for c in skipped)
    return (f"<h2>Skipped ({len(skipped)})</h2><details><summary>{len(skipped)} cases did not run</summary>"
            f"<table><tr><th>case</th><th>reason</th></tr>{rows}</table></details>")


def _environment(env: dict[str, Any]) -> str:
    keys = ["sut", "sut_description", "kernels", "profile", "case", "torch", "torch_git", "cuda", "device_name",
            "devices", "backend", "backends", "world_sizes", "strict_features", "compile", "strict_compile", "tf32",
            "harness_revision",
            "harness_dirty", "workers", "python", "numpy", "platform", "seed_policy"]
    cells = "".join(f"<div class=k>{e(k)}</div><div>{e(', '.join(map(str, v)) if isinstance(v, list) else v)}</div>"
                    for k in keys if (v := env.get(k)) not in (None, "", []))
    out = f'<h2>Environment</h2><div class="env">{cells}</div>'
    behaviours = env.get("cpu_kernel_behaviours") or []
    if behaviours:
        items = "".join(f"<li>{e(b)}</li>" for b in behaviours)
        out += (f"<details><summary>CPU run: {len(behaviours)} behaviours come from the harness's own kernels, not "
                f"PyTorch's code</summary><ul>{items}</ul></details>")
    return out


def render_html(document: dict[str, Any]) -> str:
    """The report of a results document (see harness.reports.results; version 1 or 2) as one self-contained HTML
    page."""
    env = document.get("environment", {})
    word = verdict_of(document)
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           f"<title>SyncBN conformance {e(word)}: {e(env.get('sut', ''))}</title><style>{CSS}</style></head><body>",
           _verdict_bar(document), "<main>", _outcome_counts(document), _worst_failure(document), _not_run(document),
           _diagnosis(document), _conformance_table(document), _compiled_lane(document), _failures(document),
           _deviations(document), _unsupported(document), _passing(document), _properties(document),
           _skipped(document), _environment(env),
           "</main></body></html>\n"]
    return "".join(out)


def write_html(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    return files.write_atomically(path, render_html(document))
