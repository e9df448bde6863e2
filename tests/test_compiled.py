"""The compiled lane run for real (--compile): the CI selection under inductor, a compile failure as its own outcome,
--strict-compile, a known deviation of the compiler. (What the controller makes of the records:
tests/test_compile_report.py; the compiled lane's mutants: tests/test_selftest.py.)"""
from __future__ import annotations

import json

import pytest

from harness import compile_report
from harness.kinds.audit import COMPILED_UNMEASURED
from harness.catalogue import module_cases
from harness.kinds import RunConfig, parse_case_id, run_case
from harness.spec import ModuleSpec
from in_process import run_here

pytestmark = pytest.mark.processes  # every test here starts rank pools


@pytest.fixture(autouse=True)
def _fresh_rank_processes():
    """Each test's ranks start afresh, as a compiled run's do (its own forkserver and pools): in the suite the
    in-process runs share this worker's pools, and a rank that ran other tests' SUTs and kernels before tracing its
    first compiled case once reported a graph break of dynamo's own ("Attempted to call function marked as
    skipped", torch/_dynamo/polyfills) instead of the Function's, in 2 of 3 full runs and never alone."""
    from harness.pool import default_manager

    default_manager().close_all()
    yield


def _compile_selection() -> dict[str, ModuleSpec]:
    """The compile area's cases by their tags after the area's ("float64" for the one without)."""
    return {"+".join(case.tags[1:]) or "float64": case for case in module_cases("quick", "compile")}


def test_the_compile_selection_passes_under_inductor_and_names_every_graph_break(tmp_path):
    """CI's compiled lane: ``--area compile --compile inductor`` (every class of input that makes torch.compile
    compile another graph) passes against the float64 reference with the eager lane's tolerances, each case with
    its compile record, and the graph breaks named with their frames."""
    results = tmp_path / "compiled.json"
    done = run_here("run", "--area", "compile", "--compile", "inductor", "--json", str(results), "--report",
                    str(tmp_path / "compiled.html"))
    assert done.returncode == 0, done.stdout[-3000:]
    document = json.loads(results.read_text())
    cases = {case["id"]: case for case in document["cases"]}
    selection = _compile_selection()
    assert set(cases) == {case.id for case in selection.values()} and document["environment"]["compile"] == "inductor"
    for case in cases.values():
        record = case["compile"]
        assert record["backend"] == "inductor" and record["ranks"] == [0, 1] and min(record["graphs"]) >= 1
        # No collective audit compiled (harness.rank.audit): no graph break of the harness's own, and the record
        # says why nothing was counted.
        assert not [b for b in record["graph_breaks"] if "harness/rank/" in b["where"]], record["graph_breaks"]
        assert case["collectives"] == {"unmeasured": COMPILED_UNMEASURED}
    # Inductor's CPU decomposition of batch norm rounds invstd to the input dtype for half input with float32
    # parameters: a reviewed known deviation (grad_weight only); every other case passes.
    mixed = cases.pop(selection["groups+mixed"].id)
    assert mixed["outcome"] == "xfailed" and {c["quantity"] for c in mixed["comparisons"] if not c["passed"]} \
        == {"grad_weight"}
    assert {case["outcome"] for case in cases.values()} == {"passed"}
    nonzero = ("Dynamic shape operator", "torch/nn/modules/_functions.py:98")  # the Function's empty-rank filter
    for tag, case in selection.items():
        breaks = {(b["reason"], b["where"]) for b in cases.get(case.id, mixed)["compile"]["graph_breaks"]}
        if tag.startswith("groups"):  # every rank alone in its group: F.batch_norm, no synchronisation, whole
            assert breaks == set(), breaks
        else:
            assert nonzero in breaks, (case.id, breaks)
    assert compile_report.compiled_whole(cases[selection["groups"].id])
    item = {(b["reason"], b["where"]) for b in cases[selection["momentum_none"].id]["compile"]["graph_breaks"]}
    assert ("Unsupported Tensor.item() call with capture_scalar_outputs=False", "harness/torch_sut.py:43") in item
    assert f"compiled lane (--compile inductor): {len(selection)} cases compiled" in done.stdout
    synced = sum(not tag.startswith("groups") for tag in selection)
    assert f"Dynamic shape operator at torch/nn/modules/_functions.py:98: {synced} cases" in done.stdout


# The compiled lane's mutants (harness.mutants.COMPILED_MUTANTS), caught compiled by a case that passes eagerly:
# tests/test_selftest.py runs them through the selftest.


def test_strict_compile_fails_a_graph_break_and_passes_a_whole_graph():
    selection = _compile_selection()
    strict = RunConfig.of(compile="eager", strict_compile=True, case_timeout=60.0)
    broken = run_case(selection["momentum_none"], strict)
    assert [f.kind for f in broken.failures] == ["graph_break"] and not broken.compile_failed
    assert "Dynamic shape operator at torch/nn/modules/_functions.py:98" in broken.failures[0].message
    assert run_case(selection["groups"], strict).passed


def test_a_compile_error_is_its_own_outcome(tmp_path):
    """A SUT that dynamo cannot trace (a custom op whose fake implementation raises): outcome "compile failed",
    exit 1, the error's first line and where, in the console, the results and the conformance table."""
    case = "w2_n3.2_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
    results = tmp_path / "results.json"
    done = run_here("run", "--case", case, "--sut", "tests/suts_faulty.py:uncompilable", "--compile", "eager",
                    "--json", str(results), "--report", str(tmp_path / "compiled.html"))
    assert done.returncode == 1, done.stdout[-3000:]
    [record] = json.loads(results.read_text())["cases"]
    assert record["outcome"] == "compile_failed" and {f["kind"] for f in record["failures"]} == {"compile"}
    message = record["failures"][0]["message"]
    assert message.startswith("rank 0 could not compile at train0: eager: TorchRuntimeError: ") or \
        message.startswith("rank 1 could not compile at train0: eager: TorchRuntimeError: "), message
    assert "checked_copy's fake implementation is not written yet" in message
    assert "(at tests/suts_faulty.py:" in message
    assert "SyncBN conformance: FAILED: 1 case (1 compile failures)" in done.stdout
    assert "Compiler: compile failed (--compile), graph breaks under --strict-compile: 1" in done.stdout
    eager = run_case(parse_case_id(case), RunConfig.of(sut="tests/suts_faulty.py:uncompilable", case_timeout=60.0))
    assert eager.passed, eager.report()  # nothing wrong with it eagerly


def test_a_known_deviation_of_the_compiler_is_an_expected_failure(tmp_path):
    """One value per channel on a rank alone: eager raises the required ValueError (passes); compiled, dynamo
    raises TorchRuntimeError instead, a reviewed known deviation scoped to the compiled lanes."""
    case = "w1_n1_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu"
    done = run_here("run", "--case", case, "--compile", "eager", "--report", str(tmp_path / "report.html"), "--",
                    "-rx")
    assert done.returncode == 0 and "1 known deviations" in done.stdout, done.stdout[-3000:]
    assert "XFAIL" in done.stdout and "TorchRuntime" in done.stdout
