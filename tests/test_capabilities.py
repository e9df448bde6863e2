"""Declared capabilities: a SUT that raises Unsupported (from its factory or its forward) gets the outcome
"unsupported" with its reason, not a failure; --strict-features makes it a failure; an undeclared crash stays one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.catalogue import module_cases
from harness.kinds import RunConfig, run_case
from harness.pool import _ERROR_GRACE_S, PoolManager
from harness.spec import ModelSpec, ModuleSpec

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
    assert "declared unsupported: 1 case (momentum=None is not implemented: 1, concerning feature not identified)" \
        in done.stdout  # nothing was judged: nothing tells its features apart


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


def test_one_ranks_unsupported_ends_the_case_in_seconds(manager):
    """Only the rank whose shard is empty declares (in its forward, while the others already wait for it in the
    first collective): the case is unsupported, with the feature the SUT named, in about the quick grace (1 s), not
    the 10 s grace after an error nor a hang, in a module case and in a model case (DDP)."""
    config = _config(manager, "empty_shard_unsupported")
    assert run_case(FOUR_D, config).passed and run_case(ModelSpec((5, 1, 3)), config).passed  # pools up: timing
    for empty in (FOUR_D.replace(shard_sizes=(3, 0)), ModelSpec((5, 0, 3), seed=2)):  # the case's (2 and 3 ranks)
        result = run_case(empty, config)
        assert result.unsupported == "an empty shard on this rank is not supported" and not result.failures
        assert result.unsupported_features == ("empty shards",)
        assert result.duration_s < _ERROR_GRACE_S / 2, f"{empty.id}: {result.duration_s:.1f} s"


def test_a_sut_without_half_precision_passes_with_its_half_property_test_not_exercised(tmp_path):
    """Declaring float16/bfloat16 unsupported is not a failure: the half property test, whose every example the SUT
    declares unsupported, runs as many as it asks examples (then no more), reads "not exercised" (not PASSED, not
    hypothesis's Unsatisfiable, not a rank failure), and the run exits 0. (Drawing from the supported region the
    catalogue's cases declared: harness.features.declared_region, tests/test_verdict.py.)"""
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--sut", f"{SUTS}:no_half_precision", "--profile",
                           "quick", "--property-examples", "3", "--json", str(out), "--report",
                           str(tmp_path / "r.html"), "--", "-k", "eps or test_generated_half_case"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    document = json.loads(out.read_text())
    (half,) = document["property_tests"]
    assert half["outcome"] == "not exercised" and half["judged_examples"] == 0 < half["minimum_judged"] == 3
    assert half["unsupported_examples"] == 3 and half["examples"] == 3
    assert "test_generated_half_case: NOT EXERCISED: 0 of 3 examples judged (minimum 3" in done.stdout
    assert document["cases"] and {c["outcome"] for c in document["cases"]} == {"passed"}  # no rank failure
    assert done.stdout.rstrip().splitlines()[-1].startswith("SyncBN conformance: PASSED")
