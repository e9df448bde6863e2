"""The pytest side of the harness: the catalogue as parametrized tests, known deviations, the run fixture.

Loaded by harness.pytest_entry when a run asks for the suite (a project's own pytest, ``python -m harness run``),
or by this repository's root conftest.py. Options come from harness.options (the same table the CLI and the
torchrun launcher read; harness.pytest_entry declares them). ``cases/test_catalogue.py`` runs every case of every
registered kind (harness.kinds) through the ``catalogue_case`` parameter: the profile's cases on ``--device`` (op
cases only when kernels are under test: harness.kinds.selected), or exactly ``--case ID``; ``--area NAMES``
selects areas by their exact names (harness.catalogue.in_areas: ``--area eps`` is not ``tiny_eps``). Known
deviations (harness.deviations) run as strict expected failures.

The controller (the pytest process, or the xdist controller) checks the run before collecting anything
(harness.suite.preflight: a problem is a pytest usage error) and turns SIGTERM into KeyboardInterrupt, so a
terminated run ends like a Ctrl-C: pytest's session finish runs and the reports say the run is incomplete.

Where the session is the suite's (``python -m harness run``, this repository's pytest), the pytest process runs with
TF32 off and one torch thread. Where the suite joins a project's own pytest run (harness.pytest_entry), that
project's tests keep the process as they found it: TF32 is off around each case only (``run_case``), one thread is
not imposed, and the property tests' hypothesis settings apply to them alone (``hypothesis_settings``), always.
"""
from __future__ import annotations

import signal
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest

from .catalogue import in_areas
from .deviations import (KNOWN_DEVIATIONS, KnownDeviation, all_profile_case_ids, known_defect,
                         load_known_deviations, match_deviation, unmatched_deviations)
from .errors import CaseError
from .kinds import case_for_id, catalogue_cases, parse_case_id, selected
from .kinds import RunConfig
from .kinds import run_case as _run_case
from .options import OPTIONS, Options, resolve
from .result import CaseResult
from .suite import SUITE, SUITE_PLUGIN, preflight
from .sut import built_on

__all__ = ["check_case", "SessionState", "session_state", "options", "NEEDS_CUDA", "cuda_available",
           "warn_unmatched_deviations", "SHARED_RUN", "hypothesis_settings", "CompileFailed"]

NEEDS_CUDA = "needs CUDA: torch.cuda.is_available() is False on this machine (run with a GPU, see docs/gpu.md)"


@dataclass
class SessionState:
    """What the harness keeps per pytest session (in ``config.stash``): the options and every case result."""

    options: Options
    results: list[CaseResult] = field(default_factory=list)
    # The known deviation of each collected case (None: none), matched once, at collection.
    deviations: dict[str, KnownDeviation | None] = field(default_factory=dict)
    built_on: str | None = None  # the SUT whose code the SUT declares it is built on (harness.sut.built_on)
    properties: dict[str, Any] = field(default_factory=dict)  # node id -> PropertyTally (harness.strategies)
    terminated: bool = False  # the controller received SIGTERM (and ended the run as interrupted)
    finishing: bool = False  # the session is finishing: a SIGTERM now no longer interrupts it
    previous_sigterm: Any = None  # the SIGTERM handler to restore at unconfigure


_STATE = pytest.StashKey[SessionState]()
# Set by harness.pytest_entry when it adds the suite to a project's own pytest run (other tests share the process).
SHARED_RUN = pytest.StashKey[bool]()
_HYPOTHESIS_PROFILE = "syncbn-ci"  # the property tests' hypothesis profile (this process's latest session)


def session_state(config: pytest.Config) -> SessionState:
    return config.stash[_STATE]


def options(config: pytest.Config) -> Options:
    return session_state(config).options


class CompileFailed(Exception):
    """A case whose torch.compile failed (--compile): not a ``pytest.fail``, so that the strict xfail of a known
    deviation (which expects ``pytest.fail``'s exception, ``raises=``) never takes it for the deviation."""


def check_case(result: CaseResult) -> None:
    """Fail the test with the case's report (root causes first, the rerun line last). A case the SUT declares
    unsupported is skipped with its reason, or fails under --strict-features. A case under a known deviation judged
    after the run (quantity-scoped, or inherited by a SUT built on torch: harness.deviations) is an expected
    failure when it fails as documented (strict: an XPASS when it passes, except an inherited one). A case whose
    compile failed fails as such, known deviation or not."""
    __tracebackhide__ = True
    if result.compile_failed:
        raise CompileFailed(result.report())
    if result.unsupported and not result.failures:
        pytest.skip(f"unsupported by the implementation under test: {result.unsupported}")
    deviation = result.deviation
    if deviation is not None:
        outcome = deviation.outcome(result)
        if outcome == "xfailed":
            pytest.xfail(deviation.title)
        if outcome == "xpassed":
            pytest.fail(f"[XPASS(strict)] {deviation.title}: the known deviation no longer reproduces; "
                        f"update harness/known_deviations.toml", pytrace=False)
        if outcome == "failed":
            pytest.fail(result.report() + f"\n(the known deviation covers only {', '.join(deviation.quantities or ())}"
                        f": {deviation.title})", pytrace=False)
        return
    if not result.passed:
        pytest.fail(result.report(), pytrace=False)


def _raw_options(config: pytest.Config) -> dict[str, Any]:
    return {opt.name: config.getoption(f"syncbn_{opt.name}") for opt in OPTIONS}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "known_deviation: a case where the SUT knowingly departs from the spec")
    config.addinivalue_line("markers", "property: hypothesis property test over generated cases")
    config.addinivalue_line("markers", "processes: starts processes (the conformance cases start rank pools)")
    given = config.pluginmanager.get_plugin(SUITE_PLUGIN) if not _is_worker(config) else None
    try:
        if given is not None:  # a command (python -m harness run, gate) resolved and checked them already
            resolved = given.options
        else:
            resolved = resolve(_raw_options(config))
            if _is_worker(config):
                if resolved.case:
                    parse_case_id(resolved.case)
            else:  # fail fast in the controller, with a usage error, before any rank starts
                preflight(resolved)
    except CaseError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        base = built_on(resolved.sut, option=resolved.spelled("sut"))
    except CaseError as exc:
        raise pytest.UsageError(str(exc)) from None
    state = config.stash[_STATE] = SessionState(resolved, built_on=base)
    if not _is_worker(config) and threading.current_thread() is threading.main_thread():
        state.previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_handler(state))
    from .strategies import register_hypothesis_profile

    global _HYPOTHESIS_PROFILE
    _HYPOTHESIS_PROFILE = register_hypothesis_profile(resolved.profile, resolved.property_examples)
    if not config.stash.get(SHARED_RUN, False):  # the session is the suite's: its settings for the whole process
        import torch

        from .tf32 import set_tf32

        set_tf32(False)
        torch.set_num_threads(1)  # the controller's tensors are tiny; more threads only contend with the ranks


def hypothesis_settings():
    """The property tests' hypothesis settings (``@hypothesis_settings()`` above ``@given``): the profile of the
    run's --profile and --property-examples (harness.strategies), applied to those tests alone, so the hypothesis
    tests of a project whose pytest runs the suite keep their own."""
    from hypothesis import settings

    return settings.get_profile(_HYPOTHESIS_PROFILE)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _sigterm_handler(state: SessionState):
    """SIGTERM as Ctrl-C, once: a later SIGTERM, or one while the session finishes, is noted and ignored, so the
    reports get written."""

    def handle(signum: int, frame: Any) -> None:
        if state.terminated or state.finishing:
            state.terminated = True
            return
        state.terminated = True
        raise KeyboardInterrupt("SIGTERM")

    return handle


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.previous_sigterm is not None:
        signal.signal(signal.SIGTERM, state.previous_sigterm)
        state.previous_sigterm = None


def pytest_report_header(config: pytest.Config) -> list[str]:
    opts = options(config)
    return [f"syncbn-harness: sut={opts.sut} kernels={opts.kernels} profile={opts.profile} device={opts.device} "
            f"backend={opts.backend} case-timeout={opts.case_timeout:g}s start-timeout={opts.start_timeout:g}s"
            + (" strict-features" if opts.strict_features else "")
            + (f" compile={opts.compile}" if opts.compile != "off" else "")
            + (" strict-compile" if opts.strict_compile else "")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "catalogue_case" not in metafunc.fixturenames:
        return
    state = session_state(metafunc.config)
    opts = state.options
    cases = [case_for_id(opts.case)] if opts.case else in_areas(
        selected(catalogue_cases(opts.profile, opts.device), opts), opts.area)
    metafunc.parametrize("catalogue_case", _with_marks(cases, state), ids=[c.id for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("catalogue_case")
        if case is not None:
            item.extra_keyword_matches.update(case.tags)  # pytest's -k matches them too (by substring)
        if case is not None or item.get_closest_marker("property") is not None:
            item.add_marker(pytest.mark.processes)  # every case runs on rank processes
    if options(config).case or options(config).area:  # exactly that case, those areas: no property tests besides
        items[:] = [item for item in items if "catalogue_case" in getattr(item, "fixturenames", ())
                    or item.path.resolve().parent != SUITE]
    warn_unmatched_deviations()


def warn_unmatched_deviations(path=KNOWN_DEVIATIONS) -> list:
    """A pytest warning for each known deviation that matches no case of any profile; returns those entries."""
    unmatched = unmatched_deviations(load_known_deviations(path), all_profile_case_ids())
    for d in unmatched:
        warnings.warn(pytest.PytestWarning(f"{path.name}: known deviation for sut={d.sut!r} with {d.pattern} "
                                           f"matches no case of any profile (stale or mistyped?)"), stacklevel=2)
    return unmatched


def _with_marks(cases: list[Any], state: SessionState) -> list[Any]:
    """The cases as pytest parameters, each with its known deviation (matched here, once, and kept in ``state``) as
    marks: a strict xfail, or a mark only when the deviation is scoped to quantities (judged after the run)."""
    deviations = load_known_deviations()
    marked = []
    for case in cases:
        if case.device == "cuda" and not cuda_available():
            marked.append(pytest.param(case, marks=[pytest.mark.skip(reason=NEEDS_CUDA)]))
            continue
        match = state.deviations[case.id] = match_deviation(deviations, state.options.sut, case.id,
                                                            state.options.compile, built_on=state.built_on)
        if match is None:
            marked.append(case)
        elif match.judged_after_run:  # check_case: only these quantities may fail; an inherited one may pass
            marked.append(pytest.param(case, marks=[pytest.mark.known_deviation]))
        else:  # a short reason on the XFAIL line; the report carries the whole story. A compile failure is what
            # an entry of the compiler's expects, and never what another entry excuses (check_case: CompileFailed).
            expected = (pytest.fail.Exception, CompileFailed) if match.of_the_compiler else pytest.fail.Exception
            marked.append(pytest.param(case, marks=[pytest.mark.known_deviation, pytest.mark.xfail(
                strict=True, reason=match.title, raises=expected)]))
    return marked


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="session")
def run_config(pytestconfig: pytest.Config) -> RunConfig:
    return RunConfig(options(pytestconfig))


@pytest.fixture
def run_case(run_config: RunConfig, pytestconfig: pytest.Config):
    """Run a case with the session's configuration and keep its result for the reports. TF32 is off while the test
    runs (float32 yardsticks and references at full precision, harness.tf32), as it was after."""
    from .tf32 import tf32_mode

    def run(spec: Any) -> CaseResult:
        state = session_state(pytestconfig)
        result = _run_case(spec, run_config)
        deviation = state.deviations.get(spec.id)  # matched at collection (a generated case has none)
        if deviation is not None and deviation.judged_after_run:
            result.deviation = deviation
        if deviation is None or (deviation.judged_after_run and deviation.outcome(result) == "failed"):
            result.known_defect = known_defect(load_known_deviations(), state.options.sut, result,
                                               state.options.compile)
        state.results.append(result)
        return result

    with tf32_mode(False):
        yield run


@pytest.fixture
def property_example(run_case, pytestconfig: pytest.Config, request: pytest.FixtureRequest):
    """One example of a property test (cases/test_property.py): run the drawn case, unless it is a known
    deviation of the SUT or lies in the region the SUT declared unsupported (hypothesis then draws another), and
    keep the test's PropertyTally (harness.strategies) for its summary and its verdict (``pytest_pyfunc_call``)."""
    from hypothesis import note, reject

    from .strategies import PropertyTally, steering_region

    state = session_state(pytestconfig)
    opts = state.options
    tally = state.properties[request.node.nodeid] = PropertyTally(hypothesis_settings().max_examples)
    tally.region.update(steering_region(state.results, opts.sut))
    deviations = load_known_deviations()

    def check(case: Any) -> None:
        __tracebackhide__ = True
        if opts.device == "cuda":
            if not cuda_available():
                pytest.skip(NEEDS_CUDA)
            case = case.replace(device="cuda")
        if match_deviation(deviations, opts.sut, case.id, opts.compile, built_on=state.built_on) is not None:
            tally.deviation += 1
            reject()
        if tally.avoids(case):
            tally.avoided += 1
            reject()
        if tally.budget_spent:
            tally.unrun += 1
            return
        note(f"case id: {case.id}")
        result = run_case(case)
        if result.unsupported and not result.failures:
            tally.unsupported += 1
            tally.declared(result.unsupported_features)
            reject()  # declared unsupported (harness.sut.Unsupported): not an example; hypothesis draws another
        tally.judged_example(case, result.passed)
        if not result.passed:
            tally.failed = True
            report = result.report()
            note(report)
            raise AssertionError(report)

    return check


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """A property test (one that uses ``property_example``) that judged fewer examples than its minimum is "not
    exercised" (harness.strategies): skipped with its tally, not passed, and not a failure (hypothesis's
    Unsatisfiable, every example rejected, included)."""
    if "property_example" not in pyfuncitem.fixturenames:
        return (yield)
    from hypothesis.errors import Unsatisfiable

    try:
        outcome = yield
    except Unsatisfiable:
        outcome = True
    tally = session_state(pyfuncitem.config).properties.get(pyfuncitem.nodeid)
    if tally is not None and not tally.failed and not tally.exercised:
        pytest.skip(f"not exercised: {tally.text()}")
    return outcome


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is not None:
        state.finishing = True
    from .pool import default_manager

    default_manager().close_all()  # a pool busy with an interrupted case: its ranks are killed at once
