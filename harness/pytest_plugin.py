"""The pytest side of the harness: options, case parametrization, known deviations, and the run fixture.

Loaded by the root conftest.py. Options (each also read from an environment variable, the option winning):
--sut SPEC (SYNCBN_SUT), --kernels SPEC (SYNCBN_KERNELS), --profile P (SYNCBN_PROFILE), --case-timeout S,
--backend B, --case ID (rerun exactly one case).
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .errors import CaseError
from .runner import CaseResult, RunConfig
from .runner import run_case as _run_case
from .spec import CaseSpec, OpSpec, parse_any_id
from .sut import DEFAULT_SUT, load_factory, load_module

__all__ = ["check_case", "KnownDeviation", "load_known_deviations"]

ROOT = Path(__file__).resolve().parent.parent
KNOWN_DEVIATIONS = ROOT / "cases" / "known_deviations.toml"
DEFAULT_PROFILE = "default"
DEFAULT_CASE_TIMEOUT = 60.0


def check_case(result: CaseResult) -> None:
    """Fail the test with the case's report (what, where, by how much, tolerance, rerun line)."""
    __tracebackhide__ = True
    if not result.passed:
        pytest.fail(result.report(), pytrace=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("syncbn", "syncbn-harness")
    group.addoption("--sut", default=None, help="implementation under test: 'torch' (default), "
                    "'package.module:factory' or 'path/to/file.py:factory' [env SYNCBN_SUT]")
    group.addoption("--kernels", default=None, help="module ('package.module' or 'path.py') providing substitutes "
                    "for any of the five batch_norm ops [env SYNCBN_KERNELS]")
    group.addoption("--profile", default=None, help="case profile: quick, default or thorough [env SYNCBN_PROFILE]")
    group.addoption("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT,
                    help="seconds a case may take before its ranks count as hung (default 60)")
    group.addoption("--backend", default=None, help="process-group backend: auto (default), gloo or nccl")
    group.addoption("--case", default=None, help="rerun exactly this case id (module or op level)")
    group.addoption("--json-results", default=None, metavar="PATH", help="write the structured results (JSON)")
    group.addoption("--html-report", default=None, metavar="PATH", help="write the HTML report of the run")


@dataclass(frozen=True)
class Options:
    sut: str
    kernels: str | None
    profile: str
    case_timeout: float
    backend: str | None
    case: str | None


def options(config: pytest.Config) -> Options:
    cached = getattr(config, "_syncbn_options", None)
    if cached is not None:
        return cached
    from cases.catalogue import check_profile

    sut = config.getoption("--sut") or os.environ.get("SYNCBN_SUT") or DEFAULT_SUT
    kernels = config.getoption("--kernels") or os.environ.get("SYNCBN_KERNELS") or None
    profile = config.getoption("--profile") or os.environ.get("SYNCBN_PROFILE") or DEFAULT_PROFILE
    try:
        check_profile(profile)
        load_factory(sut)  # fail fast in the controller, with a usage error, before any rank starts
        if kernels:
            from .torch_sut import load_kernel_overrides

            load_kernel_overrides(load_module(kernels))
        case = config.getoption("--case")
        if case:
            parse_any_id(case)
        timeout = config.getoption("--case-timeout")
        RunConfig(case_timeout=timeout)
    except CaseError as exc:
        raise pytest.UsageError(str(exc)) from None
    result = Options(sut, kernels, profile, timeout, config.getoption("--backend"), case or None)
    config._syncbn_options = result  # type: ignore[attr-defined]
    return result


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "known_deviation: a case where the SUT knowingly departs from SEMANTICS.md")
    config._syncbn_results = []  # type: ignore[attr-defined]
    options(config)  # a bad --sut / --profile / --case is a usage error before collection starts


def pytest_report_header(config: pytest.Config) -> list[str]:
    opts = options(config)
    return [f"syncbn-harness: sut={opts.sut} kernels={opts.kernels} profile={opts.profile} "
            f"case-timeout={opts.case_timeout:g}s backend={opts.backend or 'auto'}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from cases import catalogue

    opts = options(metafunc.config)
    if "module_case" in metafunc.fixturenames:
        cases: list[Any] = [] if opts.case else catalogue.module_cases(opts.profile, metafunc.module.AREA)
        metafunc.parametrize("module_case", _with_marks(cases, opts), ids=[c.id for c in cases])
    if "op_case" in metafunc.fixturenames:
        cases = [] if opts.case else catalogue.op_cases(opts.profile)
        metafunc.parametrize("op_case", _with_marks(cases, opts), ids=[c.id for c in cases])
    if "rerun_case" in metafunc.fixturenames:
        cases = [parse_any_id(opts.case)] if opts.case else []
        metafunc.parametrize("rerun_case", _with_marks(cases, opts), ids=[c.id for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Parametrizing with an empty list would leave skipped placeholders; drop them instead.
    items[:] = [item for item in items if "[NOTSET]" not in item.nodeid]


# -- known deviations ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownDeviation:
    """A reviewed entry of cases/known_deviations.toml: ``sut`` departs from SEMANTICS.md on ids matching ``case``."""

    sut: str
    case: str  # a regular expression searched in the case id
    reason: str
    link: str
    device: str | None = None

    def matches(self, sut: str, case_id: str) -> bool:
        device_ok = self.device is None or case_id.split("_")[16:17] == [self.device]
        return self.sut == sut and device_ok and re.search(self.case, case_id) is not None


def load_known_deviations(path: Path = KNOWN_DEVIATIONS) -> list[KnownDeviation]:
    if not path.exists():
        return []
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    entries = []
    for i, entry in enumerate(data.get("deviation", [])):
        missing = [k for k in ("sut", "case", "reason", "link") if not entry.get(k)]
        if missing:
            raise CaseError(f"{path.name}: deviation[{i}] lacks {missing}; every entry needs sut, case, reason, link")
        try:
            re.compile(entry["case"])
        except re.error as exc:
            raise CaseError(f"{path.name}: deviation[{i}].case={entry['case']!r} is not a regular expression: "
                            f"{exc}") from None
        entries.append(KnownDeviation(**entry))
    return entries


def _with_marks(cases: list[CaseSpec | OpSpec], opts: Options) -> list[Any]:
    deviations = load_known_deviations()
    marked = []
    for case in cases:
        match = next((d for d in deviations if d.matches(opts.sut, case.id)), None)
        if match is None:
            marked.append(case)
        else:
            marked.append(pytest.param(case, marks=[
                pytest.mark.known_deviation,
                pytest.mark.xfail(strict=True, reason=f"known deviation of {match.sut}: {match.reason} "
                                                      f"({match.link})")]))
    return marked


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def run_config(pytestconfig: pytest.Config) -> RunConfig:
    opts = options(pytestconfig)
    return RunConfig(sut=opts.sut, kernels=opts.kernels, backend=opts.backend, case_timeout=opts.case_timeout)


@pytest.fixture
def run_case(run_config: RunConfig, pytestconfig: pytest.Config):
    """Run a case with the session's configuration and keep its result for the reports."""

    def run(spec: CaseSpec | OpSpec) -> CaseResult:
        result = _run_case(spec, run_config)
        pytestconfig._syncbn_results.append(result)  # type: ignore[attr-defined]
        return result

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from .pool import default_manager

    default_manager().close_all()
