"""The pytest side of the harness: options, case parametrization, known deviations, and the run fixture.

Loaded by the root conftest.py. Options (each also read from an environment variable, the option winning):
--sut SPEC (SYNCBN_SUT), --kernels SPEC (SYNCBN_KERNELS), --profile P (SYNCBN_PROFILE), --case-timeout S,
--backend B, --case ID (rerun exactly one case).
"""
from __future__ import annotations

import functools
import os
import re
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from .errors import CaseError
from .runner import CaseResult, RunConfig
from .runner import run_case as _run_case
from .spec import CaseSpec, OpSpec, parse_any_id
from .sut import DEFAULT_SUT, load_factory, load_module

__all__ = ["check_case", "KnownDeviation", "load_known_deviations", "NEEDS_CUDA", "cuda_available",
           "DEVIATION_CONDITIONS"]

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
    group.addoption("--device", default=None, choices=("cpu", "cuda", "auto"),
                    help="cpu (default), cuda (the CUDA variant of every case plus the CUDA-only cases; skipped "
                    "without a GPU) or auto (cuda when torch.cuda.is_available()) [env SYNCBN_DEVICE]")
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
    device: str = "cpu"


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
    device = resolve_device(config.getoption("--device") or os.environ.get("SYNCBN_DEVICE") or "cpu")
    result = Options(sut, kernels, profile, timeout, config.getoption("--backend"), case or None, device)
    config._syncbn_options = result  # type: ignore[attr-defined]
    return result


def resolve_device(device: str) -> str:
    """'cpu', 'cuda', or 'auto' (cuda when torch.cuda.is_available(), else cpu)."""
    if device not in ("cpu", "cuda", "auto"):
        raise pytest.UsageError(f"--device={device!r}: must be cpu, cuda or auto")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "known_deviation: a case where the SUT knowingly departs from SEMANTICS.md")
    config._syncbn_results = []  # type: ignore[attr-defined]
    options(config)  # a bad --sut / --profile / --case is a usage error before collection starts
    config.addinivalue_line("markers", "property: hypothesis property test over generated cases")
    from .strategies import load_hypothesis_profile

    load_hypothesis_profile(options(config).profile)
    import torch

    torch.set_num_threads(1)  # the controller's tensors are tiny; more threads only contend with the ranks


def pytest_report_header(config: pytest.Config) -> list[str]:
    opts = options(config)
    return [f"syncbn-harness: sut={opts.sut} kernels={opts.kernels} profile={opts.profile} "
            f"case-timeout={opts.case_timeout:g}s backend={opts.backend or 'auto'} device={opts.device}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from cases import catalogue

    opts = options(metafunc.config)
    if "module_case" in metafunc.fixturenames:
        cases: list[Any] = [] if opts.case else catalogue.device_cases(opts.profile, metafunc.module.AREA,
                                                                             opts.device)
        metafunc.parametrize("module_case", _with_marks(cases, opts), ids=[c.id for c in cases])
    if "op_case" in metafunc.fixturenames:
        cases = [] if opts.case else catalogue.device_op_cases(opts.profile, opts.device)
        metafunc.parametrize("op_case", _with_marks(cases, opts), ids=[c.id for c in cases])
    if "rerun_case" in metafunc.fixturenames:
        cases = [parse_any_id(opts.case)] if opts.case else []
        metafunc.parametrize("rerun_case", _with_marks(cases, opts), ids=[c.id for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Parametrizing with an empty list would leave skipped placeholders; drop them instead.
    items[:] = [item for item in items if "[NOTSET]" not in item.nodeid]
    if options(config).case:  # --case ID runs exactly that case: no catalogue, property or model tests besides
        cases_dir = Path(__file__).resolve().parent.parent / "cases"
        items[:] = [item for item in items if "rerun_case" in getattr(item, "fixturenames", ())
                    or cases_dir not in Path(str(item.path)).parents]
    warn_unmatched_deviations()


# -- known deviations ---------------------------------------------------------------------------------------------
def _synced_groups(spec: CaseSpec) -> list[tuple[int, ...]]:
    """The process groups that communicate: 2 ranks or more, and at least one training step (SyncBatchNorm only
    synchronises in training; eval, with or without running statistics, stays local)."""
    return [g for g in spec.rank_groups if len(g) >= 2] if spec.steps >= 1 else []


def _group_count(spec: CaseSpec, group: tuple[int, ...]) -> int:
    return sum(spec.shard_sizes[r] for r in group) * spec.elements_per_sample


_HALF = ("float16", "bfloat16")
# Named conditions a known deviation can require of a case (``condition = "..."``), for the rules a regular
# expression over the id cannot state, such as "within some process group". Module cases only.
DEVIATION_CONDITIONS: dict[str, Callable[[CaseSpec], bool]] = {
    "empty_group": lambda s: any(all(s.shard_sizes[r] == 0 for r in g) for g in _synced_groups(s)),
    "group_count_one": lambda s: any(_group_count(s, g) == 1 for g in _synced_groups(s)),
    "half_input_empty_shard": lambda s: s.dtype in _HALF and any(
        any(s.shard_sizes[r] == 0 for r in g) for g in _synced_groups(s)),
    "half_input_no_running_stats": lambda s: s.dtype in _HALF and not s.track_running_stats
    and bool(_synced_groups(s)),
    "float16_module_count_over_65504": lambda s: s.effective_param_dtype == "float16" and any(
        _group_count(s, g) > 65504 for g in _synced_groups(s)),
}


@functools.lru_cache(maxsize=4096)
def _module_spec(case_id: str) -> CaseSpec | None:
    try:
        spec = parse_any_id(case_id)
    except (CaseError, ValueError, KeyError):
        return None  # a model case or another id the conditions do not apply to
    return spec if isinstance(spec, CaseSpec) else None


@dataclass(frozen=True)
class KnownDeviation:
    """A reviewed entry of cases/known_deviations.toml: ``sut`` departs from SEMANTICS.md on the case ids matching
    ``case`` (a regular expression, searched) and ``condition`` (a name in DEVIATION_CONDITIONS), when given."""

    sut: str
    reason: str
    link: str
    case: str | None = None
    condition: str | None = None
    device: str | None = None
    aborts: bool = False  # the deviation kills a rank's process: pools contain that, torchrun cannot (launch skips)

    def matches(self, sut: str, case_id: str) -> bool:
        if self.sut != sut:
            return False
        if self.device is not None and self.device not in case_id.split("_"):  # module and op ids alike
            return False
        if self.case is not None and re.search(self.case, case_id) is None:
            return False
        if self.condition is not None:
            spec = _module_spec(case_id)
            return spec is not None and DEVIATION_CONDITIONS[self.condition](spec)
        return True

    @property
    def pattern(self) -> str:
        return " and ".join(f"{k}={v!r}" for k, v in (("case", self.case), ("condition", self.condition)) if v)


def load_known_deviations(path: Path = KNOWN_DEVIATIONS) -> list[KnownDeviation]:
    if not path.exists():
        return []
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    entries = []
    fields = {"sut", "case", "condition", "reason", "link", "device", "aborts"}
    for i, entry in enumerate(data.get("deviation", [])):
        where = f"{path.name}: deviation[{i}]"
        missing = [k for k in ("sut", "reason", "link") if not entry.get(k)]
        if missing or not (entry.get("case") or entry.get("condition")):
            raise CaseError(f"{where} lacks {missing or ['case or condition']}; every entry needs sut, reason, "
                            f"link, and a case pattern, a condition or both")
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise CaseError(f"{where} has unknown field(s) {unknown}; allowed: {sorted(fields)}")
        if entry.get("case"):
            try:
                re.compile(entry["case"])
            except re.error as exc:
                raise CaseError(f"{where}.case={entry['case']!r} is not a regular expression: {exc}") from None
        if entry.get("condition") and entry["condition"] not in DEVIATION_CONDITIONS:
            raise CaseError(f"{where}.condition={entry['condition']!r}: must be one of "
                            f"{sorted(DEVIATION_CONDITIONS)}")
        if not isinstance(entry.get("aborts", False), bool):
            raise CaseError(f"{where}.aborts={entry['aborts']!r}: must be true or false")
        if entry.get("device") not in (None, "cpu", "cuda"):
            raise CaseError(f"{where}.device={entry['device']!r}: must be 'cpu' or 'cuda' (or absent)")
        entries.append(KnownDeviation(**entry))
    return entries


def unmatched_deviations(deviations: list[KnownDeviation], case_ids: set[str]) -> list[KnownDeviation]:
    """Entries matching no case id (of any SUT): stale or mistyped, so each one is warned about."""
    return [d for d in deviations if not any(d.matches(d.sut, case_id) for case_id in case_ids)]


def all_profile_case_ids() -> set[str]:
    """Every case id of every profile, on every device (module and op cases)."""
    from cases import catalogue

    ids: set[str] = set()
    for profile in catalogue.PROFILES:
        for device in ("cpu", "cuda"):
            ids.update(c.id for c in catalogue.device_cases(profile, device=device))
            ids.update(c.id for c in catalogue.device_op_cases(profile, device))
    return ids


def warn_unmatched_deviations(path: Path = KNOWN_DEVIATIONS) -> list[KnownDeviation]:
    """A pytest warning for each known deviation that matches no case of any profile; returns those entries."""
    unmatched = unmatched_deviations(load_known_deviations(path), all_profile_case_ids())
    for d in unmatched:
        warnings.warn(pytest.PytestWarning(f"{path.name}: known deviation for sut={d.sut!r} with {d.pattern} "
                                           f"matches no case of any profile (stale or mistyped?)"), stacklevel=2)
    return unmatched


def _with_marks(cases: list[CaseSpec | OpSpec], opts: Options) -> list[Any]:
    deviations = load_known_deviations()
    marked = []
    for case in cases:
        if case.device == "cuda" and not cuda_available():
            marked.append(pytest.param(case, marks=[pytest.mark.skip(reason=NEEDS_CUDA)]))
            continue
        match = next((d for d in deviations if d.matches(opts.sut, case.id)), None)
        if match is None:
            marked.append(case)
        else:
            marked.append(pytest.param(case, marks=[
                pytest.mark.known_deviation,
                pytest.mark.xfail(strict=True, reason=f"known deviation of {match.sut}: {match.reason} "
                                                      f"({match.link})")]))
    return marked


NEEDS_CUDA = "needs CUDA: torch.cuda.is_available() is False on this machine (run with a GPU, see docs/gpu.md)"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


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
