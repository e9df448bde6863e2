"""Torch's own defects inside another SUT (harness.deviations): a SUT built on torch's SyncBatchNorm that says so
(``factory.built_on = "torch"``) inherits torch's known deviations; one that does not keeps its failure, with the
note that it matches the signature of a known torch defect, in the console, the results record and the HTML."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.compare import Tolerance, compare_arrays
from harness.deviations import known_defect, load_known_deviations, match_deviation
from harness.errors import CaseError
from harness.pytest_plugin import check_case
from harness.result import CaseResult, Failure
from harness.spec import ModuleSpec
from harness.sut import built_on

ROOT = Path(__file__).resolve().parent.parent
WRAPPERS = Path(__file__).resolve().parent / "suts_torch_wrappers.py"
# torch's CPU bf16 channels-last grad_bias defect (condition cpu_bf16_channels_last, quantities grad_bias)
BF16_CL = ModuleSpec(shard_sizes=(5, 3), channels=8, spatial=(6, 5), dtype="bfloat16", param_dtype="float32",
                     layout="channels_last", steps=2, eval_steps=1)


def _result(*failed: str, failures=()) -> CaseResult:
    """A result of BF16_CL whose ``failed`` quantities failed at eval0 (and output passed)."""
    values = np.ones(4)
    tolerance = Tolerance(1e-3, 0.0, "test", 1.0)
    comparisons = [compare_arrays(values + (0.5 if name in failed else 0.0), values, tolerance, quantity=name,
                                  phase="eval0", rank=None, ranks=(0, 1), dtype="float32")
                   for name in ("output", *failed)]
    return CaseResult(BF16_CL, comparisons=comparisons, failures=list(failures))


def test_the_declaration_is_an_attribute_of_the_factory():
    assert built_on(f"{WRAPPERS}:torch_wrapper_declared") == "torch"
    assert built_on(f"{WRAPPERS}:torch_wrapper") is None and built_on("torch") is None


def test_a_bad_declaration_is_a_usage_error(tmp_path):
    sut = tmp_path / "sut.py"
    sut.write_text("def factory(num_features, **kwargs):\n    pass\nfactory.built_on = 3\n")
    with pytest.raises(CaseError, match=r"--sut=.*built_on=3 must name the SUT it is built on"):
        built_on(f"{sut}:factory")


def test_a_declared_sut_inherits_torchs_deviations_and_may_pass_them():
    deviations = load_known_deviations()
    assert match_deviation(deviations, "mine.py:f", BF16_CL.id) is None
    inherited = match_deviation(deviations, "mine.py:f", BF16_CL.id, built_on="torch")
    assert inherited.condition == "cpu_bf16_channels_last" and inherited.inherited_by == "mine.py:f"
    assert inherited.outcome(_result("grad_bias")) == "xfailed"
    assert inherited.outcome(_result()) == "passed"  # the wrapper avoids torch's path there: a pass, not an XPASS
    assert inherited.outcome(_result("grad_bias", "grad_weight")) == "failed"  # more than the defect: its own
    with pytest.raises(pytest.xfail.Exception):
        check_case(CaseResult(**{**_result("grad_bias").__dict__, "deviation": inherited}))
    check_case(CaseResult(**{**_result().__dict__, "deviation": inherited}))  # passes


def test_an_undeclared_sut_gets_the_signature_of_torchs_defect_only_when_it_matches():
    deviations = load_known_deviations()
    note = known_defect(deviations, "mine.py:f", _result("grad_bias"))
    assert note["sut"] == "torch" and note["match"] == ("same cases (condition cpu_bf16_channels_last and device "
                                                        "cpu); its quantities failed (grad_bias), and only those")
    assert "and grad_weight too" in known_defect(deviations, "mine.py:f", _result("grad_bias", "grad_weight"))["match"]
    assert known_defect(deviations, "mine.py:f", _result("grad_weight")) is None  # not the defect's quantity
    assert known_defect(deviations, "mine.py:f", _result()) is None  # passed
    assert known_defect(deviations, "torch", _result("grad_bias")) is None  # torch's own: an expected failure
    other = BF16_CL.replace(layout="contiguous")
    assert known_defect(deviations, "mine.py:f", CaseResult(other, comparisons=_result("grad_bias").comparisons)) \
        is None  # not the defect's cases
    # An entry that aborts matches a crashed rank in its cases.
    crash = ModuleSpec(shard_sizes=(6, 0, 5), channels=4, spatial=(5, 4), dtype="float16", param_dtype="float32",
                       steps=2, eval_steps=1)
    crashed = CaseResult(crash, failures=[Failure("crashed", "rank 1 crashed (killed by SIGABRT)", rank=1)])
    assert "a rank's process was killed" in known_defect(deviations, "mine.py:f", crashed)["match"]


@pytest.mark.processes
def test_a_torch_wrapper_on_torchs_cpu_bf16_defect(tmp_path):
    """The catalogue's case of torch's CPU bf16 channels-last grad_bias defect: the undeclared wrapper fails, with
    the signature note in the console, the results record and the HTML; the declared one fails exactly as the
    inherited deviation documents (an expected failure)."""
    from harness.kinds import RunConfig, run_case

    case = "w2_n5.3_c8_nchw6x5_bf16pf32_cl_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
    assert case == BF16_CL.id
    out, html = tmp_path / "results.json", tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--case", case, "--sut", f"{WRAPPERS}:torch_wrapper",
                           "--json", str(out), "--report", str(html)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    (record,) = json.loads(out.read_text())["cases"]
    note = "matches the signature of known torch defect: CPU BatchNorm backward, bfloat16 channels-last input"
    assert note in done.stdout and note in html.read_text() and record["outcome"] == "failed"
    assert record["known_defect"]["sut"] == "torch" and "grad_bias" in record["known_defect"]["match"]
    declared = f"{WRAPPERS}:torch_wrapper_declared"
    result = run_case(BF16_CL, RunConfig.of(sut=declared))
    inherited = match_deviation(load_known_deviations(), declared, case, built_on=built_on(declared))
    assert {c.quantity for c in result.comparisons if not c.passed} == {"grad_bias"}
    assert inherited.outcome(result) == "xfailed"
