"""The compiled lane on the controller side (no process): the case's compile record merged from its ranks', the
"compile failed" outcome, --strict-compile, the graph-break rows of the conformance table, the diagnosis, the
console summary, the HTML section, known deviations scoped to a compile lane, and the rank side's readings of
dynamo's messages. (The lane run for real: tests/test_compiled.py.)"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness import compile_report
from harness.deviations import KnownDeviation, load_known_deviations, match_deviation
from harness.diagnosis import conformance_lines, diagnose, render_findings, run_summary_lines
from harness.errors import CaseError, RankError
from harness.kinds import kind_named, settle, strict_failures
from harness.options import resolve
from harness.result import CaseResult, Failure
from harness.spec import ModuleSpec
from harness.reports.html import render_html
from harness.reports.results import build_document, case_record

_NONZERO = {"reason": "Dynamic shape operator", "detail": "Operator `aten.nonzero.default`'s output shape depends "
            "on input Tensor data.", "where": "torch/nn/modules/_functions.py:98", "count": 1}
_ITEM = {"reason": "Unsupported Tensor.item() call with capture_scalar_outputs=False", "detail": "",
         "where": "harness/torch_sut.py:43", "count": 2}


def _report(*breaks, graphs=3, compile_s=1.5, run_s=0.2, recompiles=()):
    return {"backend": "inductor", "graphs": graphs, "graph_breaks": [dict(b) for b in breaks],
            "recompiles": [dict(r) for r in recompiles], "compile_s": compile_s, "run_s": run_s, "cache_hits": 1,
            "cache_misses": 2}


def test_merge_keeps_each_rank_and_counts_a_break_once_per_rank():
    training = {"reason": "self.training == True", "where": "forward (harness/torch_sut.py:27)", "count": 1}
    record = compile_report.merge({0: {"compile": _report(_NONZERO, _ITEM, recompiles=[training])},
                                   1: {"compile": _report(_NONZERO, graphs=2, compile_s=2.5)},
                                   2: {"error": None}})  # a rank without a report is left out
    assert record["ranks"] == [0, 1] and record["graphs"] == [3, 2] and record["compile_s"] == [1.5, 2.5]
    assert record["cache_hits"] == 2 and record["cache_misses"] == 4
    nonzero = next(b for b in record["graph_breaks"] if b["reason"] == "Dynamic shape operator")
    assert nonzero["count"] == 1 and nonzero["ranks"] == [0, 1]
    item = next(b for b in record["graph_breaks"] if b["where"] == "harness/torch_sut.py:43")
    assert item["count"] == 2 and item["ranks"] == [0]
    assert record["recompiles"] == [{**training, "ranks": [0]}]
    assert compile_report.graph_breaks({"compile": record}) == 3
    assert compile_report.merge({0: {"phases": []}, 1: None}) is None  # an eager case has no record


def _spec(**fields) -> ModuleSpec:
    return ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(3, 2), steps=1, **fields)


def test_settle_a_compile_error_is_the_outcome_and_nothing_is_compared():
    """A rank whose compiler raised makes the case "compile failed" (not a numeric failure, not a hang), naming the
    rank, the phase, the error's first line and where; the kind's judge never runs."""
    error = RankError("train0", "compile", "BackendCompilerFailed", "inductor: CppCompileError: C++ compile error "
                      "(at harness/torch_sut.py:80)")
    judge = kind_named("module")
    actual = [{"phases": [], "error": error, "unsupported": None, "compile": _report()},
              {"phases": [], "error": None, "unsupported": None, "compile": _report(_NONZERO)}]
    result = settle(judge, _spec(), None, actual, CaseResult(_spec()))
    assert result.compile_failed and not result.comparisons
    assert [f.kind for f in result.failures] == ["compile"]
    assert result.failures[0].message == ("rank 0 could not compile at train0: inductor: CppCompileError: C++ "
                                          "compile error (at harness/torch_sut.py:80)")
    assert result.compile["ranks"] == [0, 1]
    raised = Failure.of_error(1, RankError("train0", "forward", "ValueError", "boom"))
    assert raised.kind == "raised" and not CaseResult(_spec(), failures=[raised]).compile_failed


def test_strict_compile_fails_a_graph_break_and_only_with_the_option():
    result = CaseResult(_spec(), compile=compile_report.merge({0: {"compile": _report(_NONZERO, _ITEM)}}))
    assert strict_failures(result, resolve({"compile": "inductor"}, environ={})) == []
    [failure] = strict_failures(result, resolve({"compile": "inductor", "strict_compile": True}, environ={}))
    assert failure.kind == "graph_break"
    assert failure.message.startswith("3 graph break(s) under --compile inductor: Dynamic shape operator at "
                                      "torch/nn/modules/_functions.py:98; Unsupported Tensor.item()")
    whole = CaseResult(_spec(), compile=compile_report.merge({0: {"compile": _report()}}))
    assert strict_failures(whole, resolve({"compile": "inductor", "strict_compile": True}, environ={})) == []


def _compiled_record(spec, breaks=(), *, outcome="passed", failures=()):
    result = CaseResult(spec, failures=list(failures), rerun=f"python -m harness run --case {spec.id}",
                        compile=compile_report.merge({0: {"compile": _report(*breaks)}}))
    return case_record(spec, result, outcome=outcome)


def _document() -> dict:
    compile_error = Failure("compile", "rank 0 could not compile at eval0: inductor: TorchRuntimeError: RuntimeError "
                            "when making fake tensor call (at harness/torch_sut.py:67)", rank=0, phase="eval0")
    records = [_compiled_record(_spec(seed=s), [_NONZERO]) for s in range(3)]
    records += [_compiled_record(_spec(seed=3, momentum=None), [_NONZERO, _ITEM]),
                _compiled_record(ModuleSpec(shard_sizes=(4,), channels=3, spatial=(3, 2), seed=4)),
                _compiled_record(ModuleSpec(shard_sizes=(1,), channels=3, seed=5), outcome="compile_failed",
                                 failures=[compile_error])]
    env = {"sut": "torch", "profile": "quick", "torch": "2.x", "compile": "inductor"}
    return json.loads(json.dumps(build_document(records, env, exit_status=1)))


def test_totals_and_breaks_by_kind_from_the_document():
    document = _document()
    totals = compile_report.totals(document["cases"])
    assert totals["cases"] == 6 and totals["graphs"] == 18 and totals["cases_with_breaks"] == 4
    assert totals["graph_breaks"] == 1 + 1 + 1 + 3 and totals["cache_hits"] == 6
    [(kind, found)] = compile_report.breaks_by_kind(document["cases"]).items()
    assert kind == "module"
    assert found[0] == ("Dynamic shape operator", _NONZERO["detail"], _NONZERO["where"], 4, 4)
    assert found[1][2:] == ("harness/torch_sut.py:43", 1, 2)
    assert compile_report.totals([{"id": "eager", "comparisons": []}]) is None


def test_the_console_and_the_conformance_table_show_the_compiled_lane():
    document = _document()
    lines = run_summary_lines(document)
    assert lines[0].startswith("SyncBN conformance: FAILED: 6 cases (5 passed, 1 compile failures)")
    text = "\n".join(lines)
    assert "compiled lane (--compile inductor): 6 cases compiled, 18 graphs (all ranks; 6 from the cache, 12 " \
           "compiled anew)" in text
    assert "graph breaks in module cases (2 distinct, 6 module cases compiled):" in text
    assert "Dynamic shape operator at torch/nn/modules/_functions.py:98: 4 cases (4 breaks)" in text
    assert ("compile failed in 1 case: inductor: TorchRuntimeError: RuntimeError when making fake tensor call (at "
            "harness/torch_sut.py:67)") in text
    assert "Compiler: compile failed (--compile), graph breaks under --strict-compile: 1" in text
    table = "\n".join(conformance_lines(document))
    assert "graph breaks (4)" in table  # all four passed
    assert "compiled whole (1)" in table  # the compile failure is not "compiled whole"


def test_the_diagnosis_names_what_the_compile_failures_share():
    findings = render_findings(diagnose(_document()))
    assert ("  compile: failed in 1 case, at eval0; against the 5 passing ones (this document keeps no comparisons "
            "of passing cases): all 1 have 2-D input, none of the 5 where it passed do (too few cases to rule out "
            "chance)") in findings, findings
    assert any(line.strip().startswith("compiled lane (--compile inductor)") for line in findings)


def test_the_html_report_has_a_compiled_lane_section():
    text = render_html(_document())
    section = text[text.index("<h2>Compiled lane (--compile inductor)"):text.index("<h2>Failures")]
    assert "<h3>Graph breaks in module cases</h3>" in section
    assert "<code>torch/nn/modules/_functions.py:98</code></td><td class=num>4</td>" in section
    assert "<h3>Compile failed</h3>" in section and "every compiled case (6)" in section
    assert "compiled: inductor: 3 graphs over 1 ranks" in text  # the failed case's card
    eager = json.loads(json.dumps(build_document([case_record(_spec(), CaseResult(_spec()), outcome="passed")],
                                                 {"sut": "torch"})))
    assert "Compiled lane" not in render_html(eager)


def test_a_known_deviation_names_the_compile_lanes_it_applies_to():
    case_id = "w1_n1_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu"
    deviations = load_known_deviations()
    assert match_deviation(deviations, "torch", case_id) is None  # eager raises the required ValueError
    compiled = match_deviation(deviations, "torch", case_id, "inductor")
    assert compiled is not None and compiled.condition == "local_count_one" and compiled.of_the_compiler
    eager_only = KnownDeviation(sut="torch", case="w1_", reason="r", link="l", compile=("off",))
    assert eager_only.matches("torch", case_id) and not eager_only.matches("torch", case_id, "aot_eager")
    assert eager_only.matches("torch", case_id, None) and not eager_only.of_the_compiler
    assert KnownDeviation(sut="torch", case="w1_", reason="r", link="l").matches("torch", case_id, "inductor")


def test_the_native_kernels_float64_sum_is_not_inductors():
    """torch's CPU BatchNorm sums float64 channels sequentially (a known deviation of the native kernel, which the
    eager and aot_eager backends run); inductor generates its own Welford statistics, accurate there (found by the
    thorough profile compiled: the entry's cases passed under inductor)."""
    case_id = "w2_n2.1_c1_ncl2050_f64_contig_aff_notrs_m0.1_e1e-05_k1_ev1_constant_loc1_sd1_s0_cpu"
    deviations = load_known_deviations()
    for lane in ("off", "eager", "aot_eager"):
        assert match_deviation(deviations, "torch", case_id, lane).condition == "cpu_float64_sequential_sum"
    assert match_deviation(deviations, "torch", case_id, "inductor") is None


def test_a_bad_compile_field_names_the_entry_and_the_rule(tmp_path):
    path = tmp_path / "deviations.toml"
    path.write_text('[[deviation]]\nsut = "torch"\ncase = "w1_"\nreason = "r"\nlink = "l"\ncompile = ["jit"]\n')
    with pytest.raises(CaseError, match=r"deviation\[0\]\.compile=\['jit'\]: must be a non-empty list of --compile"):
        load_known_deviations(path)


def test_the_rank_reads_dynamo_s_messages():
    """harness.rank.compiled's readings of a graph-break reason, a recompile log record and a compile error."""
    from harness.rank import compiled

    frame = SimpleNamespace(filename="/x/site-packages/torch/nn/modules/_functions.py", lineno=98)
    reason = ("Encountered graph break when attempting to trace CALL: a function call, e.g. f(x, y):\n\nDynamic "
              "shape operator\n  Higher Order Operator: autograd.Function\n  Explanation: Operator `aten.nonzero."
              "default`'s output shape depends on input Tensor data.\n  Hint: Enable ...")
    assert compiled._graph_break(reason, [frame]) == (
        "Dynamic shape operator (in autograd.Function)", "Operator `aten.nonzero.default`'s output shape depends on "
        "input Tensor data.", "torch/nn/modules/_functions.py:98")
    message = ("Recompiling function forward in /work/x/harness/torch_sut.py:27\n    triggered by the following guard "
               "failure(s):\n    - 0/0: self.training == True   # if self.training and self.track_running_stats:  "
               "# harness/torch_sut.py:38 in forward")
    assert compiled._recompile(message) == ("self.training == True", "forward (harness/torch_sut.py:27)")
    import torch._dynamo.exc as dynamo_exc

    error = dynamo_exc.TorchRuntimeError(
        "RuntimeError when making fake tensor call\n  Explanation: Dynamo failed to run FX node with fake tensors: "
        "call_function <function batch_norm>(*(FakeTensor(...),), **{}): got ValueError('Expected more than 1 "
        "value')\n\nfrom user code:\n   File \"/w/harness/torch_sut.py\", line 67, in forward\n    return F.b(")
    assert compiled.compile_error(error) == ("TorchRuntimeError: RuntimeError when making fake tensor call: got "
                                             "ValueError('Expected more than 1 value') (at harness/torch_sut.py:67)")
    assert compiled.compile_error(ValueError("the implementation's own error")) is None
    lane = SimpleNamespace(backend="aot_eager")
    assert compiled.rank_error(lane, "eval0", "forward", error).stage == "compile"
    assert compiled.rank_error(None, "eval0", "forward", error).stage == "forward"  # no lane: nothing compiled
