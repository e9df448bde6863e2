"""harness.reports.gate: `python -m harness gate` against a baseline recorded with torch on one float32 case."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from in_process import run_here
from harness.reports.gate import GateReport, judge

ROOT = Path(__file__).resolve().parent.parent
CASE = "w3_n3.1.2_c3_nchw3x2_f32_contig_aff_trs_m0.5_e1e-05_k3_ev1_normal_loc0_sd1_s0_cpu"
# torch's SyncBatchNorm with every output scaled by (1 + 5e-7): a few float32 ulps, inside every tolerance (the
# floor alone allows 16 u x scale, about 1e-6 relative) but several times torch's own error on this case.
PERTURBED_SUT = '''
from harness.torch_sut import torch_factory


def factory(num_features, **kwargs):
    module = torch_factory(num_features, **kwargs)
    module.register_forward_hook(lambda mod, args, out: out * (1 + 5e-7))
    return module
'''


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    """The gate on CASE (or on the document of --results-in, which says which cases it ran), run from a scratch
    folder (the main job's default report lands there, not in the checkout)."""
    # "-m 'not property'": --case does not deselect the hypothesis test (cases/test_property.py), whose random
    # examples would make the selection differ from run to run.
    case = [] if "--results-in" in args else ["--case", CASE]
    with tempfile.TemporaryDirectory(prefix="gate-cwd-") as scratch:
        return subprocess.run([sys.executable, "-m", "harness", "gate", *case, *args, "--", "-m", "not property"],
                              cwd=scratch, capture_output=True, text=True, timeout=300,
                              env={**_env(), "PYTHONPATH": str(ROOT)})


def judged(*args: str) -> subprocess.CompletedProcess[str]:
    """``gate`` in this process, for what runs no suite: --results-in, usage errors (tests/in_process.py); the
    selection as ``gate`` gives it (the gate compares a run's selection with the baseline's)."""
    return run_here("gate", *args, "--", "-m", "not property")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCBN_")}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    """(baseline, the results document of the run that recorded it)."""
    tmp = tmp_path_factory.mktemp("gate")
    path, results = tmp / "baseline.json", tmp / "results.json"
    done = gate("--baseline", str(path), "--update-baseline", "--json", str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(path.read_text())
    assert document["schema"] == "syncbn-harness/baseline" and document["version"] == 2
    assert list(document["environments"]) == ["cpu/gloo"]
    assert list(document["environments"]["cpu/gloo"]["cases"]) == [CASE]
    return path, results


@pytest.fixture
def baseline(recorded) -> Path:
    return recorded[0]


@pytest.mark.processes
def test_same_implementation_passes(baseline):
    done = gate("--baseline", str(baseline))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "gate: PASSED" in done.stdout
    assert "syncbn-gate-" not in done.stdout  # no path into the temporary directory the gate deletes


@pytest.mark.processes
def test_results_in_runs_nothing_so_run_options_are_refused(recorded, tmp_path):
    baseline, results = recorded
    for option in (["--sut", "x.py:f"], ["--profile", "quick"], ["--json", "x.json"], ["-n", "2"],
                   ["--repeat", "2"]):
        done = judged("--baseline", str(baseline), "--results-in", str(results), *option)
        assert done.returncode == 2, done.stdout[-3000:]
        assert done.stdout == "" and done.stderr.strip().splitlines() == [
            f"gate: usage error: {option[0]}={option[1] if option[0] == '--repeat' else repr(option[1])}"
            f": not with --results-in (the gate judges that document as it is; it runs nothing)"], done.stdout
    report = tmp_path / "judged.html"
    done = judged("--baseline", str(baseline), "--results-in", str(results), "--report", str(report))
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"gate: HTML report of {results}: {report}" in done.stdout and "<html" in report.read_text()


def test_help_says_what_results_in_ignores():
    """Every option of the run is refused with --results-in (test above), and its help says so."""
    import argparse

    from harness.cli import build_parser
    from harness.options import OPTIONS

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in subparsers.choices["gate"]._actions}
    for name in [o.name for o in OPTIONS if o.name != "report"] + ["workers", "repeat"]:
        assert "not with --results-in" in helps[name], (name, helps[name])
    assert "with --results-in, that document's, only when given" in helps["report"]
    assert "an incomplete run is refused (exit 3)" in helps["update_baseline"]


@pytest.mark.processes
def test_larger_error_within_tolerance_fails(baseline, tmp_path):
    sut = tmp_path / "perturbed.py"
    sut.write_text(PERTURBED_SUT)
    results = tmp_path / "results.json"
    done = gate("--baseline", str(baseline), "--sut", f"{sut}:factory", "--json", str(results))
    assert done.returncode == 1, done.stdout[-3000:]
    assert "FAIL growth" in done.stdout and "FAIL failure" not in done.stdout
    (case,) = json.loads(results.read_text())["cases"]
    assert case["outcome"] == "passed"  # every comparison within its tolerance: only the gate sees it


@pytest.mark.processes
def test_missing_case_fails(recorded, tmp_path):
    baseline, results = recorded
    document = json.loads(baseline.read_text())
    cases = document["environments"]["cpu/gloo"]["cases"]
    cases["w2_n4.4_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"] = cases[CASE]
    extended = tmp_path / "extended.json"
    extended.write_text(json.dumps(document))
    done = judged("--baseline", str(extended), "--results-in", str(results))  # judge the recorded run again
    assert done.returncode == 1, done.stdout[-3000:]
    assert "FAIL coverage   w2_n4.4_" in done.stdout


@pytest.mark.parametrize("content", ["{corrupt", '{"schema": "syncbn-harness/baseline", "version": 7}',
                                     '{"schema": "syncbn-harness/results", "version": 1}', None])
def test_unusable_baseline_is_a_usage_error(tmp_path, content):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    done = judged("--case", CASE, "--baseline", str(path))  # refused before any case runs
    assert done.returncode == 2, done.stdout[-3000:]
    assert "gate: usage error" in done.stderr and done.stdout == ""


@pytest.mark.processes
def test_other_environment_is_a_usage_error(recorded, tmp_path):
    baseline, results = recorded
    document = json.loads(baseline.read_text())
    document["environments"] = {"cuda:NVIDIA H100 80GB HBM3/nccl": document["environments"]["cpu/gloo"]}
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(document))
    done = judged("--baseline", str(path), "--results-in", str(path))  # a baseline is not a results document
    assert done.returncode == 2
    done = judged("--baseline", str(path), "--results-in", str(results))
    assert done.returncode == 2 and "no entry for environment 'cpu/gloo'" in done.stderr


def _entry(err: float, ratio: float) -> dict:
    q = {"dtype": "float32", "max_abs_err": err, "error_ratio": ratio, "atol": err / ratio if ratio else 1.0,
         "rtol": 0.0, "passed": True}
    return {"cases": {"c": {"outcome": "passed", "problem": "", "quantities": {"train0/output/rank0": q}}}}


@pytest.mark.parametrize("old, new, problems, candidates", [
    ((1e-16, 1e-10), (9e-16, 9e-10), 0, 0),  # 9x growth, but noise far below the tolerance (floor)
    ((1e-7, 0.05), (3e-7, 0.15), 1, 0),  # 3x growth at 15% of the tolerance
    ((1e-7, 0.05), (1.9e-7, 0.095), 0, 0),  # below the factor
    ((3e-7, 0.15), (1e-7, 0.05), 0, 1),  # improvement: a candidate for tightening
])
def test_growth_factor_and_floor(old, new, problems, candidates):
    report = GateReport()
    judge(_entry(*new), _entry(*old), growth_factor=2.0, growth_floor=0.01, report=report)
    assert (len(report.problems), len(report.candidates)) == (problems, candidates), report.problems


# -- counts: pytest's collection, the results summary and the gate agree ---------------------------------------------
# A selection of the quick profile: one area of each kind and both property tests (a few examples each).
_SELECTION = ["-k", "eps or ops and stats or models and w2_n4.4 or property"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, int, str]:
    """One run of a quick selection (results document, pytest's collected count, the run's output)."""
    tmp = tmp_path_factory.mktemp("quick")
    results = tmp / "results.json"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--profile", "quick", "--property-examples", "3",
                           "--json", str(results), "--report", str(tmp / "report.html"), "--", *_SELECTION],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = subprocess.run([sys.executable, "-m", "pytest", "cases", "--profile", "quick", "--collect-only",
                                "-q", "-p", "no:cacheprovider", *_SELECTION], cwd=ROOT, capture_output=True,
                               text=True, timeout=300, env=_env())
    count = int(re.search(r"^(\d+)(?:/\d+)? tests? collected", collected.stdout, re.M).group(1))
    return results, count, done.stdout


@pytest.mark.processes
def test_collected_summary_and_gate_counts_agree(quick_run, tmp_path):
    results, collected, output = quick_run
    document = json.loads(results.read_text())
    summary = document["summary"]
    assert document["status"] == "complete" and document["incomplete"] is None
    assert collected == summary["cases"] + summary["property_tests"]
    lines = output.strip().splitlines()
    stats = next(line for line in lines if re.search(r" in [\d.]+s( \(|$)", line))  # pytest's: "117 passed, 9 ..."
    assert sum(int(n) for n in re.findall(r"(\d+) (?:passed|failed|skipped|xfailed|xpassed|error)", stats)) \
        == collected, stats
    # The verdict is the last line, after pytest's count, and counts cases (pytest counts the property tests too).
    assert lines[-1].startswith(f"SyncBN conformance: PASSED: {summary['cases']} cases"), lines[-1]
    baseline = tmp_path / "baseline.json"
    done = judged("--baseline", str(baseline), "--update-baseline", "--results-in", str(results))
    assert done.returncode == 0 and f": {summary['cases']} cases, 1 run(s)" in done.stdout, done.stdout
    done = judged("--baseline", str(baseline), "--results-in", str(results))
    assert done.returncode == 0, done.stdout
    assert f"gate: cpu/gloo: {summary['cases']} cases against baseline" in done.stdout
