"""One table of options (harness.options): the CLI, the pytest plugin and the torchrun launcher accept the same
options, resolve them the same way (value, else environment variable, else the one default), and the rerun line
repeats exactly those that change a case's result."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from harness import launch
from harness.cli import build_parser
from harness.errors import CaseError
from harness.options import OPTIONS, Options, add_pytest_options, rerun_command, resolve

ROOT = Path(__file__).resolve().parent.parent


class _Group:
    """Records what add_pytest_options declares (the object pytest's parser.getgroup returns)."""

    def __init__(self) -> None:
        self.options: dict[str, dict] = {}

    def addoption(self, flag: str, **kwargs) -> None:
        self.options[flag] = kwargs


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["run"]


def test_every_entry_point_declares_every_option_with_no_default_of_its_own():
    group = _Group()
    add_pytest_options(group)
    run_defaults = vars(_run_parser().parse_args([]))
    launch_defaults = vars(launch.build_parser().parse_args([]))
    for opt in OPTIONS:
        assert opt.pytest_name in group.options and group.options[opt.pytest_name]["default"] is None
        assert run_defaults[opt.name] is None, opt.name  # resolve() applies the table's default
        assert launch_defaults[opt.name] is None, opt.name


def test_the_three_entry_points_resolve_to_the_same_options():
    expected = resolve({}, environ={})
    assert expected == Options()
    assert resolve(vars(_run_parser().parse_args([])), environ={}) == expected
    assert resolve(vars(launch.build_parser().parse_args([])), environ={}) == expected
    given = ["--profile", "quick", "--case-timeout", "7", "--backend", "gloo", "--start-timeout", "30",
             "--strict-features"]
    from_cli = resolve(vars(_run_parser().parse_args(given)), environ={})
    assert from_cli == resolve(vars(launch.build_parser().parse_args(given)), environ={})
    assert (from_cli.profile, from_cli.case_timeout, from_cli.backend, from_cli.start_timeout,
            from_cli.strict_features) == ("quick", 7.0, "gloo", 30.0, True)


@pytest.mark.processes
def test_pytest_reports_the_same_resolved_options():
    done = subprocess.run([sys.executable, "-m", "pytest", "--co", "cases/test_catalogue.py", "-p", "no:cacheprovider",
                           "-k", "no_such_case"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**_clean_env()})
    o = Options()
    assert (f"syncbn-harness: sut={o.sut} kernels={o.kernels} profile={o.profile} device={o.device} "
            f"backend={o.backend} case-timeout={o.case_timeout:g}s start-timeout={o.start_timeout:g}s") in done.stdout


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCBN_")}


def test_environment_variables_fill_in_and_a_given_value_wins():
    environ = {"SYNCBN_PROFILE": "quick", "SYNCBN_SUT": "harness.mutants:no_sync", "SYNCBN_DEVICE": "cpu",
               "SYNCBN_COMPILE": "aot_eager"}
    assert resolve({}, environ=environ).profile == "quick"
    assert resolve({}, environ=environ).compile == "aot_eager"
    assert resolve({"compile": "inductor"}, environ=environ).rank.compile == "inductor"  # it reaches the ranks
    assert resolve({"profile": "thorough"}, environ=environ).profile == "thorough"
    assert resolve({}, environ=environ).sut == "harness.mutants:no_sync"


@pytest.mark.parametrize(("values", "message"), [
    ({"profile": "nightly"}, "--profile='nightly': must be one of quick, default, thorough"),
    ({"case_timeout": 0.0}, "--case-timeout=0.0: must be a number of seconds > 0"),
    ({"start_timeout": -1.0}, "--start-timeout=-1.0: must be a number of seconds > 0"),
    ({"backend": "mpi"}, "--backend='mpi': must be one of auto, gloo, nccl"),
    ({"compile": "cudagraphs"}, "--compile='cudagraphs': must be one of off, eager, aot_eager, inductor"),
    ({"strict_compile": True}, "--strict-compile: needs --compile BACKEND"),
])
def test_bad_values_name_the_option_and_the_rule(values, message):
    with pytest.raises(CaseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(values, environ={})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(CaseError, match="SYNCBN_PROFILE \\(environment\\)='nightly'"):
        resolve({}, environ={"SYNCBN_PROFILE": "nightly"})


def test_only_the_main_job_writes_a_report_by_default():
    assert resolve({}, environ={}).report is None
    assert resolve({}, environ={}, main_job=True).report == "syncbn-report.html"


def test_rerun_line_repeats_what_changes_the_result_and_nothing_else():
    case = "w2_n3.2_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
    plain = Options(profile="quick", case_timeout=5.0, json="x.json")
    assert rerun_command(case, plain) == f"python -m harness run --case {case}"
    changed = Options(sut="my file.py:factory", kernels="k.py", backend="gloo", strict_features=True)
    assert rerun_command(case, changed) == (f"python -m harness run --case {case} --sut 'my file.py:factory' "
                                            f"--kernels k.py --backend gloo --strict-features")
    compiled = Options(compile="inductor", strict_compile=True)
    assert rerun_command(case, compiled) == f"python -m harness run --case {case} --compile inductor --strict-compile"
    assert rerun_command(case, plain, torchrun_world_size=2).startswith(
        f"torchrun --nproc-per-node=2 -m harness.launch --case {case}")


def test_pytest_spells_each_option_with_the_prefix_and_this_repository_adds_the_short_spelling():
    """An installed plugin may not take --device or --case from a project's own pytest: --syncbn-<option>. This
    repository's conftest.py adds the short spellings, which set the same values."""
    from harness.options import option

    installed, checkout = _Group(), _Group()
    add_pytest_options(installed)
    add_pytest_options(checkout, short=True)
    assert [option(n).pytest_name for n in ("sut", "case_timeout", "json", "report")] == [
        "--syncbn-sut", "--syncbn-case-timeout", "--syncbn-json", "--syncbn-report"]
    assert [option(n).short_pytest_name for n in ("sut", "json", "report")] == [
        "--sut", "--json-results", "--html-report"]
    assert all(name.startswith("--syncbn-") for name in installed.options)
    assert not any(name.startswith("--syncbn-") for name in checkout.options)
    for opt in OPTIONS:
        assert installed.options[opt.pytest_name]["dest"] == checkout.options[opt.short_pytest_name]["dest"]
