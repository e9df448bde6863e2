"""The pieces of the HTML report that show one case: the escaping and number formats every part uses, the root-cause
table, the heat map and histogram (inline SVG), the case card with its folded knock-ons and rerun command.
reports/html.py assembles the page from them."""
from __future__ import annotations

import html
import math
from collections import defaultdict
from typing import Any, Iterable

from harness.collectives import describe, describe_sequence
from harness.compile_report import case_line
from harness.verdict import (case_headline, exact_statement, failure_text, is_exact, is_yardstick_suspect,
                             known_defect_text, roots_and_knock_ons, scaled_text, where)
from harness.verdict import label as comparison_label

from .results import as_float

__all__ = ["e", "fmt", "ratio_of", "where", "case_worst", "ratio_color", "heatmap_svg", "histogram_svg",
           "case_fragment", "case_card", "pre", "GROUPS_PER_CASE", "SHOWN_ROOTS", "MAX_TEXT"]

GROUPS_PER_CASE = 2  # heat map + histogram pairs per failed case (the roots' first)
SHOWN_ROOTS = 8  # root failures listed per case (all of them are in the JSON results)
MAX_TEXT = 6000  # characters of a traceback shown
HISTOGRAM_LABELS = ["<1e-6", "1e-6", "1e-5", "1e-4", "1e-3", "0.01", "0.1", "1", "10", "100", "≥1e3"]
TOLERANCE_BIN = 7  # first bin at or above |err| = allowed (harness.compare.RATIO_HISTOGRAM_EDGES)


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    x = as_float(value) if not isinstance(value, bool) else math.nan
    if math.isnan(x):
        return e(value)
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.3g}"


def ratio_of(record: dict[str, Any]) -> float:
    r = as_float(record["error_ratio"])
    return r if not math.isnan(r) else math.inf



def case_worst(case: dict[str, Any], *, failed_only: bool) -> float:
    """The largest error / allowed of the case's numeric comparisons (equality checks left out)."""
    ratios = [ratio_of(c) for c in case["comparisons"] if not (failed_only and c["passed"]) and not is_exact(c)]
    return max(ratios, default=0.0)


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
                         f'{fmt(ratio)}x allowed</title></rect>')
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
    text = f"{fmt(tol.get('atol'))}" + (f" + {fmt(tol.get('rtol'))}·|expected|" if as_float(tol.get("rtol"))
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
    head = f'<tr class="{css}"><td>{e(name)}</td><td>{e(c["phase"])}</td><td>{e(where(c))}</td>'
    if is_exact(c):
        reason = (c.get("tolerance") or {}).get("reason", "")
        return (head + f'<td colspan="{_COLUMNS - 3}" class="stmt">{e(exact_statement(c))} '
                f'<span class=dim>({e(reason)})</span></td></tr>')
    total = c.get("total") or 0
    pct = 100 * (c.get("mismatched") or 0) / total if total else 0.0
    scaled = scaled_text(c)
    error = f"max |err| {fmt(c.get('max_abs_err'))}" + (f" = <b>{e(scaled)}</b>" if scaled else "")
    note = f"<br><i>{e(c['note'])}</i>" if c.get("note") else ""
    return (head + f"<td>{error}</td><td class=num>{fmt(c.get('error_ratio'))}x</td>"
            f"<td class=num>{e(c.get('mismatched'))} / {e(total)} ({pct:.1f}%)</td><td>{_allowed(c)}</td>"
            f"<td>{_worst_text(c)}{note}</td></tr>")


def _compact(comparisons: Iterable[dict[str, Any]]) -> str:
    by_phase: dict[str, list[str]] = defaultdict(list)
    for c in comparisons:
        by_phase[c["phase"]].append(where(c))
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


def pre(text: str) -> str:
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


def _failing_phase(case: dict[str, Any]) -> str:
    """The phase a failed case went wrong at: its collective mismatch's, else its worst root's, else ""."""
    for failure in case.get("failures") or []:
        if isinstance(failure, dict) and failure.get("phase"):
            return str(failure["phase"])
    groups, _ = roots_and_knock_ons(case)
    return str(groups[0][0]["phase"]) if groups else ""


def _collectives(case: dict[str, Any]) -> str:
    """What each rank issued at the failing phase (the collective audit's log), and the collective a rank was
    waiting in when the case was stopped; the case's communication per training step against torch's."""
    record = case.get("collectives") or {}
    logs, inside = record.get("log") or {}, record.get("inside") or {}
    phase = _failing_phase(case)
    rows = []
    for rank in sorted(set(logs) | set(inside), key=int):
        entries = [x for x in logs.get(rank) or [] if not phase or x.get("phase") == phase]
        issued = describe_sequence(entries) if rank in logs else "(did not return its log)"
        waiting = describe(inside[rank]) if rank in inside else ""
        rows.append(f"<tr><td class=num>{e(rank)}</td><td>{e(issued)}</td><td>{e(waiting)}</td></tr>")
    cost = ""
    if record.get("per_step") is not None and record.get("torch_per_step") is not None:
        cost = (f"<p class=dim>per training step and rank: {fmt(record['per_step'])} collectives, "
                f"{fmt(record.get('bytes_per_step'))} bytes (torch's SyncBatchNorm: {fmt(record['torch_per_step'])},"
                f" {fmt(record.get('torch_bytes_per_step'))} bytes)</p>")
    if not rows:
        return cost
    where = f" at {e(phase)}" if phase else ""
    about_them = any(str(c.get("quantity", "")).startswith("collectives.") and not c.get("passed")
                     for c in case.get("comparisons") or []) or any(
        isinstance(f, dict) and f.get("kind") == "collectives" for f in case.get("failures") or [])
    opened = " open" if about_them else ""
    return (f"<details class=collectives{opened}><summary>collectives the ranks issued{where} (the collective "
            f"audit)</summary><table><tr><th>rank</th><th>issued{where}</th><th>waiting in when stopped</th></tr>"
            f"{''.join(rows)}</table>{cost}</details>")


def case_fragment(case: dict[str, Any]) -> str:
    """One failed case in full: parameters, rank failures, root causes with their knock-ons folded, the collectives
    of the failing phase, heat maps, histograms, rerun."""
    parts = [_params(case)]
    if known_defect_text(case):  # the failure matches the signature of another SUT's (torch's) known defect
        parts.append(f'<p class="defect"><span class="flag">known {e(case["known_defect"].get("sut"))} defect?</span> '
                     f"{e(known_defect_text(case))}</p>")
    if case.get("unsupported"):
        parts.append(f"<p>declared unsupported by the implementation: {e(case['unsupported'])}</p>")
    if case.get("failures"):
        parts.append("<div class=other><b>rank failures and other failures</b>"
                     + "".join(pre(failure_text(f)) for f in case["failures"]) + "</div>")
    if isinstance(case.get("compile"), dict):
        parts.append(f"<p class=dim>compiled: {e(case_line(case['compile']))}</p>")
    parts.append(_root_table(case))
    parts.append(_collectives(case))
    if not case.get("comparisons") and not case.get("failures") and not case.get("unsupported"):
        parts.append("<p>nothing was compared: a case that compares nothing fails</p>")
    parts.append(_plots(case))
    if case.get("rerun"):
        parts.append(f'<div class="rerun">rerun: <code class="cmd">{e(case["rerun"])}</code></div>')
    return "".join(parts)


def case_card(case: dict[str, Any]) -> str:
    badge = case["outcome"]
    return (f'<section class="case" id="{e(case["id"])}"><h4><span class="badge {e(badge)}">{e(badge)}</span> '
            f'<code>{e(case["id"])}</code></h4><div class="headline">{e(case_headline(case))}</div>'
            f"{case_fragment(case)}</section>")


