"""The catalogue is the suite: every area, op and model case of a profile is collected by the conformance test
module exactly once, and every id the harness prints parses back to its case and runs through --case."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.catalogue import AREAS, PROFILES, check_areas, in_areas, module_cases, op_cases
from harness.errors import CaseError
from harness.spec import ModuleSpec
from harness.kinds import KINDS, case_for_id, catalogue_cases, kind_for_id, parse_case_id

ROOT = Path(__file__).resolve().parent.parent


def _collected(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider",
                           "cases/test_catalogue.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line.split("[", 1)[1].rstrip("]") for line in done.stdout.splitlines() if "::test_case[" in line]


@pytest.mark.processes
@pytest.mark.parametrize("profile", ["quick", "default"])
def test_every_case_of_the_profile_is_collected_once(profile):
    ids = _collected("--profile", profile)
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert set(ids) == {case.id for case in catalogue_cases(profile)}
    collected_areas = {case_for_id(i).tags[0] for i in ids}
    assert set(AREAS) | {"ops", "models"} <= collected_areas, set(AREAS) - collected_areas


@pytest.mark.processes
def test_an_area_is_selected_by_its_exact_name():
    assert set(_collected("--profile", "quick", "--area", "eps,ops")) == {
        c.id for c in module_cases("quick", "eps") + op_cases("quick")}


def test_an_area_name_never_selects_another_area_containing_it():
    """An area named like another plus a prefix (a new ``tiny_eps`` next to ``eps``) is not selected by ``eps``:
    areas are matched by name, not by substring (pytest's -k)."""
    eps, tiny = ModuleSpec(shard_sizes=(2,), channels=1, tags=("eps",)), ModuleSpec(shard_sizes=(3,), channels=1,
                                                                                       tags=("tiny_eps", "eps"))
    assert in_areas([eps, tiny], "eps") == [eps]
    with pytest.raises(CaseError, match="unknown area"):
        check_areas("eps,no_such_area")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_id_parses_back_to_its_case(profile, device):
    for case in catalogue_cases(profile, device):
        assert parse_case_id(case.id) == case
        assert kind_for_id(case.id).name in {k.name for k in KINDS}


@pytest.mark.processes
def test_a_model_case_reruns_through_the_main_job(tmp_path):
    case = "model_w2_n4.4_k3_float32_m0.1_s0_cpu"
    out = tmp_path / "model.json"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--case", case, "--json", str(out), "--report",
                           str(tmp_path / "model.html")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    from harness.reports.results import load_results

    (record,) = load_results(out)["cases"]
    assert record["id"] == case and record["kind"] == "model" and record["outcome"] == "passed"
    assert {c["quantity"] for c in record["comparisons"]} >= {"loss", "parameter", "buffer", "state.agreement"}
