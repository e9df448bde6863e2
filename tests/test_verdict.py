"""harness.verdict and harness.features on records: knock-ons folded under their root, exact checks as statements,
severity across dtypes, the diagnosis (synthetic documents and the H100 run's results), the conformance table, the
console summary and ``python -m harness report``'s exit codes (harness.reports.summary)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.compare import Tolerance, compare_arrays, compare_exact
from harness.features import FEATURES, conformance, features_of, record_kind
from harness.result import CaseResult, Failure
from harness.spec import ModuleSpec, ModelSpec, OpSpec
from harness.diagnosis import conformance_lines, diagnose, render_findings, run_summary_lines
from harness.verdict import (CLASS_TITLES, case_class, case_headline, exact_statement, failed_cases_by_class,
                             roots_and_knock_ons, scaled_text, verdict_of)
from harness.reports import summary
from harness.reports.results import build_document, case_record, save_results

ROOT = Path(__file__).resolve().parent.parent


def _cmp(quantity: str, phase: str, rank: int | None, err: float, *, scale: float = 1.0, atol: float = 1e-3,
         dtype: str = "float32", reason: str = "test", ranks: tuple[int, ...] | None = None):
    """A comparison of 4 values (magnitude ~scale) whose first element is off by ``err``."""
    expected = np.linspace(1.0, 2.0, 4) * scale
    actual = expected.copy()
    actual[0] += err
    return compare_arrays(actual, expected, Tolerance(atol, 0.0, reason, scale), quantity=quantity, phase=phase,
                          rank=rank, ranks=ranks if ranks is not None else (rank,), dtype=dtype)


def _record(spec, comparisons=(), *, outcome: str | None = None, failures=(), unsupported: str = "",
            xfail_reason: str = "") -> dict:
    result = CaseResult(spec, comparisons=list(comparisons), failures=list(failures),
                        rerun=f"python -m harness run --case {spec.id}", unsupported=unsupported)
    if outcome is None:
        outcome = "passed" if result.passed else "failed"
    return case_record(spec, result, outcome=outcome, xfail_reason=xfail_reason)


def _document(records, **kwargs) -> dict:
    return json.loads(json.dumps(build_document(records, {"sut": "x", "profile": "quick", "torch": "2"}, **kwargs)))


def _spec(**fields) -> ModuleSpec:
    fields.setdefault("shard_sizes", (3, 2))
    fields.setdefault("channels", 4)
    fields.setdefault("spatial", (3, 2))
    return ModuleSpec(**fields)


# -- knock-ons and exact checks --------------------------------------------------------------------------------------
def _running_var_case() -> dict:
    """running_var wrong at train0 (both ranks); running_var at train1 and output / grad_input at eval0 follow."""
    spec = _spec(steps=2, eval_steps=1)
    comparisons = [_cmp("output", "train0", 0, 0.0), _cmp("output", "train0", 1, 0.0),
                   _cmp("running_var", "train0", 0, 0.02), _cmp("running_var", "train0", 1, 0.02),
                   _cmp("running_var", "train1", 0, 0.03), _cmp("output", "train1", 0, 0.0),
                   _cmp("output", "eval0", 0, 0.5), _cmp("grad_input", "eval0", 0, 0.4),
                   compare_exact(2, 2, quantity="num_batches_tracked", phase="train1", rank=0, ranks=(0,),
                                 dtype="int64", reason="a counter")]
    return _record(spec, comparisons)


def test_knock_ons_are_folded_under_their_root():
    case = _running_var_case()
    groups, knock_ons = roots_and_knock_ons(case)
    assert [[(c["quantity"], c["phase"], c["rank"]) for c in g] for g in groups] == \
        [[("running_var", "train0", 0), ("running_var", "train0", 1)]]
    root = "running_var at train0, rank 0"
    assert {(k["quantity"], k["phase"]) for k in knock_ons[root]} == \
        {("running_var", "train1"), ("output", "eval0"), ("grad_input", "eval0")}
    assert set(knock_ons) == {root}
    headline = case_headline(case)
    assert headline.startswith("running_var at train0, rank 0: max |err| 0.02 = 2.0% of the quantity's magnitude")
    assert "3 knock-on failures" in headline
    assert case_class(case) == "numeric"


def test_exact_checks_are_statements_never_ratios():
    spec = _spec(steps=2)
    counter = compare_exact(1, 2, quantity="num_batches_tracked", phase="train1", rank=0, ranks=(0,), dtype="int64",
                            reason="a counter: +1 per training forward")
    dtype = compare_exact("float16", "float32", quantity="grad_weight.dtype", phase="train0", rank=None,
                          ranks=(0, 1), dtype="none", reason="parameter gradients keep the parameters' dtype")
    case = _record(spec, [counter, dtype])
    headline = case_headline(case)
    assert headline.startswith("grad_weight dtype is float16 on ranks 0,1 at train0, expected float32")
    assert "inf" not in headline and "x the allowed" not in headline
    assert case_class(case) == "dtype"
    assert exact_statement(case["comparisons"][0]) == "num_batches_tracked is 1 on rank 0 at train1, expected 2"
    assert scaled_text(case["comparisons"][0]) == ""
    # A version-1 record: no exact flag, no statement; zero tolerance and no shape make it exact, its note speaks.
    old = {"quantity": "num_batches_tracked", "phase": "train1", "rank": 0, "ranks": [0], "passed": False,
           "shape": [], "max_abs_err": "inf", "error_ratio": "inf", "note": "actual 1, expected 2",
           "tolerance": {"atol": 0.0, "rtol": 0.0, "reason": "a counter"}}
    assert exact_statement(old) == "num_batches_tracked at train1, rank 0: actual 1, expected 2"


def test_severity_compares_across_dtypes():
    """A 2% running_var bias in float64 (1e12x its tolerance) ranks after a 30% error in float32 (30x): the order
    is by error in units of the quantity's magnitude. Rank failures, NaN/inf, dtype and exact checks come first."""
    f64 = _record(_spec(dtype="float64", seed=1), [_cmp("running_var", "train0", 0, 0.02, atol=2e-14,
                                                        dtype="float64")])
    f32 = _record(_spec(seed=2), [_cmp("running_var", "train0", 0, 0.3, atol=1e-2)])
    nan = _record(_spec(seed=3), [_cmp("output", "train0", 0, math.nan)])
    dtype = _record(_spec(seed=4), [compare_exact("float16", "float32", quantity="output.dtype", phase="train0",
                                                  rank=0, ranks=(0,), dtype="none", reason="output keeps dtype")])
    counter = _record(_spec(seed=5), [compare_exact(1, 2, quantity="num_batches_tracked", phase="train1", rank=0,
                                                    ranks=(0,), dtype="int64", reason="a counter")])
    raised = _record(_spec(seed=6), failures=[Failure("raised", "rank 1 raised RuntimeError at train0", rank=1)])
    uncompiled = _record(_spec(seed=7), failures=[Failure("compile", "rank 0 could not compile at train0", rank=0)])
    document = _document([f64, f32, nan, dtype, counter, raised, uncompiled])
    order = [(cls, [c["params"]["seed"] for c in members]) for cls, members in failed_cases_by_class(document)]
    assert order == [("compiler", [7]), ("rank failure", [6]), ("NaN/inf", [3]), ("dtype", [4]),
                     ("exact check", [5]), ("numeric", [2, 1])]
    f64_case = next(c for c in document["cases"] if c["params"]["seed"] == 1)
    assert as_ratio(f64_case) > 1e11 and "2.0% of the quantity's magnitude" in case_headline(f64_case)
    assert list(CLASS_TITLES) == [cls for cls, _ in order]


def as_ratio(case: dict) -> float:
    return max(float(c["error_ratio"]) for c in case["comparisons"])


# -- the diagnosis ---------------------------------------------------------------------------------------------------
def _failing(spec):
    return _record(spec, [_cmp("running_mean", "train0", 0, 0.5), _cmp("output", "train0", 0, 0.0)])


def _passing(spec):
    return _record(spec, [_cmp("running_mean", "train0", 0, 0.0), _cmp("output", "train0", 0, 0.0)])


def test_diagnosis_names_what_every_failure_shares():
    failed = [_failing(_spec(momentum=None, seed=s)) for s in range(3)]
    passed = [_passing(_spec(seed=10 + s, dtype=d)) for s, d in enumerate(("float32", "float64", "float16"))]
    passed.append(_passing(_spec(seed=20, momentum=0.5)))
    lines = render_findings(diagnose(_document(failed + passed)))
    assert lines[0].startswith("3 failed cases: 3 module")
    assert "module cases: 3 failed, 4 passed" in lines
    assert "  3 of 3 failed module cases have momentum None; 0 of 4 passing module cases do" in lines
    assert any(line.startswith("  failed quantities (all roots, no knock-ons): running_mean in 3 of 3 cases; at train0")
               for line in lines)
    assert any(line.startswith("  never failed in these cases: output") for line in lines)
    assert "known deviations: 0 cases failed as documented" in lines
    assert "declared unsupported: none" in lines


def test_diagnosis_finds_a_pair_and_stays_silent_without_a_pattern():
    # Fails only where both hold: float16 input and channels_last; each alone also passes.
    failed = [_failing(_spec(dtype="float16", layout="channels_last", seed=s)) for s in range(2)]
    passed = [_passing(_spec(dtype="float16", seed=5)), _passing(_spec(layout="channels_last", seed=6)),
              _passing(_spec(seed=7))]
    lines = render_findings(diagnose(_document(failed + passed)))
    assert ("  2 of 2 failed module cases have dtype float16 and layout channels_last; 0 of 3 passing module cases "
            "have both (1 has dtype float16, 1 has layout channels_last)") in lines
    # No pattern: the same parameters fail and pass.
    failed = [_failing(_spec(seed=1)), _failing(_spec(dtype="float64", seed=2))]
    passed = [_passing(_spec(seed=3)), _passing(_spec(dtype="float64", seed=4))]
    lines = render_findings(diagnose(_document(failed + passed)))
    assert "  the failed module cases share no case parameter that passing ones lack" in lines
    assert not any("0 of 2 passing" in line for line in lines)


def test_diagnosis_counts_deviations_unsupported_and_suspect_yardsticks():
    suspect = "16 u x scale 1; yardstick suspect: single-process BatchNorm's error 1e-3 is 100x this analytic bound"
    records = [
        _record(_spec(seed=1), [_cmp("running_var", "train0", 0, 0.0, reason=suspect)]),
        _record(_spec(seed=2), [_cmp("running_var", "train0", 0, 0.5)], outcome="xfailed",
                xfail_reason="every shard empty: the gather kernel shrinks the statistics (https://x)"),
        _record(_spec(seed=3, spatial=(2, 2, 2)), unsupported="only 4-D input", outcome="unsupported"),
        _record(_spec(seed=4, momentum=None), unsupported="momentum=None", outcome="unsupported"),
        _record(_spec(seed=5, momentum=None, spatial=(1, 1, 1)), unsupported="momentum=None", outcome="unsupported"),
    ]
    lines = render_findings(diagnose(_document(records)))
    assert "no case failed" in lines
    assert "known deviations: 1 case failed as documented, under 1 reason" in lines
    assert "declared unsupported: 3 cases (momentum=None: 2; only 4-D input: 1)" in lines
    assert any(line.startswith("yardstick suspect in 1 comparison (0 failed, in 1 case): the single-process "
                               "BatchNorm shares the error") for line in lines)


@pytest.fixture(scope="module")
def gpu_document(h100_document):
    return h100_document


def test_diagnosis_of_the_h100_run(gpu_document):
    """The GPU run: the 8 failed module cases are float16 input with float32 parameters, only grad_weight and
    grad_bias fail, at training phases; the model failures are the float32 model cases; the op failure is
    batch_norm_backward_reduce with float16 input."""
    findings = diagnose(gpu_document)
    assert [f["role"] for f in findings] == ["failed", "kind", "kind", "kind", "deviations", "unsupported"]
    lines = render_findings(findings)
    assert lines[0].startswith("11 failed cases: 8 module, 1 op, 2 model")
    assert ("  8 of 8 failed module cases have dtype float16 with float32 parameters; 0 of 145 passing module cases "
            "do") in lines
    module = next(line for line in lines if line.startswith("  failed quantities") and "grad_bias" in line)
    assert module.startswith("  failed quantities (all roots, no knock-ons): grad_bias in 8 of 8 cases; grad_weight in "
                             "7 of 8 cases; at train0, train1, train2 (training phases only")
    assert "  2 of 2 failed model cases have dtype float32; so do 2 of 3 passing model cases" in lines
    assert ("  1 of 1 failed op case has op batch_norm_backward_reduce and dtype float16; 0 of 34 passing op cases "
            "have both (6 have op batch_norm_backward_reduce, 4 have dtype float16)") in lines
    assert "known deviations: 11 cases failed as documented, under 5 reasons" in lines


def test_summary_of_the_h100_run(gpu_document):
    lines = run_summary_lines(gpu_document)
    assert lines[0].startswith("SyncBN conformance: FAILED: 204 cases (182 passed, 11 failed, 11 known deviations)")
    assert lines.index("Diagnosis:") < lines.index("Conformance by feature (cases: pass, FAIL, known deviation, "
                                                   "unsupported):") < lines.index("Failed cases by severity (11):")
    conformance_line = next(line for line in lines if line.strip().startswith("half input, float32 parameters"))
    assert conformance_line.endswith("  17 cases: 5 pass, 8 FAIL, 4 known deviation")
    assert sum(line.startswith("      rerun: ") for line in lines) == 11
    assert len(run_summary_lines(gpu_document, shown_cases=3)) == len(lines) - 2 * 8 + 1  # "... and 8 more"


# -- features and the conformance table ------------------------------------------------------------------------------
def test_features_from_params():
    """A record names its kind ("kind"; "level" before version 3) and the features are those of that kind: an op
    case has no world size, a model case no input layout."""
    assert record_kind({"kind": "model"}) == "model" and record_kind({"level": "op"}) == "op"
    op = OpSpec(op="batch_norm_stats", shard_sizes=(2,), channels=3, spatial=(4,)).to_dict()
    assert "world size 1" not in features_of(op, "op") and "3-D input" in features_of(op, "op")
    assert "op cases" in features_of(op, "op") and "module cases" not in features_of(op, "op")
    model = ModelSpec(shard_sizes=(2, 2, 2), momentum=None).to_dict()
    assert set(features_of(model, "model")) == {"float32 input", "momentum None", "world size >= 3", "model cases"}
    spec = _spec(shard_sizes=(3, 0, 2), dtype="float16", param_dtype="float32", layout="channels_last",
                 momentum=None, eps=0.5, loc=50.0, track_running_stats=False, eval_steps=1)
    assert set(features_of(spec.to_dict())) == {
        "4-D input", "float16 input", "half input, float32 parameters", "channels_last", "momentum None",
        "no running statistics", "eval without running statistics", "empty shards", "uneven shards",
        "world size >= 3", "offset data", "large eps", "module cases"}
    big = _spec(shard_sizes=(4, 4), spatial=(128, 128), dtype="float16")
    assert {"half module", "more than 65504 elements per channel"} <= set(features_of(big.to_dict()))
    ragged = ModuleSpec(shard_sizes=(2, 2), channels=3, rank_spatial=((3, 2), (5, 4)))
    assert "ranks with different spatial sizes" in features_of(ragged.to_dict())
    assert len({f.name for f in FEATURES}) == len(FEATURES)
    assert features_of({"garbage": 1}) == ["module cases"]  # a foreign record has no feature, and raises nothing


def test_conformance_table_counts_unsupported_cases():
    records = [
        _passing(_spec(seed=1)),
        _failing(_spec(seed=2, shard_sizes=(4, 1))),
        _record(_spec(seed=3, spatial=(2, 2, 2)), unsupported="only 4-D input", outcome="unsupported"),
        _record(_spec(seed=4, momentum=None), unsupported="momentum=None", outcome="unsupported"),
        _record(_spec(seed=5), [_cmp("output", "train0", 0, 0.5)], outcome="xfailed", xfail_reason="known"),
        _record(_spec(seed=6), [], outcome="skipped"),
    ]
    document = _document(records)
    rows = {row.feature.name: row for row in conformance(document["cases"])}
    assert dict(rows["4-D input"].counts) == {"passing": 1, "failing": 1, "unsupported": 1, "known deviation": 1}
    assert rows["4-D input"].status == "failing"
    assert dict(rows["5-D input"].counts) == {"unsupported": 1} and rows["5-D input"].status == "unsupported"
    assert rows["momentum None"].unsupported_reasons == {"momentum=None": 1}
    assert rows["module cases"].cases == 5  # the skipped case counts nowhere
    lines = conformance_lines(document)
    assert any(line.startswith("5-D input") and line.endswith("1 cases: 0 pass, 1 unsupported (only 4-D input)")
               for line in lines)
    assert any(line.startswith("4-D input") and "1 pass, 1 FAIL, 1 known deviation, 1 unsupported" in line
               for line in lines)


# -- the verdict and `python -m harness report` -----------------------------------------------------------------------
def test_verdict_words():
    passed = _passing(_spec(seed=1))
    assert verdict_of(_document([passed])) == "PASSED"
    assert verdict_of(_document([passed, _failing(_spec(seed=2))])) == "FAILED"
    incomplete = {"reason": "interrupted", "cases_run": 1, "cases_selected": 5, "not_run": ["a", "b"]}
    assert verdict_of(_document([passed], incomplete=incomplete)) == "INCOMPLETE"
    assert verdict_of(_document([])) == "NO CASES RAN"
    assert verdict_of(_document([_record(_spec(seed=3), unsupported="no", outcome="unsupported")])) == "NO CASES RAN"
    gone = _record(_spec(seed=4), [_cmp("output", "train0", 0, 0.0)], outcome="xpassed", xfail_reason="known")
    assert verdict_of(_document([passed, gone])) == "FAILED"


def _report(tmp_path, document, capsys) -> tuple[int, str]:
    path = save_results(document, tmp_path / "results.json")
    parser = argparse.ArgumentParser()
    summary.add_arguments(parser)
    html = tmp_path / "report.html"
    code = summary.main(parser.parse_args(["--results-in", str(path), "--report", str(html)]))
    assert html.exists() and "<h2>Diagnosis</h2>" in html.read_text()
    return code, capsys.readouterr().out


def test_report_command_exit_codes(tmp_path, capsys):
    passed = _passing(_spec(seed=1))
    code, out = _report(tmp_path, _document([passed]), capsys)
    assert code == 0 and out.startswith("SyncBN conformance: PASSED: 1 case (1 passed)")
    code, out = _report(tmp_path, _document([passed, _running_var_case()]), capsys)
    assert code == 1 and "Failed cases by severity (1):" in out
    assert "  Numeric failures (by scaled error, largest first): 1" in out and "      rerun: python -m harness" in out
    incomplete = {"reason": "interrupted", "cases_run": 1, "cases_selected": 5, "not_run": ["a", "b"]}
    code, out = _report(tmp_path, _document([passed], incomplete=incomplete), capsys)
    assert code == 3 and out.startswith("SyncBN conformance: INCOMPLETE, 1 of 5 selected tests ran (interrupted)")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    parser = argparse.ArgumentParser()
    summary.add_arguments(parser)
    assert summary.main(parser.parse_args(["--results-in", str(bad)])) == 2
