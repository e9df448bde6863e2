"""The HTML report of a run: one self-contained file (inline CSS and SVG, no script, no network).

Order: the verdict, counts by feature area and the environment; tolerance failures, worst first (by error /
allowed error), each with the case's parameters, the failed quantities with the worst element, a rank x channel
heat map of max |err| / allowed, a histogram of element errors against the tolerance line and the rerun command;
then failures that are not a numeric comparison (exceptions, crashes, hangs); known deviations; passing cases with
near misses (error above half the tolerance). Every string that comes from a run (and so possibly from the
implementation under test) goes through html.escape.
"""
from __future__ import annotations

import html
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from harness.verdict import failure_text

from .results import as_float

__all__ = ["render_html", "write_html", "case_fragment", "NEAR_MISS"]

NEAR_MISS = 0.5  # a passing comparison above this fraction of its tolerance is called out
DETAILED_CASES = 40  # failed cases shown in full; the rest are listed in a table
GROUPS_PER_CASE = 4
SHOWN_COMPARISONS = 8  # failed comparisons listed per case  # heat map + histogram pairs per failed case
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
    tolerance = comparison["tolerance"]
    return as_float(tolerance["atol"]) == 0 and as_float(tolerance["rtol"]) == 0 and comparison["total"] <= 1 \
        and not comparison["shape"]


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
    items = "".join(f"<span><b>{e(k)}</b>={e(v)}</span>" for k, v in case["params"].items())
    return f'<div class="params">{items}</div>'


def _worst_text(comparison: dict[str, Any]) -> str:
    worst = comparison.get("worst")
    if not worst:
        return ""
    location = worst.get("location") or ""
    return (f"{e(location)}{': ' if location else ''}actual <code>{e(worst.get('actual'))}</code> vs expected "
            f"<code>{e(worst.get('expected'))}</code>")


def _comparison_rows(comparisons: Iterable[dict[str, Any]]) -> str:
    rows = []
    for c in comparisons:
        total = c["total"] or 1
        tol = c["tolerance"]
        allowed = f"{_fmt(tol['atol'])}" + (f" + {_fmt(tol['rtol'])}·|expected|" if as_float(tol["rtol"]) else "")
        rows.append(
            f"<tr class=\"{'fail' if not c['passed'] else ''}\"><td>{e(c['quantity'])}</td><td>{e(c['phase'])}</td>"
            f"<td>{e(_where(c))}</td><td class=num>{_fmt(c['error_ratio'])}</td>"
            f"<td class=num>{c['mismatched']} / {c['total']} ({100 * c['mismatched'] / total:.1f}%)</td>"
            f"<td class=num>{_fmt(c['max_abs_err'])}</td><td class=num>{_fmt(c['max_rel_err'])}</td>"
            f"<td>{allowed} <span class=dim>{e(tol['reason'])}</span></td><td>{_worst_text(c)}"
            f"{'<br><i>' + e(c['note']) + '</i>' if c.get('note') and not _is_exact(c) else ''}</td></tr>")
    return ("<table class=cmp><tr><th>quantity</th><th>phase</th><th>where</th><th>err / allowed</th>"
            "<th>mismatched</th><th>max abs</th><th>max rel</th><th>allowed |err|</th><th>worst element</th></tr>"
            + "".join(rows) + "</table>")


def _pre(text: str) -> str:
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"\n... ({len(text) - MAX_TEXT} more characters)"
    return f"<pre>{e(text)}</pre>"


def case_fragment(case: dict[str, Any]) -> str:
    """One failed case in full: parameters, failed quantities, heat maps, histograms, other failures, rerun."""
    failed = sorted((c for c in case["comparisons"] if not c["passed"]), key=_failed_order)
    parts = [_params(case)]
    if failed:
        parts.append(_comparison_rows(failed[:SHOWN_COMPARISONS]))
        if len(failed) > SHOWN_COMPARISONS:
            parts.append(f"<p class=dim>... and {len(failed) - SHOWN_COMPARISONS} more failed comparisons (all of them"
                         f" are in the JSON results)</p>")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in case["comparisons"]:
        groups[(c["phase"], c["quantity"])].append(c)
    shown = 0
    plots = []
    # One plot per failed quantity first (its worst phase), further phases of the same quantity after.
    seen: set[str] = set()
    distinct = [c for c in failed if not (c["quantity"] in seen or seen.add(c["quantity"]))]
    for c in distinct + failed:
        key = (c["phase"], c["quantity"])
        if key not in groups or shown >= GROUPS_PER_CASE:
            continue
        members = groups.pop(key)
        rows = [("Σ " + ",".join(map(str, m["ranks"])) if m["rank"] is None else f"rank {m['rank']}",
                 m["channel_ratio"]) for m in sorted(members, key=lambda m: (m["rank"] is None, m["rank"] or 0))
                if m["channel_ratio"]]
        counts = [sum(col) for col in zip(*(m["ratio_histogram"] for m in members if m.get("ratio_histogram")))]
        title = f"{c['quantity']} at {c['phase']}"
        heat, hist = heatmap_svg(rows, title), histogram_svg(counts, title)
        if heat or hist:
            shown += 1
            plots.append(f'<div class="group"><div class="gtitle">{e(title)}: |err| / allowed, per rank x channel'
                         f' and per element</div><div class="plots">{heat}{hist}</div></div>')
    if plots:
        parts.append('<div class="groups">' + "".join(plots) + "</div>")
    if case["failures"]:
        parts.append("<div class=other><b>other failures</b>" + "".join(_pre(failure_text(f)) for f in case["failures"])
                     + "</div>")
    if case.get("rerun"):
        parts.append(f'<div class="rerun">rerun: <code class="cmd">{e(case["rerun"])}</code></div>')
    return "".join(parts)


def _case_card(case: dict[str, Any], worst: float) -> str:
    badge = case["outcome"]
    return (f'<section class="case" id="{e(case["id"])}"><h3><span class="badge {e(badge)}">{e(badge)}</span> '
            f'<code>{e(case["id"])}</code> <span class="ratio">'
            f'{f"{_fmt(worst)}x the allowed error" if worst > 0 else "exact check failed"}</span></h3>'
            f"{case_fragment(case)}</section>")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
main{max-width:1320px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:0 0 6px;word-break:break-all}
.verdict{padding:14px 24px;color:#fff}.verdict.pass{background:#1a7f37}.verdict.fail{background:#b42318}
.verdict .sub{opacity:.9;font-size:13px;margin-top:2px;word-break:break-all}
.counts{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0}
.count{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;min-width:90px}
.count b{font-size:20px;display:block}.count.failed b,.count.error b,.count.xpassed b{color:#b42318}
.count.passed b{color:#1a7f37}.count.xfailed b{color:#9a6700}
table{border-collapse:collapse;background:#fff;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 7px;
vertical-align:top;text-align:left}th{background:#f3f5f7;font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}tr.fail td:nth-child(4){color:#b42318;font-weight:600}
.cols{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}.cols>div:last-child{flex:1;min-width:480px}
.case{background:#fff;border:1px solid #d0d7de;border-left:5px solid #b42318;border-radius:6px;padding:10px 14px;
margin:12px 0}.case .ratio{color:#b42318;font-weight:600}
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
    outcomes = Counter(c["outcome"] for c in document["cases"])
    names = [("passed", "passed"), ("failed", "failed"), ("error", "errors"), ("xfailed", "known deviations"),
             ("xpassed", "xpassed (deviation gone)"), ("skipped", "skipped")]
    boxes = [f'<div class="count {key}"><b>{outcomes.get(key, 0)}</b>{label}</div>' for key, label in names
             if outcomes.get(key, 0) or key in ("passed", "failed")]
    summary = document.get("summary", {})
    in_deviations = summary.get("deviation_failed_comparisons", 0)
    boxes.append(f'<div class="count"><b>{summary.get("comparisons", 0)}</b>comparisons, '
                 f'{summary.get("failed_comparisons", 0)} failed'
                 + (f', {in_deviations} in known deviations' if in_deviations else '') + '</div>')
    return '<div class="counts">' + "".join(boxes) + "</div>"


def _area_table(document: dict[str, Any]) -> str:
    areas: dict[str, Counter] = defaultdict(Counter)
    for case in document["cases"]:
        areas[case["area"]][case["outcome"]] += 1
    rows = []
    for area in sorted(areas):
        counts = areas[area]
        bad = counts["failed"] + counts["error"] + counts["xpassed"]
        rows.append(f"<tr class=\"{'fail' if bad else ''}\"><td>{e(area)}</td><td class=num>{sum(counts.values())}"
                    f"</td><td class=num>{counts['passed']}</td><td class=num>{bad or ''}</td>"
                    f"<td class=num>{counts['xfailed'] or ''}</td></tr>")
    return ("<table><tr><th>feature area</th><th>cases</th><th>passed</th><th>failed</th><th>known deviations</th>"
            "</tr>" + "".join(rows) + "</table>")


def _environment_table(env: dict[str, Any]) -> str:
    keys = ["sut", "sut_description", "kernels", "profile", "case", "torch", "torch_git", "cuda", "device_name",
            "devices", "backend", "backends", "world_sizes", "harness_revision", "harness_dirty", "workers", "python",
            "numpy", "platform", "seed_policy"]
    cells = "".join(f"<div class=k>{e(k)}</div><div>{e(', '.join(map(str, v)) if isinstance(v, list) else v)}</div>"
                    for k in keys if (v := env.get(k)) not in (None, "", []))
    return f'<div class="env">{cells}</div>'


def render_html(document: dict[str, Any]) -> str:
    """The report of a results document (see reports.results) as one self-contained HTML page."""
    cases = document["cases"]
    env = document.get("environment", {})
    bad = [c for c in cases if c["outcome"] in ("failed", "error")]
    tolerance_failed = sorted(((c, _case_worst(c, failed_only=True)) for c in bad
                               if any(not k["passed"] for k in c["comparisons"])),
                              key=lambda item: (-item[1], item[0]["id"]))
    other_failed = [c for c in bad if all(k["passed"] for k in c["comparisons"])]
    deviations = [c for c in cases if c["outcome"] in ("xfailed", "xpassed")]
    passing = [c for c in cases if c["outcome"] == "passed"]
    ok = not bad and not any(c["outcome"] == "xpassed" for c in cases) and bool(cases)
    verdict = "PASSED" if ok else ("NO CASES RAN" if not cases else "FAILED")
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           f"<title>SyncBN conformance {verdict}: {e(env.get('sut', ''))}</title><style>{CSS}</style></head><body>",
           f'<div class="verdict {"pass" if ok else "fail"}"><h1>SyncBN conformance: {verdict}</h1>'
           f'<div class="sub">{len(cases)} cases · sut {e(env.get("sut", "?"))} · profile {e(env.get("profile", "?"))}'
           f' · torch {e(env.get("torch", "?"))} · {e(document.get("created", ""))}</div></div><main>']
    out.append(_outcome_counts(document))
    out.append(f'<div class="cols"><div>{_area_table(document)}</div><div>{_environment_table(env)}</div></div>')

    out.append(f"<h2>Tolerance failures ({len(tolerance_failed)} cases, worst first)</h2>")
    if not tolerance_failed:
        out.append("<p>None.</p>")
    for case, worst in tolerance_failed[:DETAILED_CASES]:
        out.append(_case_card(case, worst))
    if len(tolerance_failed) > DETAILED_CASES:
        rows = "".join(f'<tr><td><code>{e(c["id"])}</code></td><td class=num>{_fmt(w)}</td>'
                       f'<td><code class="cmd">{e(c["rerun"])}</code></td></tr>'
                       for c, w in tolerance_failed[DETAILED_CASES:])
        out.append(f"<details><summary>{len(tolerance_failed) - DETAILED_CASES} more failed cases</summary><table>"
                   f"<tr><th>case</th><th>err / allowed</th><th>rerun</th></tr>{rows}</table></details>")

    out.append(f"<h2>Failures without a numeric comparison ({len(other_failed)}: exceptions, crashes, hangs)</h2>")
    if not other_failed:
        out.append("<p>None.</p>")
    for case in other_failed:
        out.append(f'<section class="case" id="{e(case["id"])}"><h3><span class="badge {e(case["outcome"])}">'
                   f'{e(case["outcome"])}</span> <code>{e(case["id"])}</code></h3>{case_fragment(case)}</section>')

    out.append(f"<h2>Known deviations ({len(deviations)})</h2>")
    if deviations:
        rows = []
        for case in deviations:
            failed = sorted((k for k in case["comparisons"] if not k["passed"]), key=_failed_order)
            what = (f"{e(failed[0]['quantity'])} at {e(failed[0]['phase'])}, {e(_where(failed[0]))}: "
                    f"{_fmt(failed[0]['error_ratio'])}x allowed" if failed else
                    e(failure_text(case["failures"][0]).splitlines()[0]) if case["failures"] else "")
            status = ("<b>passed although marked as a known deviation: update cases/known_deviations.toml</b>"
                      if case["outcome"] == "xpassed" else "")
            rows.append(f'<tr class="{"fail" if status else ""}"><td><code>{e(case["id"])}</code></td>'
                        f"<td>{status}{e(case['xfail_reason'])}</td><td>{what}</td></tr>")
        out.append("<table><tr><th>case</th><th>reason</th><th>what differs</th></tr>" + "".join(rows) + "</table>")
    else:
        out.append("<p>None.</p>")

    near = sorted(((case, k) for case in passing for k in case["comparisons"] if _ratio(k) > NEAR_MISS),
                  key=lambda item: -_ratio(item[1]))
    out.append(f"<h2>Passing cases ({len(passing)}; near misses above {NEAR_MISS:g}x the tolerance: {len(near)})"
               f"</h2>")
    if near:
        rows = "".join(f'<tr><td><code>{e(case["id"])}</code></td><td>{e(k["quantity"])}</td><td>{e(k["phase"])}'
                       f'</td><td>{e(_where(k))}</td><td class=num>{_fmt(k["error_ratio"])}</td></tr>'
                       for case, k in near[:100])
        out.append("<table><tr><th>case</th><th>quantity</th><th>phase</th><th>where</th><th>err / allowed</th></tr>"
                   f"{rows}</table>")
    by_area: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in passing:
        by_area[case["area"]].append(case)
    for area in sorted(by_area):
        rows = "".join(f'<tr><td><code>{e(c["id"])}</code></td><td class=num>{len(c["comparisons"])}</td>'
                       f'<td class=num>{_fmt(_case_worst(c, failed_only=False))}</td>'
                       f'<td class=num>{as_float(c["duration_s"]):.2f}s</td></tr>' for c in by_area[area])
        out.append(f"<details><summary>{e(area)}: {len(by_area[area])} passed</summary><table><tr><th>case</th>"
                   f"<th>comparisons</th><th>worst err / allowed</th><th>time</th></tr>{rows}</table></details>")
    properties = document.get("property_tests") or []
    if properties:
        rows = "".join(
            f'<tr class="{"fail" if p["outcome"] == "failed" else ""}"><td><code>{e(p["nodeid"])}</code></td>'
            f'<td>{e(p["outcome"])}</td><td class=num>{p["passed_examples"]} / {p["examples"]}</td>'
            f'<td>{e(", ".join(p["dtypes"]))}</td>'
            f'<td class=num>{"-" if p["worst_passing_ratio"] is None else _fmt(p["worst_passing_ratio"])}</td>'
            f'<td><code>{e(p["worst_passing_case"] or "")}</code></td></tr>' for p in properties)
        out.append(f"<h2>Property tests ({len(properties)}: generated cases, not listed above unless failing)</h2>"
                   "<table><tr><th>test</th><th>outcome</th><th>examples passed</th><th>dtypes</th>"
                   f"<th>worst passing err / allowed</th><th>its case</th></tr>{rows}</table>")
    skipped = [c for c in cases if c["outcome"] == "skipped"]
    if skipped:
        rows = "".join(f'<tr><td><code>{e(c["id"])}</code></td><td>{e(c["xfail_reason"])}</td></tr>' for c in skipped)
        out.append(f"<h2>Skipped ({len(skipped)})</h2><details><summary>{len(skipped)} cases did not run</summary>"
                   f"<table><tr><th>case</th><th>reason</th></tr>{rows}</table></details>")
    out.append("</main></body></html>\n")
    return "".join(out)


def write_html(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(document), encoding="utf-8")
    return path
