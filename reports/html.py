"""The HTML report of a run: one self-contained file (inline CSS and SVG, no script, no network).

The first screen answers "did it pass, what is wrong, what is supported": the verdict bar (PASSED, FAILED,
INCOMPLETE with how many cases ran, NO CASES RAN), the diagnosis (harness.verdict.diagnose: what the failed cases
share that the passing ones do not), the conformance table (harness.features: per feature, cases passing, failing,
failing as a known deviation, declared unsupported). Then the failed cases in severity groups (rank failures,
NaN/inf, dtype, exact checks, numeric by scaled error: harness.verdict), each with its root causes first (an exact
check as its statement, a number as its error in units of the quantity's magnitude and against its tolerance), the
knock-on failures folded under their root, a rank x channel heat map of max |err| / allowed, a histogram of
element errors against the tolerance line and the rerun command; then the known deviations (by reason, the full
reason folded), the cases declared unsupported (by reason), passing cases with near misses (error above half the
tolerance), property tests, skipped cases and the environment (with what a CPU run takes from the harness's own
kernels). Every string that comes from a run (and so possibly from the implementation under test) goes through
html.escape. Version-1 documents (an older run) render too.
"""
from __future__ import annotations

import html
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from harness.features import COLUMNS, conformance
from harness.verdict import (CLASS_TITLES, case_headline, deviation_summary, diagnose, exact_statement,
                             failed_cases_by_class, failure_text, incomplete_text, is_exact, is_yardstick_suspect,
                             roots_and_knock_ons, run_counts, scaled_text, verdict_of)
from harness.verdict import label as comparison_label

from .results import as_float

__all__ = ["render_html", "write_html", "case_fragment", "NEAR_MISS"]

NEAR_MISS = 0.5  # a passing comparison above this fraction of its tolerance is called out
DETAILED_CASES = 40  # failed cases shown in full; the rest are listed in a table
GROUPS_PER_CASE = 4  # heat map + histogram pairs per failed case
SHOWN_ROOTS = 8  # root failures listed per case (all of them are in the JSON results)
MAX_TEXT = 6000  # characters of a traceback shown
HISTOGRAM_LABELS = ["<1e-6", "1e-6", "1e-5", "1e-4", "1e-3", "0.01", "0.1", "1", "10", "100", "≥1e3"]
TOLERANCE_BIN = 7  # first bin at or above |err| = allowed (harness.compare.RATIO_HISTOGRAM_EDGES)


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    x = as_float(value) if not isinstance(value, bool) else math.nan
    if math.isnan(x):
        return e(value)
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.3g}"


def _ratio(record: dict[str, Any]) -> float:
    r = as_float(record["error_ratio"])
    return r if not math.isnan(r) else math.inf


def _where(comparison: dict[str, Any]) -> str:
    if comparison["rank"] is not None:
        return f"rank {comparison['rank']}"
    return "sum over ranks " + ",".join(map(str, comparison["ranks"]))


def _is_exact(comparison: dict[str, Any]) -> bool:
    """An equality check (counter, dtype, bit-for-bit agreement): its ratio is 0 or inf, never informative."""
    return is_exact(comparison)


def _case_worst(case: dict[str, Any], *, failed_only: bool) -> float:
    """The largest error / allowed of the case's numeric comparisons (equality checks left out)."""
    ratios = [_ratio(c) for c in case["comparisons"] if not (failed_only and c["passed"]) and not _is_exact(c)]
    return max(ratios, default=0.0)


def _failed_order(comparison: dict[str, Any]) -> tuple[bool, float]:
    """Numeric failures worst first, then the failed equality checks."""
    return (_is_exact(comparison), -_ratio(comparison))


# -- colours and SVG --------------------------------------------------------------------------------------------
def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    return "#%02x%02x%02x" % tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def ratio_color(ratio: float) -> str:
    """Pale green (exact) through yellow (at the tolerance) for passing; orange to dark red (1000x) for failing."""
    if math.isnan(ratio):
        return "#bbbbbb"
    if ratio <= 0:
        return "#eef6ee"
    t = math.log10(ratio)
    if ratio <= 1:
        return _mix((0xee, 0xf6, 0xee), (0xf5, 0xd0, 0x3b), (t + 4) / 4)
    return _mix((0xf0, 0x8a, 0x24), (0x7a, 0x00, 0x00), t / 3)


def heatmap_svg(rows: list[tuple[str, list[float]]], title: str) -> str:
    """Rows (label, per-channel max |err| / allowed) as a grid of coloured cells with a tooltip each."""
    channels = max((len(values) for _, values in rows), default=0)
    if not rows or not channels:
        return ""
    cell = max(6, min(28, 560 // channels))
    left, top, height = 92, 18, 20
    width = max(left + cell * channels + 8, left + 6 * 52)
    total_height = top + height * len(rows) + 34
    parts = [f'<svg class="heat" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
             f'role="img" aria-label="{e(title)}">']
    parts.append(f'<text x="{left}" y="12" class="cap">channel →</text>')
    for i, (label, values) in enumerate(rows):
        y = top + i * height
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="lab">{e(label)}</text>')
        for c, value in enumerate(values):
            ratio = as_float(value)
            parts.append(f'<rect x="{left + c * cell}" y="{y}" width="{cell - 1}" height="{height - 2}" '
                         f'fill="{ratio_color(ratio)}"><title>{e(label)}, channel {c}: '
                         f'{_fmt(ratio)}x allowed</title></rect>')
    step = max(1, math.ceil(channels / max(1, (cell * channels) // 28)))
    for c in range(0, channels, step):
        parts.append(f'<text x="{left + c * cell + cell / 2:.1f}" y="{top + height * len(rows) + 12}" '
                     f'text-anchor="middle" class="lab">{c}</text>')
    legend_y = top + height * len(rows) + 20
    for k, (ratio, label) in enumerate([(0, "0"), (0.01, "0.01"), (0.5, "0.5"), (1.0001, ">1"), (10, "10"),
                                        (1000, "1e3")]):
        x = left + k * 52
        parts.append(f'<rect x="{x}" y="{legend_y}" width="12" height="10" fill="{ratio_color(ratio)}"/>'
                     f'<text x="{x + 15}" y="{legend_y + 9}" class="lab">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(counts: list[int], title: str) -> str:
    """Element counts per bin of |err| / allowed (log10 bins), bar heights on a log scale, the tolerance line red."""
    if not counts or not sum(counts):
        return ""
    bar, gap, left, top, plot = 30, 4, 40, 16, 90
    width = left + len(counts) * (bar + gap) + 10
    peak = math.log10(1 + max(counts))
    parts = [f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + plot + 34}" '
             f'role="img" aria-label="{e(title)}">',
             f'<text x="{left}" y="11" class="cap">elements by |err| / allowed (log scale)</text>']
    for i, count in enumerate(counts):
        h = plot * math.log10(1 + count) / peak if count else 0
        x = left + i * (bar + gap)
        colour = "#c0392b" if i >= TOLERANCE_BIN else "#7f9cb8"
        parts.append(f'<rect x="{x}" y="{top + plot - h:.1f}" width="{bar}" height="{h:.1f}" fill="{colour}">'
                     f'<title>{HISTOGRAM_LABELS[i] if i < len(HISTOGRAM_LABELS) else i}: {count} elements</title>'
                     f'</rect>')
        if count:
            parts.append(f'<text x="{x + bar / 2}" y="{top + plot - h - 2:.1f}" text-anchor="middle" '
                         f'class="lab">{count}</text>')
        label = HISTOGRAM_LABELS[i] if i < len(HISTOGRAM_LABELS) else str(i)
        parts.append(f'<text x="{x + bar / 2}" y="{top + plot + 12}" text-anchor="middle" class="lab">{e(label)}'
                     f'</text>')
    line_x = left + TOLERANCE_BIN * (bar + gap) - gap / 2
    parts.append(f'<line x1="{line_x}" y1="{top - 4}" x2="{line_x}" y2="{top + plot}" stroke="#c0392b" '
                 f'stroke-width="2" stroke-dasharray="4 2"/>'
                 f'<text x="{line_x + 3}" y="{top + plot + 26}" class="lab tol">tolerance</text></svg>')
    return "".join(parts)


# -- pieces ---------------------------------------------------------------------------------------------------------
def _params(case: dict[str, Any]) -> str:
    items = "".join(f"<span><b>{e(k)}</b>={e(v)}</span>" for k, v in (case.get("params") or {}).items())
    return f'<div class="params">{items}</div>'


def _worst_text(comparison: dict[str, Any]) -> str:
    worst = comparison.get("worst")
    if not worst or not worst.get("index"):
        return ""
    location = worst.get("location") or ""
    return (f"{e(location)}{': ' if location else ''}actual <code>{e(worst.get('actual'))}</code> vs expected "
            f"<code>{e(worst.get('expected'))}</code>")


def _allowed(c: dict[str, Any]) -> str:
    tol = c.get("tolerance") or {}
    text = f"{_fmt(tol.get('atol'))}" + (f" + {_fmt(tol.get('rtol'))}·|expected|" if as_float(tol.get("rtol"))
                                         else "")
    flag = ('<span class="flag" title="the single-process BatchNorm&#x27;s error exceeds the analytic bound: it '
            'shares the error, so it did not widen the tolerance">yardstick suspect</span> '
            if is_yardstick_suspect(c) else "")
    return f"{flag}{text} <span class=dim>{e(tol.get('reason', ''))}</span>"


COMPARISON_HEAD = ("<tr><th>quantity</th><th>phase</th><th>where</th><th>error (of the quantity's magnitude)</th>"
                   "<th>err / allowed</th><th>mismatched</th><th>allowed |err|</th><th>worst element</th></tr>")
_COLUMNS = 8


def _comparison_row(c: dict[str, Any], css: str = "fail") -> str:
    """A failed comparison: an exact check as its statement, a number as its error against its magnitude and its
    tolerance, never an exact check as a ratio."""
    name = c["quantity"] + (f" {c['item']}" if c.get("item") else "")
    head = f'<tr class="{css}"><td>{e(name)}</td><td>{e(c["phase"])}</td><td>{e(_where(c))}</td>'
    if _is_exact(c):
        reason = (c.get("tolerance") or {}).get("reason", "")
        return (head + f'<td colspan="{_COLUMNS - 3}" class="stmt">{e(exact_statement(c))} '
                f'<span class=dim>({e(reason)})</span></td></tr>')
    total = c.get("total") or 0
    pct = 100 * (c.get("mismatched") or 0) / total if total else 0.0
    scaled = scaled_text(c)
    error = f"max |err| {_fmt(c.get('max_abs_err'))}" + (f" = <b>{e(scaled)}</b>" if scaled else "")
    note = f"<br><i>{e(c['note'])}</i>" if c.get("note") else ""
    return (head + f"<td>{error}</td><td class=num>{_fmt(c.get('error_ratio'))}x</td>"
            f"<td class=num>{e(c.get('mismatched'))} / {e(total)} ({pct:.1f}%)</td><td>{_allowed(c)}</td>"
            f"<td>{_worst_text(c)}{note}</td></tr>")


def _compact(comparisons: Iterable[dict[str, Any]]) -> str:
    by_phase: dict[str, list[str]] = defaultdict(list)
    for c in comparisons:
        by_phase[c["phase"]].append(_where(c))
    return "; ".join(f"{phase}: {', '.join(where)}" for phase, where in by_phase.items())


def _root_table(case: dict[str, Any]) -> str:
    """The case's root failures, one row per failing quantity (its worst), where else it failed, and the knock-on
    failures computed from it folded under it."""
    groups, knock_ons = roots_and_knock_ons(case)
    if not groups:
        return ""
    rows = []
    for members in groups[:SHOWN_ROOTS]:
        rows.append(_comparison_row(members[0]))
        if len(members) > 1:
            rows.append(f'<tr class="also"><td colspan="{_COLUMNS}">same quantity also failed at: '
                        f"{e(_compact(members[1:]))}</td></tr>")
        folded = [k for c in members for k in knock_ons.get(comparison_label(c), [])]
        if folded:
            inner = "".join(_comparison_row(k, "knock") for k in folded)
            rows.append(f'<tr class="knock"><td colspan="{_COLUMNS}"><details><summary>{len(folded)} knock-on '
                        f"failure{'s' if len(folded) != 1 else ''} computed from it</summary><table class=cmp>"
                        f"{COMPARISON_HEAD}{inner}</table></details></td></tr>")
    more = (f'<p class=dim>... and {len(groups) - SHOWN_ROOTS} more failing quantities (all of them are in the JSON '
            f'results)</p>' if len(groups) > SHOWN_ROOTS else "")
    return f"<table class=cmp>{COMPARISON_HEAD}{''.join(rows)}</table>{more}"


def _pre(text: str) -> str:
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"\n... ({len(text) - MAX_TEXT} more characters)"
    return f"<pre>{e(text)}</pre>"


def _plots(case: dict[str, Any]) -> str:
    """Heat map and histogram per failed quantity and phase: the roots' first, then their knock-ons'."""
    groups, knock_ons = roots_and_knock_ons(case)
    ordered = [c for members in groups for c in members] + [k for ks in knock_ons.values() for k in ks]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in case.get("comparisons") or []:
        by_key[(c["phase"], c["quantity"])].append(c)
    seen: set[str] = set()
    distinct = [c for c in ordered if not (c["quantity"] in seen or seen.add(c["quantity"]))]
    plots = []
    for c in distinct + ordered:
        key = (c["phase"], c["quantity"])
        if key not in by_key or len(plots) >= GROUPS_PER_CASE:
            continue
        members = by_key.pop(key)
        rows = [("Σ " + ",".join(map(str, m["ranks"])) if m["rank"] is None else f"rank {m['rank']}",
                 m["channel_ratio"]) for m in sorted(members, key=lambda m: (m["rank"] is None, m["rank"] or 0))
                if m.get("channel_ratio")]
        counts = [sum(col) for col in zip(*(m["ratio_histogram"] for m in members if m.get("ratio_histogram")))]
        title = f"{c['quantity']} at {c['phase']}"
        heat, hist = heatmap_svg(rows, title), histogram_svg(counts, title)
        if heat or hist:
            plots.append(f'<div class="group"><div class="gtitle">{e(title)}: |err| / allowed, per rank x channel'
                         f' and per element</div><div class="plots">{heat}{hist}</div></div>')
    return '<div class="groups">' + "".join(plots) + "</div>" if plots else ""


def case_fragment(case: dict[str, Any]) -> str:
    """One failed case in full: parameters, rank failures, root causes with their knock-ons folded, heat maps,
    histograms, rerun."""
    parts = [_params(case)]
    if case.get("unsupported"):
        parts.append(f"<p>declared unsupported by the implementation: {e(case['unsupported'])}</p>")
    if case.get("failures"):
        parts.append("<div class=other><b>rank failures and other failures</b>"
                     + "".join(_pre(failure_text(f)) for f in case["failures"]) + "</div>")
    parts.append(_root_table(case))
    if not case.get("comparisons") and not case.get("failures") and not case.get("unsupported"):
        parts.append("<p>nothing was compared: a case that compares nothing fails</p>")
    parts.append(_plots(case))
    if case.get("rerun"):
        parts.append(f'<div class="rerun">rerun: <code class="cmd">{e(case["rerun"])}</code></div>')
    return "".join(parts)


def _case_card(case: dict[str, Any]) -> str:
    badge = case["outcome"]
    return (f'<section class="case" id="{e(case["id"])}"><h4><span class="badge {e(badge)}">{e(badge)}</span> '
            f'<code>{e(case["id"])}</code></h4><div class="headline">{e(case_headline(case))}</div>'
            f"{case_fragment(case)}</section>")


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
ul.diag li.sub{margin-left:18px;list-style:circle}ul.diag li.level{font-weight:600}
table{border-collapse:collapse;background:#fff;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 7px;
vertical-align:top;text-align:left}th{background:#f3f5f7;font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}
table.conf tr.failing td.failing{color:#b42318;font-weight:600}table.conf tr.unsupported td,
table.conf tr.partly td.unsupported{color:#9a6700}table.conf td.feature{white-space:nowrap}
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
"""


def _outcome_counts(document: dict[str, Any]) -> str:
    outcomes = run_counts(document)
    names = [("passed", "passed"), ("failed", "failed"), ("error", "errors"), ("xfailed", "known deviations"),
             ("xpassed", "xpassed (deviation gone)"), ("unsupported", "declared unsupported"), ("skipped", "skipped")]
    boxes = [f'<div class="count {key}"><b>{outcomes.get(key, 0)}</b>{label}</div>' for key, label in names
             if outcomes.get(key, 0) or key in ("passed", "failed")]
    summary = document.get("summary", {})
    in_deviations = summary.get("deviation_failed_comparisons", 0)
    boxes.append(f'<div class="count"><b>{e(summary.get("comparisons", 0))}</b>comparisons, '
                 f'{e(summary.get("failed_comparisons", 0))} failed'
                 + (f', {e(in_deviations)} in known deviations' if in_deviations else '') + '</div>')
    return '<div class="counts">' + "".join(boxes) + "</div>"


def _verdict_bar(document: dict[str, Any]) -> str:
    word = verdict_of(document)
    env = document.get("environment", {})
    css = {"PASSED": "pass", "FAILED": "fail", "INCOMPLETE": "incomplete"}.get(word, "none")
    counts = run_counts(document)
    title = f"SyncBN conformance: {word}"
    if word == "INCOMPLETE":
        title += f": {incomplete_text(document)}"
        if counts["failed"] or counts["error"]:
            title += f", {counts['failed'] + counts['error']} of them failed"
    where = [f"{len(document.get('cases') or [])} cases", f"sut {env.get('sut', '?')}",
             f"profile {env.get('profile', '?')}", f"torch {env.get('torch', '?')}"]
    if env.get("device_name"):
        where.append(str(env["device_name"]))
    where.append(str(document.get("created", "")))
    return (f'<div class="verdict {css}"><h1>{e(title)}</h1><div class="sub">{e(" · ".join(where))}</div></div>')


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


def _diagnosis(document: dict[str, Any]) -> str:
    items = []
    for line in diagnose(document):
        stripped = line.lstrip(" ")
        css = "sub" if len(line) - len(stripped) >= 2 else ("level" if stripped.split(" ", 1)[0] in
                                                          ("module", "op", "model") else "")
        items.append(f'<li class="{css}">{e(stripped)}</li>' if css else f"<li>{e(stripped)}</li>")
    return '<h2>Diagnosis</h2><ul class="diag">' + "".join(items) + "</ul>"


def _conformance_table(document: dict[str, Any]) -> str:
    rows = conformance(document.get("cases") or [])
    if not rows:
        return "<h2>Conformance by feature</h2><p>No case ran.</p>"
    out = []
    for row in rows:
        c = row.counts
        css = {"failing": "failing", "unsupported": "unsupported", "partly unsupported": "partly"}.get(row.status, "")
        failing_title = ", ".join(row.failing_cases[:20]) + (" ..." if len(row.failing_cases) > 20 else "")
        reasons = "; ".join(f"{r} ({n})" for r, n in row.unsupported_reasons.most_common(3))
        cells = "".join(f'<td class="num {col.replace(" ", "-")}"'
                        + (f' title="{e(failing_title)}"' if col == "failing" and c[col] else "")
                        + f">{c[col] or ''}</td>" for col in COLUMNS)
        out.append(f'<tr class="{css}"><td class="feature" title="{e(row.feature.description)}">'
                   f"{e(row.feature.name)}</td><td class=num>{row.cases}</td>"
                   + cells + f"<td>{e(reasons)}</td></tr>")
    head = ("<tr><th>feature</th><th>cases</th><th>supported, passing</th><th>supported, failing</th>"
            "<th>known deviation</th><th>declared unsupported</th><th>unsupported because</th></tr>")
    return ("<h2>Conformance by feature</h2><p class=dim>A case counts in every feature it has; a known deviation "
            "fails as documented (harness/known_deviations.toml); skipped cases count nowhere.</p>"
            f'<table class="conf">{head}{"".join(out)}</table>' + _area_table(document))


def _area_table(document: dict[str, Any]) -> str:
    areas: dict[str, Counter] = defaultdict(Counter)
    for case in document["cases"]:
        areas[case["area"]][case["outcome"]] += 1
    rows = []
    for area in sorted(areas):
        counts = areas[area]
        bad = counts["failed"] + counts["error"] + counts["xpassed"]
        rows.append(f"<tr><td>{e(area)}</td><td class=num>{sum(counts.values())}"
                    f"</td><td class=num>{counts['passed']}</td><td class=num>{bad or ''}</td>"
                    f"<td class=num>{counts['xfailed'] or ''}</td><td class=num>{counts['unsupported'] or ''}</td>"
                    "</tr>")
    return ("<details><summary>by catalogue area</summary><table><tr><th>area</th><th>cases</th><th>passed</th>"
            "<th>failed</th><th>known deviations</th><th>unsupported</th></tr>" + "".join(rows) + "</table></details>")


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
                out.append(_case_card(case))
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
    if _is_exact(c):
        return e(exact_statement(c))
    scaled = scaled_text(c)
    return (f"{e(comparison_label(c))}: {_fmt(c['error_ratio'])}x allowed" + (f", {e(scaled)}" if scaled else ""))


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
    rows = "".join(f"<tr><td>{e(reason)}</td><td class=num>{len(members)}</td><td><details><summary>"
                   f"{len(members)} cases</summary><ul>"
                   + "".join(f"<li><code>{e(c['id'])}</code></li>" for c in members) + "</ul></details></td></tr>"
                   for reason, members in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])))
    return (out + "<table><tr><th>the implementation's reason</th><th>cases</th><th>which</th></tr>" + rows
            + "</table>")


def _passing(document: dict[str, Any]) -> str:
    passing = [c for c in document["cases"] if c["outcome"] == "passed"]
    near = sorted(((case, k) for case in passing for k in case["comparisons"]
                   if not _is_exact(k) and _ratio(k) > NEAR_MISS), key=lambda item: -_ratio(item[1]))
    out = [f"<h2>Passing cases ({len(passing)}; near misses above {NEAR_MISS:g}x the tolerance: {len(near)})</h2>"]
    if near:
        rows = "".join(f'<tr><td><code>{e(case["id"])}</code></td><td>{e(k["quantity"])}</td><td>{e(k["phase"])}'
                       f'</td><td>{e(_where(k))}</td><td class=num>{_fmt(k["error_ratio"])}</td>'
                       f'<td>{e(scaled_text(k))}</td></tr>' for case, k in near[:100])
        out.append("<table><tr><th>case</th><th>quantity</th><th>phase</th><th>where</th><th>err / allowed</th>"
                   f"<th>error</th></tr>{rows}</table>")
    by_area: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in passing:
        by_area[case["area"]].append(case)
    for area in sorted(by_area):
        rows = "".join(f'<tr><td><code>{e(c["id"])}</code></td><td class=num>{len(c["comparisons"])}</td>'
                       f'<td class=num>{_fmt(_case_worst(c, failed_only=False))}</td>'
                       f'<td class=num>{as_float(c.get("duration_s")):.2f}s</td></tr>' for c in by_area[area])
        out.append(f"<details><summary>{e(area)}: {len(by_area[area])} passed</summary><table><tr><th>case</th>"
                   f"<th>comparisons</th><th>worst err / allowed</th><th>time</th></tr>{rows}</table></details>")
    return "".join(out)


def _properties(document: dict[str, Any]) -> str:
    properties = document.get("property_tests") or []
    if not properties:
        return ""
    rows = "".join(
        f'<tr class="{"fail" if p["outcome"] == "failed" else ""}"><td><code>{e(p["nodeid"])}</code></td>'
        f'<td>{e(p["outcome"])}</td><td class=num>{e(p["passed_examples"])} / {e(p["examples"])}</td>'
        f'<td>{e(", ".join(p["dtypes"]))}</td>'
        f'<td class=num>{"-" if p["worst_passing_ratio"] is None else _fmt(p["worst_passing_ratio"])}</td>'
        f'<td><code>{e(p["worst_passing_case"] or "")}</code></td></tr>' for p in properties)
    return (f"<h2>Property tests ({len(properties)}: generated cases, not listed above unless failing)</h2>"
            "<table><tr><th>test</th><th>outcome</th><th>examples passed</th><th>dtypes</th>"
            f"<th>worst passing err / allowed</th><th>its case</th></tr>{rows}</table>")


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
            "devices", "backend", "backends", "world_sizes", "strict_features", "tf32", "harness_revision",
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
    """The report of a results document (see reports.results; version 1 or 2) as one self-contained HTML page."""
    env = document.get("environment", {})
    word = verdict_of(document)
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           f"<title>SyncBN conformance {e(word)}: {e(env.get('sut', ''))}</title><style>{CSS}</style></head><body>",
           _verdict_bar(document), "<main>", _outcome_counts(document), _not_run(document), _diagnosis(document),
           _conformance_table(document), _failures(document), _deviations(document), _unsupported(document),
           _passing(document), _properties(document), _skipped(document), _environment(env),
           "</main></body></html>\n"]
    return "".join(out)


def write_html(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(document), encoding="utf-8")
    return path
