"""harness.reports.results / harness.reports.html / harness.reports.pytest_reports: the JSON document, the HTML
report of a real run (escaping, self-contained; its structure is tests/test_html.py), xdist merging."""
from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from harness.compare import RATIO_HISTOGRAM_EDGES, Tolerance, compare_arrays, compare_exact
from harness.result import CaseResult
from harness.spec import ModuleSpec
from harness.reports.html import render_html
from harness.reports.results import (SCHEMA, VERSION, ResultsError, as_float, build_document, case_record, jsonable,
                             load_results, save_results)

ROOT = Path(__file__).resolve().parent.parent
CASE = "w2_n3.2_c1_nc_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
INJECTED = "<script>alert('pwned')</script> & <b>bold</b>"
RAISING_SUT = f'''
def factory(num_features, **kwargs):
    raise RuntimeError({INJECTED!r})
'''


class Page(HTMLParser):
    """Tags, attributes, text and the text of <code class="cmd"> elements of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.commands: list[str] = []
        self.headings: list[str] = []
        self.bold: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self._stack.append("cmd" if tag == "code" and ("class", "cmd") in attrs else tag)

    def handle_endtag(self, tag):
        if self._stack:
            self._stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._stack and self._stack[-1] == "cmd":
            self.commands.append(data)
        if self._stack and self._stack[-1] == "b":
            self.bold.append(data)
        if self._stack and self._stack[-1] == "h2":
            self.headings.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def raising_run(tmp_path_factory):
    """`python -m harness run --case CASE` against an SUT whose constructor raises markup."""
    tmp = tmp_path_factory.mktemp("raising")
    sut = tmp / "raising_sut.py"
    sut.write_text(RAISING_SUT)
    report, results = tmp / "report.html", tmp / "results.json"
    done = run_cli("run", "--case", CASE, "--sut", f"{sut}:factory", "--report", str(report), "--json", str(results),
                   "--", "-m", "not property")  # --case alone also runs the hypothesis test
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"HTML report: {report}" in done.stdout
    return report.read_text(), load_results(results), tmp


def test_html_escapes_what_the_sut_says(raising_run):
    text, _, _ = raising_run
    page = parse(text)
    assert "script" not in page.tags and "bold" not in page.bold
    assert any(INJECTED in chunk for chunk in page.text), "the exception text is shown, as text"
    assert "<script" not in text


def test_html_is_self_contained(raising_run):
    text, _, _ = raising_run
    page = parse(text)
    assert not {"script", "link", "img", "iframe", "object"} & set(page.tags)
    for name, value in page.attrs:
        assert not (name in ("src", "href") and value and "//" in value), (name, value)
    assert "url(" not in text and "@import" not in text


def test_results_record_the_failure(raising_run):
    _, document, _ = raising_run
    assert document["schema"] == SCHEMA and document["version"] == VERSION
    (case,) = document["cases"]
    assert case["id"] == CASE and case["outcome"] == "failed" and case["area"] == "shapes"
    assert any(INJECTED in failure["message"] for failure in case["failures"])
    env = document["environment"]
    assert env["profile"] == "default" and env["case"] == CASE and env["world_sizes"] == [2]
    assert env["backends"] == ["gloo"] and env["torch"] and env["harness_revision"]


@pytest.mark.processes
def test_rerun_command_in_the_report_reruns_the_case(raising_run):
    text, _, tmp = raising_run
    (command,) = set(parse(text).commands)
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "harness", "run"] and argv[argv.index("--case") + 1] == CASE
    out = tmp / "rerun.json"
    done = run_cli(*argv[3:], "--json", str(out), "--report", str(tmp / "rerun.html"), "--", "-m", "not property")
    assert done.returncode == 1, done.stdout + done.stderr
    assert [(c["id"], c["nodeid"].split("::")[0]) for c in load_results(out)["cases"]] == \
        [(CASE, "cases/test_catalogue.py")]


def _result(spec: ModuleSpec, errors: dict[int, float]) -> CaseResult:
    """A CaseResult with one output comparison per rank: rank r's channel 1 off by errors[r]."""
    result = CaseResult(spec, rerun=f"python -m harness run --case {spec.id}")
    for rank in range(spec.world_size):
        expected = np.linspace(-1, 1, spec.shard_sizes[rank] * spec.channels).reshape(-1, spec.channels)
        actual = expected.copy()
        actual[0, 1] += errors.get(rank, 0.0)
        result.comparisons.append(compare_arrays(actual, expected, Tolerance(1e-3, 0.0, "test"),
                                                 quantity="output", phase="train0", rank=rank, ranks=(rank,),
                                                 dtype="float32"))
    result.comparisons.append(compare_exact(3, 3, quantity="num_batches_tracked", phase="train0", rank=0,
                                            ranks=(0,), dtype="int64", reason="counter"))
    return result


def _document() -> dict:
    spec_a = ModuleSpec(shard_sizes=(3, 2), channels=4, tags=("shards",))
    spec_b = ModuleSpec(shard_sizes=(3, 2), channels=4, seed=1, tags=("eps",))
    spec_c = ModuleSpec(shard_sizes=(3, 2), channels=4, seed=2, tags=("eps",))
    spec_d = ModuleSpec(shard_sizes=(3, 2), channels=4, seed=3, tags=("groups",))
    records = [
        case_record(spec_a, _result(spec_a, {1: 5e-3}), outcome="failed"),  # 5x
        case_record(spec_b, _result(spec_b, {0: 0.5, 1: math.nan}), outcome="failed"),  # 500x, NaN
        case_record(spec_c, _result(spec_c, {0: 7e-4}), outcome="passed"),  # near miss 0.7
        case_record(spec_d, _result(spec_d, {0: 2e-2}), outcome="xfailed", xfail_reason="known <deviation>"),
    ]
    return build_document(records, {"sut": "x", "profile": "quick"}, exit_status=1)


def test_comparison_histogram_bins():
    comparison = _result(ModuleSpec(shard_sizes=(3, 2), channels=4), {0: 5e-3}).comparisons[0]
    assert len(comparison.ratio_histogram) == len(RATIO_HISTOGRAM_EDGES) + 1
    assert sum(comparison.ratio_histogram) == comparison.total
    assert comparison.ratio_histogram[0] == comparison.total - 1  # exact elements
    assert comparison.ratio_histogram[7] == 1  # 5x the tolerance: [1, 10)


def test_json_round_trip(tmp_path):
    document = _document()
    path = save_results(document, tmp_path / "r.json")
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert load_results(path) == jsonable(document)
    nan_case = next(c for c in load_results(path)["cases"] if c["params"]["seed"] == 1)
    ratio = max(as_float(c["error_ratio"]) for c in nan_case["comparisons"])
    assert math.isinf(ratio)
    assert nan_case["comparisons"][1]["note"].startswith("NaN/inf positions differ")


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"),
                                               ('{"schema": "other", "version": 1}', "schema="),
                                               ('{"schema": "syncbn-harness/results", "version": 99}', "version=99")])
def test_load_rejects_bad_documents(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        load_results(path)


@pytest.mark.processes
def test_xdist_results_are_merged(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "pytest", "cases/test_catalogue.py", "-k", "eps", "--profile",
                           "quick", "-n", "2", "-p", "no:cacheprovider", "-q", "--json-results", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from harness.catalogue import module_cases

    document = load_results(out)
    expected = {c.id for c in module_cases("quick", "eps")}
    assert {c["id"] for c in document["cases"]} == expected
    assert {c["worker"] for c in document["cases"]} == {"gw0", "gw1"}
    assert all(c["outcome"] == "passed" and c["comparisons"] for c in document["cases"])
    assert document["environment"]["workers"] == 2


def test_summary_counts_known_deviation_failures_apart():
    document = _document()
    by_outcome = {outcome: sum(not c["passed"] for case in document["cases"] if case["outcome"] == outcome
                               for c in case["comparisons"]) for outcome in ("failed", "xfailed")}
    assert by_outcome["failed"] > 0 and by_outcome["xfailed"] > 0  # the fixture has both kinds
    summary = document["summary"]
    assert summary["failed_comparisons"] == by_outcome["failed"]
    assert summary["deviation_failed_comparisons"] == by_outcome["xfailed"]
    assert (f'{summary["failed_comparisons"]} failed, {summary["deviation_failed_comparisons"]} in known '
            f'deviations') in render_html(document)


@pytest.mark.processes
def test_property_tests_are_summarised(tmp_path):
    out, html = tmp_path / "results.json", tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "pytest", "cases/test_property.py::test_generated_half_case",
                           "--profile", "quick", "-p", "no:cacheprovider", "-q", "--json-results", str(out),
                           "--html-report", str(html)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = load_results(out)
    assert document["cases"] == []  # passing examples are not cases
    summaries = {p["nodeid"].split("::")[-1]: p for p in document["property_tests"]}
    assert set(summaries) == {"test_generated_half_case"}
    summary = summaries["test_generated_half_case"]
    assert summary["outcome"] == "passed" and summary["examples"] >= 1
    assert summary["passed_examples"] == summary["examples"]
    assert 0 <= as_float(summary["worst_passing_ratio"]) <= 1
    assert set(summary["dtypes"]) <= {"float16", "bfloat16"}
    assert "<h2>Property tests (1:" in html.read_text()
