"""harness.reports.html's structure: the first screen (verdict bar, diagnosis, conformance table), failures by
severity with roots before their folded knock-ons, exact checks as statements, the INCOMPLETE and NO CASES RAN bars,
the later sections, version-1 documents. (Escaping and self-containment of a real run: tests/test_reports.py.)"""
from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from harness.compare import Tolerance, compare_arrays, compare_exact
from harness.result import CaseResult, Failure
from harness.spec import ModuleSpec
from harness.reports.html import render_html
from harness.reports.results import build_document, case_record

ROOT = Path(__file__).resolve().parent.parent
INJECTED = "<script>alert('x')</script>"


class Outline(HTMLParser):
    """The headings (h1-h4) in order, with their text, and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("h1", "h2", "h3", "h4"):
            self._open = tag
            self.headings.append((tag, ""))

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            tag, text = self.headings[-1]
            self.headings[-1] = (tag, text + data)


def outline(text: str) -> Outline:
    page = Outline()
    page.feed(text)
    page.close()
    return page


def h2s(text: str) -> list[str]:
    return [t.split(" (")[0] for tag, t in outline(text).headings if tag == "h2"]


def _cmp(quantity: str, phase: str, rank: int, err: float, *, scale: float = 1.0, atol: float = 1e-3,
         reason: str = "test", n: int = 4):
    expected = np.linspace(1.0, 2.0, n) * scale
    actual = expected.copy()
    actual[0] += err
    return compare_arrays(actual, expected, Tolerance(atol, 0.0, reason, scale), quantity=quantity, phase=phase,
                          rank=rank, ranks=(rank,), dtype="float32")


def _record(spec, comparisons=(), *, outcome=None, failures=(), unsupported="", xfail_reason=""):
    result = CaseResult(spec, comparisons=list(comparisons), failures=list(failures),
                        rerun=f"python -m harness run --case {spec.id}", unsupported=unsupported)
    outcome = outcome or ("passed" if result.passed else "failed")
    return case_record(spec, result, outcome=outcome, xfail_reason=xfail_reason)


def _spec(seed: int, **fields) -> ModuleSpec:
    return ModuleSpec(shard_sizes=(3, 2), channels=4, spatial=(3, 2), seed=seed, steps=2, eval_steps=1, **fields)


def _document(records, env=None, **kwargs) -> dict:
    env = env or {"sut": "torch", "profile": "quick", "torch": "2.x"}
    return json.loads(json.dumps(build_document(records, env, exit_status=1, **kwargs)))


def _running_var_case(seed: int = 1) -> dict:
    return _record(_spec(seed), [_cmp("running_var", "train0", 0, 0.02), _cmp("running_var", "train1", 0, 0.03),
                                 _cmp("output", "eval0", 0, 0.5), _cmp("grad_input", "eval0", 0, 0.4)])


def _mixed_document() -> dict:
    dtype_only = _record(_spec(2), [compare_exact("float16", "float32", quantity="grad_weight.dtype", phase="train0",
                                                  rank=None, ranks=(0, 1), dtype="none",
                                                  reason="parameter gradients keep the parameters' dtype")])
    nan = _record(_spec(3), [_cmp("output", "train0", 0, math.nan)])
    raised = _record(_spec(4), failures=[Failure("raised", f"rank 1 raised {INJECTED}", rank=1, phase="train0")])
    passing = _record(_spec(5), [_cmp("output", "train0", 0, 7e-4)])  # a near miss: 0.7x
    deviation = _record(_spec(6), [_cmp("output", "train0", 0, 0.5)], outcome="xfailed",
                        xfail_reason="every shard empty: the kernel shrinks the <statistics> (https://example)")
    unsupported = _record(ModuleSpec(shard_sizes=(2, 2), channels=3, spatial=(2, 2, 2)), outcome="unsupported",
                          unsupported=f"only 4-D input {INJECTED}")
    suspect = ("16 u x scale 1; yardstick suspect: single-process BatchNorm's error 0.001 is 100x this analytic "
               "bound, so it does not widen it")
    yardstick = _record(_spec(7), [_cmp("running_mean", "train0", 0, 0.05, reason=suspect)])
    env = {"sut": "torch", "profile": "quick", "torch": "2.x",
           "cpu_kernel_behaviours": ["The five ops' arithmetic: harness CPU kernels", f"odd {INJECTED}"]}
    return _document([_running_var_case(), dtype_only, nan, raised, passing, deviation, unsupported, yardstick], env)


def test_first_screen_order():
    text = render_html(_mixed_document())
    page = outline(text)
    assert page.headings[0] == ("h1", "SyncBN conformance: FAILED")
    assert h2s(text) == ["Worst failure", "Diagnosis", "Conformance by feature", "Failures", "Known deviations",
                         "Declared unsupported", "Passing cases", "Environment"]
    bar, diagnosis, table = (text.index('class="verdict'), text.index("<h2>Diagnosis"),
                             text.index("<h2>Conformance by feature"))
    assert bar < diagnosis < table < text.index("<h2>Failures")
    first_screen = text[diagnosis:table]
    assert "4 failed cases: 4 module" not in first_screen  # the yardstick case failed too: 5
    assert "5 failed cases: 5 module" in first_screen
    assert "declared unsupported: 1 case (only 4-D input &lt;script&gt;" in first_screen
    assert "yardstick suspect in 1 comparison (1 failed, in 1 case)" in first_screen
    conformance = text[table:text.index("<h2>Failures")]
    assert ">5-D input</td><td class=num>1</td>" in conformance and "only 4-D input &lt;script&gt;" in conformance
    assert not {"script", "img", "link", "iframe"} & set(page.tags)


def test_failures_in_severity_groups_roots_before_knock_ons():
    text = render_html(_mixed_document())
    groups = [t.split(":")[0] for tag, t in outline(text).headings if tag == "h3"]
    assert groups == ["Rank failures (exceptions, crashes, hangs)", "NaN/inf where a number was expected",
                      "Wrong dtype", "Numeric failures (by scaled error, largest first)"]
    card = text[text.index('id="' + _spec(1).id):]
    card = card[:card.index("</section>")]
    root = card.index("<td>running_var</td><td>train0</td>")
    folded = card.index("<details><summary>3 knock-on failures computed from it</summary>")
    assert root < folded < card.index("<td>output</td><td>eval0</td>") < card.index("</details>")
    assert "max |err| 0.02 = <b>2.0% of the quantity&#x27;s magnitude</b>" in card
    numeric = text[text.index("Numeric failures (by scaled error"):]
    assert numeric.index(_spec(7).id) < numeric.index(_spec(1).id)  # 5% of the magnitude before 2%
    dtype_card = text[text.index('id="' + _spec(2).id):]
    dtype_card = dtype_card[:dtype_card.index("</section>")]
    assert "grad_weight dtype is float16 on ranks 0,1 at train0, expected float32" in dtype_card
    assert "∞" not in dtype_card and "0x" not in dtype_card and "x the allowed" not in dtype_card
    yardstick_card = text[text.index('id="' + _spec(7).id):]
    assert '<span class="flag"' in yardstick_card[:yardstick_card.index("</section>")]
    assert "rank 1 raised &lt;script&gt;" in text


def test_later_sections():
    text = render_html(_mixed_document())
    deviations = text[text.index("<h2>Known deviations"):text.index("<h2>Declared unsupported")]
    assert "every shard empty</td>" not in deviations  # the summary line leads, the full reason is folded
    assert "every shard empty<details><summary>full reason</summary>" in deviations
    assert "the kernel shrinks the &lt;statistics&gt; (https://example)" in deviations
    unsupported = text[text.index("<h2>Declared unsupported"):text.index("<h2>Passing cases")]
    assert "only 4-D input &lt;script&gt;" in unsupported
    passing = text[text.index("<h2>Passing cases"):]
    assert "near misses above 0.5x the tolerance: 1" in passing and _spec(5).id in passing
    environment = text[text.index("<h2>Environment"):]
    assert "CPU run: 2 behaviours come from the harness's own kernels" in environment
    assert "odd &lt;script&gt;" in environment


def test_incomplete_never_reads_as_passed():
    passed = _record(_spec(1), [_cmp("output", "train0", 0, 0.0)])
    incomplete = {"reason": "interrupted", "cases_run": 1, "cases_selected": 5, "not_run": ["case-a", "case-b"]}
    text = render_html(_document([passed], incomplete=incomplete))
    title = outline(text).headings[0]
    assert title == ("h1", "SyncBN conformance: INCOMPLETE: 1 of 5 selected tests ran (interrupted)")
    assert "PASSED" not in text
    assert '<div class="verdict incomplete">' in text and "<code>case-b</code>" in text
    assert text.index("cases did not run") < text.index("<h2>Diagnosis")
    failed = _record(_spec(2), [_cmp("output", "train0", 0, 0.5)])
    text = render_html(_document([passed, failed], incomplete=incomplete))  # a failure is the stronger verdict
    assert outline(text).headings[0] == ("h1", "SyncBN conformance: FAILED (incomplete: 1 of 5 selected tests ran "
                                               "(interrupted))")
    assert '<div class="verdict fail">' in text and "<code>case-b</code>" in text


def test_no_cases_ran():
    text = render_html(_document([]))
    assert outline(text).headings[0] == ("h1", "SyncBN conformance: NO CASES RAN (nothing was tested: no case was "
                                               "selected)")
    assert '<div class="verdict fail">' in text  # a run that tested nothing is not green
    assert "<p>No case ran.</p>" in text


def test_failures_worst_first_and_near_misses():
    """(Moved from tests/test_reports.py, now by severity group.) NaN before numeric, heat maps per failed case."""
    records = [_record(_spec(10, tags=("shards",)), [_cmp("output", "train0", 1, 5e-3)]),  # 5x
               _record(_spec(11, tags=("eps",)), [_cmp("output", "train0", 0, 0.5), _cmp("output", "train0", 1,
                                                                                           math.nan)]),
               _record(_spec(12, tags=("eps",)), [_cmp("output", "train0", 0, 7e-4)])]
    text = render_html(_document(records))
    failures = text[text.index("<h2>Failures"):text.index("<h2>Known deviations")]
    assert failures.index(_spec(11).id) < failures.index(_spec(10).id)
    assert text.count('class="heat"') == 2 and text.count('class="hist"') == 2
    assert render_html(_document(records)) == text  # deterministic


def test_version_1_document_renders():
    """An older results document: failures as strings, no exact / statement / item / knock_on_of / scale / status."""
    comparison = {"quantity": "num_batches_tracked", "phase": "train1", "rank": 0, "ranks": [0], "passed": False,
                  "dtype": "int64", "shape": [], "total": 1, "mismatched": 1, "max_abs_err": "inf",
                  "max_rel_err": "inf", "error_ratio": "inf", "note": "actual 1, expected 2", "worst": None,
                  "tolerance": {"atol": 0.0, "rtol": 0.0, "reason": "a counter"}, "channel_ratio": [],
                  "ratio_histogram": []}
    numeric = {**comparison, "quantity": "running_var", "phase": "train0", "shape": [4], "total": 4,
               "max_abs_err": 0.02, "error_ratio": 20.0, "note": "", "dtype": "float32",
               "tolerance": {"atol": 1e-3, "rtol": 0.0, "reason": "max(16 u x scale 1, 8 x error 0)"}}
    params = _spec(1).to_dict()
    case = {"id": "old-case", "level": "module", "area": "shards", "tags": ["shards"], "params": params,
            "device": "cuda", "backend": "nccl", "world_size": 2, "outcome": "failed", "xfail_reason": "",
            "harness_passed": False, "comparisons": [comparison, numeric], "duration_s": 0.1, "rerun": "r",
            "failures": ["rank 1 crashed (exit code -6)"]}
    document = {"schema": "syncbn-harness/results", "version": 1, "created": "then", "exit_status": 1,
                "environment": {"sut": "torch"}, "summary": {}, "cases": [case], "property_tests": []}
    text = render_html(document)
    assert outline(text).headings[0] == ("h1", "SyncBN conformance: FAILED")
    assert "num_batches_tracked at train1, rank 0: actual 1, expected 2" in text
    assert "2.0% of the quantity&#x27;s magnitude" in text  # the scale read from the reason
    assert [t.split(":")[0] for tag, t in outline(text).headings if tag == "h3"] == \
        ["Rank failures (exceptions, crashes, hangs)"]


def test_h100_run_first_screen(h100_document):
    text = render_html(h100_document)
    assert outline(text).headings[0] == ("h1", "SyncBN conformance: FAILED")
    first = text[text.index("<h2>Diagnosis"):text.index("<h2>Conformance by feature")]
    assert "8 of 8 failed module cases have dtype float16 with float32 parameters; 0 of 145 passing" in first
    assert h2s(text)[:4] == ["Worst failure", "Diagnosis", "Conformance by feature", "Failures"]
    assert [t.split(":")[0] for tag, t in outline(text).headings if tag == "h3"] == \
        ["Numeric failures (by scaled error, largest first)"]


def test_first_screen_shows_the_worst_root_failure_with_its_numbers_and_rerun_command():
    """Right under the counts, before the diagnosis: the most severe failed case (harness.verdict's order), its root
    with what, where, by how much and against which tolerance, and the command that reruns it."""
    mild = _record(_spec(1), [_cmp("output", "train0", 0, 0.002)])
    worst = _record(_spec(2), [_cmp("running_var", "train0", 1, 0.9), _cmp("output", "eval0", 1, 0.5)])
    text = render_html(_document([mild, worst, _record(_spec(3), [_cmp("output", "train0", 0, 0.0)])]))
    assert h2s(text)[:2] == ["Worst failure", "Diagnosis"]
    section = text[text.index('<section class="worst">'):text.index("<h2>Diagnosis")]
    assert _spec(2).id in section and "running_var at train0, rank 1" in section
    assert "the allowed error" in section and "allowed (float32): |err| &lt;= 0.001" in section
    assert f"rerun: <code class=\"cmd\">python -m harness run --case {_spec(2).id}</code>" in section
    assert '<section class="worst">' not in render_html(_document([mild.copy() | {"outcome": "passed",
                                                                                   "comparisons": []}]))


def test_a_report_of_many_failures_stays_small_and_narrow():
    """Sixty failed cases: the cards (plots, tables) are for the first few, every case is still listed with its
    headline and rerun line, the page stays a few hundred kB, and long case ids wrap instead of widening it."""
    records = [_running_var_case(seed) for seed in range(60)]
    text = render_html(_document(records))
    assert len(text) < 400_000, len(text)
    assert text.count('<section class="case"') == 12 and all(r["id"] in text for r in records)
    assert "td code,li code,.worst code{word-break:break-all}" in text
