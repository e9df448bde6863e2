"""Declared capabilities: a SUT that raises Unsupported (from its factory or its forward) gets the outcome
"unsupported" with its reason, not a failure; --strict-features makes it a failure; an undeclared crash stays one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.catalogue import module_cases
from harness.kinds import run_case
from harness.pool import PoolManager
from harness.kinds import RunConfig
from harness.spec import ModuleSpec

pytestmark = pytest.mark.processes  # every test here starts rank pools or subprocesses

ROOT = Path(__file__).resolve().parent.parent
SUTS = Path(__file__).resolve().parent / "suts_declared.py"
MOMENTUM_NONE = ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(3, 2), momentum=None, steps=2)
THREE_D = ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(4,), steps=2)
FOUR_D = ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(3, 2), steps=2, eval_steps=1)


@pytest.fixture(scope="module")
def manager():
    pools = PoolManager()
    yield pools
    pools.close_all()


def _config(manager, name: str, **options) -> RunConfig:
    return RunConfig.of(sut=f"{SUTS}:{name}", case_timeout=30.0, manager=manager, **options)


@pytest.mark.parametrize(("case", "reason"), [(MOMENTUM_NONE, "momentum=None (cumulative moving average) is not "
                                               "implemented"), (THREE_D, "4-D input only, got 3-D")])
def test_declared_unsupported_is_not_a_failure(manager, case, reason):
    result = run_case(case, _config(manager, "four_d_only_biased"))
    assert result.unsupported == reason and not result.failures and not result.passed
    assert "declared unsupported by the implementation" in result.report()


def test_any_exception_class_named_unsupported_works(manager):
    result = run_case(MOMENTUM_NONE, _config(manager, "no_momentum_none"))
    assert result.unsupported == "momentum=None is not implemented" and not result.failures


def test_strict_features_makes_unsupported_a_failure(manager):
    result = run_case(MOMENTUM_NONE, _config(manager, "no_momentum_none", strict_features=True))
    assert [f.kind for f in result.failures] == ["unsupported"] and "--strict-features" in result.rerun


def test_supported_configurations_are_still_judged(manager):
    result = run_case(FOUR_D, _config(manager, "four_d_only_biased"))
    assert not result.passed and not result.unsupported
    assert {c.quantity for c in result.comparisons if not c.passed} >= {"running_var"}


def test_unsupported_outcome_in_the_results(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--case", MOMENTUM_NONE.id, "--sut",
                           f"{SUTS}:no_momentum_none", "--json", str(out), "--report", str(tmp_path / "r.html")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    # Its one case declared unsupported: the run judged nothing, which is not a pass (exit 1, "nothing was tested").
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    (case,) = json.loads(out.read_text())["cases"]
    assert case["outcome"] == "unsupported" and case["unsupported"] == "momentum=None is not implemented"


def test_a_run_that_judged_nothing_fails_and_says_why(tmp_path):
    """Every case declared unsupported: nothing was tested, so the run is not green (exit 1), and the verdict says
    why, in the console and in the report."""
    out, report = tmp_path / "results.json", tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--sut", f"{SUTS}:supports_nothing", "--area",
                           "eps", "--json", str(out), "--report", str(report)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    n = len(module_cases("default", "eps"))
    verdict = (f"SyncBN conformance: NO CASES RAN (nothing was tested: {n} cases declared unsupported (nothing is "
               f"implemented yet: {n}))")
    assert verdict in done.stdout and verdict in report.read_text()
    document = json.loads(out.read_text())
    assert document["exit_status"] == 1 and set(document["summary"]["outcomes"]) == {"unsupported"}
