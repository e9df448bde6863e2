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
from harness.features import (FEATURES, Declared, conformance, declared_region, features_of, record_kind,
                              unsupported_features)
from harness.result import CaseResult, Failure
from harness.spec import ModuleSpec, ModelSpec, OpSpec
from harness.diagnosis import conformance_lines, diagnose, render_findings, run_summary_lines
from harness.verdict import (CLASS_TITLES, case_class, case_headline, exact_statement, failed_cases_by_class,
                             roots_and_knock_ons, run_counts, scaled_text, verdict_of)
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


def test_interleaved_eval_phases_sit_between_the_training_steps_for_knock_ons():
    """With eval between training steps the phase before train1 is eval0, and eval0's is train0: a running_var wrong
    at train0 makes eval0's output a knock-on, and train1's running_var is a knock-on through eval0's; an eval output
    failing on its own at eval1 (its running_var at train1 passed) is a root, not a knock-on of train2."""
    spec = _spec(steps=3, eval_steps=2, interleave_eval=True)
    comparisons = [_cmp("running_var", "train0", 0, 0.02), _cmp("running_var", "eval0", 0, 0.02),
                   _cmp("output", "eval0", 0, 0.5), _cmp("running_var", "train1", 0, 0.0),
                   _cmp("output", "eval1", 0, 0.5), _cmp("running_var", "train2", 0, 0.03)]
    groups, knock_ons = roots_and_knock_ons(_record(spec, comparisons))
    roots = {(c["quantity"], c["phase"]) for group in groups for c in group}
    assert roots == {("running_var", "train0"), ("output", "eval1"), ("running_var", "train2")}, roots
    assert {(k["quantity"], k["phase"]) for k in knock_ons["running_var at train0, rank 0"]} == \
        {("running_var", "eval0"), ("output", "eval0")}


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


def test_eval_gradients_are_knock_ons_of_the_carried_buffers_and_agreement_is_a_root():
    """grad_weight and grad_input at eval are computed from the running statistics carried from training: wrong
    there while the eval output stays within its tolerance, they are knock-ons of running_var, not roots of their
    own. Ranks that disagree on running_var are a defect of their own: the agreement check is a root even when
    running_var (and the output) failed too."""
    spec = _spec(steps=1, eval_steps=1)
    agreement = compare_exact(False, True, quantity="running_var.agreement", phase="train0", rank=1, ranks=(1,),
                              dtype="float32", reason="ranks of a group hold the same running_var")
    comparisons = [_cmp("output", "train0", 0, 0.3), _cmp("running_var", "train0", 0, 0.3),
                   _cmp("running_var", "train0", 1, 0.02), agreement,
                   _cmp("output", "eval0", 0, 0.0), _cmp("grad_weight", "eval0", None, 0.6, ranks=(0, 1)),
                   _cmp("grad_input", "eval0", 1, 0.5)]
    groups, knock_ons = roots_and_knock_ons(_record(spec, comparisons))
    assert [(g[0]["quantity"], g[0]["phase"]) for g in groups] == [("running_var.agreement", "train0"),
                                                                   ("output", "train0")]
    assert {(k["quantity"], k["phase"]) for k in knock_ons["output at train0, rank 0"]} == \
        {("running_var", "train0"), ("grad_weight", "eval0"), ("grad_input", "eval0")}


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


def test_diagnosis_names_what_the_cases_where_a_root_failed_share():
    """running_mean fails in every momentum None case: with 10 failed and 12 passing cases the split cannot be chance
    (every one with momentum None, none without); with 3 and 4 it could, and the line says so."""
    failed = [_failing(_spec(momentum=None, seed=s)) for s in range(10)]
    passed = [_passing(_spec(seed=10 + s, dtype=("float32", "float64", "float16")[s % 3])) for s in range(12)]
    lines = render_findings(diagnose(_document(failed + passed)))
    assert lines[0].startswith("10 failed cases: 10 module")
    assert ("module cases: 10 failed, 12 passed; each failing root against the cases where it was checked and "
            "passed:") in lines
    assert ("  running_mean: failed in 10 of 22 cases where it was checked, at train0; every one with momentum None; "
            "it passed in all 12 cases without") in lines
    assert "  never failed: output" in lines
    assert "known deviations: 0 cases failed as documented" in lines and "declared unsupported: none" in lines
    few = render_findings(diagnose(_document(failed[:3] + passed[:4])))
    assert ("  running_mean: failed in 3 of 7 cases where it was checked, at train0; all 3 have momentum None, none of "
            "the 4 where it passed do (too few cases to rule out chance)") in few


def test_diagnosis_finds_a_pair_and_stays_silent_without_a_pattern():
    # Fails only where both hold: float16 input and channels_last; each alone passes.
    failed = [_failing(_spec(dtype="float16", layout="channels_last", seed=s)) for s in range(6)]
    passed = [_passing(_spec(dtype=dtype, layout=layout, seed=10 + 3 * s + k))
              for s in range(6) for k, (dtype, layout) in enumerate((("float16", "contiguous"),
                                                                     ("float32", "channels_last"),
                                                                     ("float32", "contiguous")))]
    lines = render_findings(diagnose(_document(failed + passed)))
    assert ("  running_mean: failed in 6 of 24 cases where it was checked, at train0; every one with dtype float16 "
            "and layout channels_last; none of the 18 where it passed has both (6 have dtype float16, 6 have layout "
            "channels_last)") in lines
    # No pattern: the same parameters fail and pass.
    failed = [_failing(_spec(seed=1)), _failing(_spec(dtype="float64", seed=2))]
    passed = [_passing(_spec(seed=3)), _passing(_spec(dtype="float64", seed=4))]
    lines = render_findings(diagnose(_document(failed + passed)))
    assert ("  running_mean: failed in 2 of 4 cases where it was checked, at train0; no case parameter sets them apart "
            "from the 2 where it passed") in lines
    assert not any("every one with" in line or "all 2 have" in line for line in lines)


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
    assert ("declared unsupported: 3 cases (momentum=None: 2, concerning momentum None (inferred); only 4-D input: 1, "
            "concerning 5-D input (inferred)); under their other features they count as not judged") in lines
    assert any(line.startswith("yardstick suspect in 1 comparison (0 failed, in 1 case): the single-process "
                               "BatchNorm shares the error") for line in lines)


@pytest.fixture(scope="module")
def gpu_document(h100_document):
    return h100_document


def test_diagnosis_of_the_h100_run(gpu_document):
    """The GPU run: the 8 failed module cases are float16 input with float32 parameters, only grad_weight and
    grad_bias fail, at training phases (one line each); the op failure is batch_norm_backward_reduce with float16
    input, too few to tell from chance. The document keeps no comparisons of passing cases: the lines say so."""
    findings = diagnose(gpu_document)
    assert [f["role"] for f in findings] == ["failed", "kind", "kind", "kind", "deviations", "unsupported",
                                             "properties"]
    lines = render_findings(findings)
    assert lines[0].startswith("11 failed cases: 8 module, 1 op, 2 model")
    assert ("  grad_bias: failed in 8 cases, at train0, train1, train2 (training phases only); against the 145 passing "
            "ones (this document keeps no comparisons of passing cases): every one with dtype float16 with float32 "
            "parameters; it passed in all 145 cases without") in lines
    assert ("  grad_weight: failed in 7 cases, at train0, train1, train2 (training phases only); against the 146 "
            "passing ones (this document keeps no comparisons of passing cases): every one with dtype float16 with "
            "float32 parameters; none of the 145 without it failed, 1 with it passed (1 with more than 65504 elements "
            "per channel)") in lines
    root = next(f for f in findings[1]["children"] if f["role"] == "root")
    assert root["data"]["roots"] == ["grad_bias"] and root["data"]["condition"]["kind"] == "every"
    assert root["data"]["condition"]["chance"] < 1e-3 and len(root["data"]["failed_cases"]) == 8
    op = next(line for line in lines if line.startswith("  sum_dy"))
    assert "failed in 1 case, at batch_norm_backward_reduce" in op and "every one with" not in op
    assert "known deviations: 11 cases failed as documented, under 5 reasons" in lines


def test_summary_of_the_h100_run(gpu_document):
    lines = run_summary_lines(gpu_document)
    assert lines[0].startswith("SyncBN conformance: FAILED: 204 cases (182 passed, 11 failed, 11 known deviations)")
    assert lines.index("Diagnosis:") < lines.index("Conformance by feature (cases that judged the SUT: pass, FAIL, "
                                                   "known deviation, unsupported, not judged):") \
        < lines.index("Failed cases by severity (11):")
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


def test_conformance_table_counts_unsupported_cases_under_the_features_their_declaration_concerns():
    """A case declared unsupported is unsupported under the feature(s) its declaration concerns (inferred: the
    features every case of its reason has and no judged case has) and not judged under its other features; its
    kind's row counts it as unsupported; a skipped case counts nowhere."""
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
    # The momentum=None case is 4-D: under "4-D input" it was not judged, not unsupported.
    assert dict(rows["4-D input"].counts) == {"passing": 1, "failing": 1, "not judged": 1, "known deviation": 1}
    assert rows["4-D input"].status == "failing" and rows["4-D input"].not_judged_for == {"momentum None": 1}
    assert dict(rows["5-D input"].counts) == {"unsupported": 1} and rows["5-D input"].status == "unsupported"
    assert dict(rows["momentum None"].counts) == {"unsupported": 1}
    assert dict(rows["float32 input"].counts) == {"passing": 1, "failing": 1, "known deviation": 1, "not judged": 2}
    assert rows["module cases"].cases == 5 and rows["module cases"].counts["unsupported"] == 2  # skipped: nowhere
    lines = conformance_lines(document)
    assert any(line.startswith("5-D input") and line.endswith("1 cases: 0 pass, 1 unsupported (only 4-D input)")
               for line in lines)
    assert any(line.startswith("4-D input") and line.endswith(
        "1 pass, 1 FAIL, 1 known deviation, 1 not judged (declared unsupported for momentum None: 1)")
        for line in lines)


def test_declared_features_win_over_inference_and_a_reason_over_several_features_is_inferred_per_case():
    """Features the SUT names with its declaration are taken as they are; a reason whose cases share no feature
    that judged cases lack (float16 and bfloat16 under one reason) is inferred per case; a case with no feature
    that the judged ones lack is unsupported only in its kind's row."""
    half = _spec(seed=3, dtype="float16")
    records = [
        _passing(_spec(seed=1)), _passing(_spec(seed=2, spatial=(2, 2, 2))),
        _record(half, unsupported="no half precision", outcome="unsupported"),
        _record(_spec(seed=4, dtype="bfloat16", param_dtype="float32"), unsupported="no half precision",
                outcome="unsupported"),
        _record(_spec(seed=5, spatial=(2, 2, 2)), unsupported="5-D input", outcome="unsupported"),
        _record(_spec(seed=6), unsupported="not today", outcome="unsupported"),
    ]
    records[-2]["unsupported_features"] = ["5-D input", "not a feature"]
    concerns = unsupported_features(_document(records)["cases"])
    assert concerns[half.id] == Declared(("float16 input", "half module"), "inferred")
    assert concerns[records[-2]["id"]] == Declared(("5-D input",), "declared")  # although 5-D cases were judged
    assert concerns[records[-1]["id"]] == Declared((), "unknown")
    rows = {row.feature.name: row for row in conformance(_document(records)["cases"])}
    assert dict(rows["bfloat16 input"].counts) == {"unsupported": 1}
    assert dict(rows["5-D input"].counts) == {"passing": 1, "unsupported": 1}
    assert dict(rows["4-D input"].counts) == {"passing": 1, "not judged": 3}
    assert rows["4-D input"].not_judged_for["feature not identified"] == 1
    assert rows["module cases"].counts["unsupported"] == 4
    # What the property tests avoid: the declared and inferred features, not the kind's row; no inferred one without
    # a judged case of the kind (then every feature of an unsupported case would look unsupported).
    assert declared_region(_document(records)["cases"]) == {"5-D input", "float16 input", "bfloat16 input",
                                                           "half module", "half input, float32 parameters"}
    assert declared_region(_document(records[2:])["cases"]) == {"5-D input"}


def test_op_cases_of_another_sut_are_counted_apart():
    """With --sut other than torch, op cases test torch's kernels: never in the SUT's counts, its conformance table
    or its verdict (a run that judged only them tested nothing of the SUT), but their failures still fail the run."""
    op = OpSpec(op="batch_norm_stats", shard_sizes=(2,), channels=3, spatial=(4,))
    op_passed = case_record(op, CaseResult(op, comparisons=[_cmp("mean", op.op, 0, 0.0)]), outcome="passed",
                            sut="other.py:factory")
    assert op_passed["subject"] == "kernels"
    assert case_record(op, CaseResult(op), outcome="passed", sut="torch")["subject"] == "sut"
    module = _record(_spec(seed=1), unsupported="no", outcome="unsupported")
    document = _document([op_passed, module])
    assert verdict_of(document) == "NO CASES RAN" and run_counts(document) == {"unsupported": 1}
    assert "2-D input" not in {row.feature.name for row in conformance(document["cases"])}
    assert "op cases" not in {row.feature.name for row in conformance(document["cases"])}
    header = run_summary_lines(document)[0]
    assert header.startswith("SyncBN conformance: NO CASES RAN (nothing was tested: 1 case declared unsupported "
                             "(no: 1); 1 op case tested torch's kernels, not the SUT (1 passed))")
    assert "; 1 op case tested torch's kernels, not the SUT (1 passed) · sut x" in header
    with_kernels = json.loads(json.dumps(build_document([op_passed, module], {"sut": "x", "kernels": "k.py"})))
    assert verdict_of(with_kernels) == "PASSED"  # --kernels: the op cases judged the kernels under test
    op_failed = case_record(op, CaseResult(op, comparisons=[_cmp("mean", op.op, 0, 1.0)]), outcome="failed",
                            sut="other.py:factory")
    assert verdict_of(_document([op_failed, _passing(_spec(seed=2))])) == "FAILED"


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
