"""pytest plugin: --json-results PATH and --html-report PATH (options of harness.options, declared by
harness.pytest_plugin).

Worker side (every process that runs tests, xdist worker or not): a hookwrapper on pytest_runtest_makereport turns
the case's CaseResult into a JSON-able record and attaches it to ``report.user_properties`` as
``("syncbn_case", record)``; pytest-xdist ships it to the controller with the report. Controller side:
pytest_runtest_logreport collects the records, pytest_sessionfinish writes the documents once, for all workers.

Incomplete runs. The controller knows what was selected (its own collection, or with xdist the workers'). A run
that was interrupted (Ctrl-C; SIGTERM, which harness.pytest_plugin turns into Ctrl-C) or that left a selected
test without a result (a worker lost, -x, --maxfail) is *incomplete*: its documents say so (``"status":
"incomplete"``, with the reason, how many tests ran and which did not). It never reads as passed: if it saw a
failure, it is FAILED and pytest's exit status is TESTS_FAILED (1: a failure is the stronger verdict, the run can
never become green); if not, the status becomes INTERRUPTED (2), which ``python -m harness run`` reports as 3.
The documents' ``exit_status`` is the harness's exit code (harness.options: 0, 1, 2, 3).
An incomplete run's documents replace whatever was at their paths, a complete run's included: a file at a path
describes the latest run, and says that it is incomplete.
"""
from __future__ import annotations

import os
import re
from typing import Any

import pytest

from harness.options import rerun_command
from harness.outcomes import FAILING
from harness.verdict import was_tested
from harness.suite import exit_code_from_pytest
from harness.pytest_plugin import options, session_state


from .results import build_document, case_record, environment, save_results

__all__ = ["PROPERTY", "PROPERTY_SUMMARY", "property_summary"]

PROPERTY = "syncbn_case"
PROPERTY_SUMMARY = "syncbn_property_test"
_START = pytest.StashKey[int]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _case_spec(item: pytest.Item) -> Any:
    """The case an item runs (the catalogue test's parameter), or None."""
    return getattr(getattr(item, "callspec", None), "params", {}).get("catalogue_case")


def _outcome(report: pytest.TestReport, result: Any) -> str:
    """The outcome as pytest saw it; a skip because the SUT declared the case unsupported is "unsupported"."""
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return "xfailed" if report.skipped else "xpassed"
    if report.failed and str(report.longrepr).startswith("[XPASS(strict)]"):
        return "xpassed"
    if report.when != "call" and report.failed:
        return "error"
    if report.failed and result is not None and result.compile_failed:
        return "compile_failed"
    if report.skipped and result is not None and result.unsupported and not result.failures:
        return "unsupported"
    return report.outcome


# -- worker side ----------------------------------------------------------------------------------------------------
def _results(item: pytest.Item) -> list[Any]:
    return session_state(item.config).results[item.stash.get(_START, 0):]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_START] = len(session_state(item.config).results)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report: pytest.TestReport = yield
    spec = _case_spec(item)
    if spec is None and report.when == "call":
        # A test that draws its own cases (hypothesis): a summary of its examples, and the example it failed on
        # (the last, shrunk one) as a case. Passing generated examples are not recorded as cases: their ids change
        # from run to run, so they would only add noise to the report and coverage losses to the gate.
        results = _results(item)
        tally = session_state(item.config).properties.get(item.nodeid)
        if results or tally is not None:
            outcome = report.outcome
            if report.skipped and "not exercised" in str(report.longrepr):
                outcome = "not exercised"
            report.user_properties.append((PROPERTY_SUMMARY, property_summary(item.nodeid, outcome, results,
                                                                              tally)))
        failing = next((r for r in reversed(results) if not r.passed), None) if report.failed else None
        if failing is not None:
            outcome = "compile_failed" if failing.compile_failed else "failed"
            record = case_record(failing.spec, failing, outcome=outcome, backend=options(item.config).backend_choice,
                                 nodeid=item.nodeid, sut=options(item.config).sut)
            report.user_properties.append((PROPERTY, record))
        return report
    # The phase that decides the outcome: call, or setup/teardown when they fail (or skip, at setup).
    if spec is None or not (report.when == "call" or report.failed or (report.when == "setup" and report.skipped)):
        return report
    result = next((r for r in reversed(_results(item)) if r.spec.id == spec.id), None)
    outcome = _outcome(report, result)
    opts = options(item.config)
    longrepr = str(report.longrepr) if (report.failed and result is None) or outcome == "xpassed" else ""
    reason = ""
    if outcome in ("xfailed", "xpassed"):  # the whole story; the XFAIL line carries only the summary
        deviation = session_state(item.config).deviations.get(spec.id)
        reason = f"{deviation.reason} ({deviation.link})" if deviation else str(getattr(report, "wasxfail", ""))
        if deviation is not None and deviation.inherited_by:
            reason = f"known deviation of {deviation.sut} (inherited: the SUT is built on {deviation.sut}): {reason}"
    elif report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[-1])  # the skip reason
    rerun = "" if result is not None else rerun_command(spec.id, opts)
    record = case_record(spec, result, outcome=outcome, backend=opts.backend_choice, xfail_reason=reason,
                         longrepr=longrepr, nodeid=item.nodeid, duration_s=report.duration, rerun=rerun,
                         sut=opts.sut)
    report.user_properties.append((PROPERTY, record))
    if result is not None and outcome == "failed":
        _pytest_html_extra(item.config, report, record)
    return report


def property_summary(nodeid: str, outcome: str, results: list[Any], tally: Any = None) -> dict[str, Any]:
    """What a property test ran: how many examples, how many passed, the closest passing call, and (``tally``,
    harness.strategies.PropertyTally) how many were judged, declared unsupported or not run, and why."""
    ratios = [(max((c.error_ratio for c in r.comparisons), default=0.0), r.spec.id) for r in results if r.passed]
    worst_ratio, worst_case = max(ratios) if ratios else (None, None)
    dtypes = sorted({getattr(r.spec, "dtype", "?") for r in results})
    return {"nodeid": nodeid, "outcome": outcome, "examples": len(results),
            "passed_examples": sum(r.passed for r in results), "dtypes": dtypes,
            "worst_passing_ratio": worst_ratio, "worst_passing_case": worst_case,
            **(tally.record() if tally is not None else {})}


def _pytest_html_extra(config: pytest.Config, report: pytest.TestReport, record: dict[str, Any]) -> None:
    """With pytest-html installed, the same per-failure detail as the harness report, as an extra."""
    if not config.pluginmanager.hasplugin("html"):
        return
    try:
        from pytest_html import extras  # type: ignore[import-not-found]

        from .html import case_fragment
    except ImportError:
        return
    report.extras = [*getattr(report, "extras", []), extras.html(case_fragment(record))]


# -- controller side ------------------------------------------------------------------------------------------------
@pytest.hookimpl(trylast=True)  # after harness.pytest_plugin's, which resolves the options
def pytest_configure(config: pytest.Config) -> None:
    opts = options(config)
    if not _is_worker(config) and (opts.json or opts.report):
        config.pluginmanager.register(ResultsCollector(config), "syncbn-results-collector")


class ResultsCollector:
    """The controller's half: keeps the case records of every worker, knows what was selected and what reported,
    writes the documents at session end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, dict[str, Any]] = {}  # nodeid -> case record
        self.properties: dict[str, dict[str, Any]] = {}  # nodeid -> property test summary
        self.selected: dict[str, None] = {}  # node ids collected and selected (an ordered set)
        self.finished: set[str] = set()  # node ids whose outcome is known
        self.lost: list[str] = []  # what xdist said about a worker lost while running a test
        self.document: dict[str, Any] | None = None  # what sessionfinish wrote
        self.interrupt: str | None = None  # what interrupted the session (KeyboardInterrupt's message), if anything
        self.written: list[tuple[str, Any]] = []
        self.problems: list[str] = []

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.interrupt = str(excinfo.value)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected.update(dict.fromkeys(item.nodeid for item in session.items))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.selected.update(dict.fromkeys(ids))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "???":  # pytest-xdist: the worker running this test died
            self.lost.append(str(report.longrepr))
        elif report.when == "call" or (report.when == "setup" and not report.passed):
            self.finished.add(report.nodeid)
        for name, record in getattr(report, "user_properties", ()):
            if name == PROPERTY_SUMMARY:
                self.properties[record["nodeid"]] = record
            if name != PROPERTY:
                continue
            previous = self.records.get(record["nodeid"])
            if previous is not None and record["outcome"] == "error" and previous["outcome"] != "error":
                previous["outcome"] = "error"  # a teardown error after the call: keep the call's comparisons
                previous["failures"] = previous["failures"] + record["failures"]
            else:
                self.records[record["nodeid"]] = record

    def incomplete(self, session: pytest.Session, exitstatus: int) -> dict[str, Any] | None:
        """{reason, cases_run, cases_selected, not_run} when the run did not run every selected test, else None.
        Counts are of selected tests (catalogue cases and property tests); ``not_run`` lists case ids (node ids
        for tests that are not catalogue cases)."""
        not_run = [nodeid for nodeid in self.selected if nodeid not in self.finished]
        interrupted = int(exitstatus) == int(pytest.ExitCode.INTERRUPTED)
        if not (interrupted or not_run):
            return None
        reasons = []
        if session_state(self.config).terminated:
            reasons.append("terminated (SIGTERM)")
        elif interrupted:  # Ctrl-C; pytest-xdist's own stops (-x, a worker interrupted) carry a message
            reasons.append(f"interrupted ({self.interrupt or 'Ctrl-C'})")
        if isinstance(session.shouldfail, str) and session.shouldfail:
            reasons.append(f"stopped early: {session.shouldfail}")
        reasons += self.lost
        if not reasons:
            reasons.append(f"{len(not_run)} selected test(s) reported no result")
        return {"reason": "; ".join(reasons), "cases_run": len(self.selected) - len(not_run),
                "cases_selected": len(self.selected), "not_run": [_case_id(n) for n in not_run]}

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = self.config
        opts = options(config)
        incomplete = self.incomplete(session, exitstatus)
        cases = list(self.records.values())
        if incomplete:  # never a pass: a run that saw a failure exits 1 (it can never become green), else 3
            failed = any(c["outcome"] in FAILING for c in cases) or any(
                p["outcome"] == "failed" for p in self.properties.values())
            session.exitstatus = pytest.ExitCode.TESTS_FAILED if failed else pytest.ExitCode.INTERRUPTED
        elif self.selected and not was_tested({"cases": cases, "property_tests": list(self.properties.values()),
                                                "environment": {"kernels": opts.kernels}}):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # nothing under test was judged: nothing was tested
        numprocesses = config.getoption("numprocesses", None)
        from harness.tf32 import tf32_mode

        with tf32_mode(False):  # recorded as the cases ran (harness.pytest_plugin's run_case), in a shared run too
            env = environment(sut=opts.sut, kernels=opts.kernels, profile=opts.profile, backend=opts.backend,
                              case=opts.case, cases=cases, workers=numprocesses if isinstance(numprocesses, int)
                              else 0, strict_features=opts.strict_features, compile=opts.compile,
                              strict_compile=opts.strict_compile)
        document = build_document(cases, env, exit_status=exit_code_from_pytest(session.exitstatus),
                                  property_tests=sorted(self.properties.values(), key=lambda p: p["nodeid"]),
                                  incomplete=incomplete)
        self.document = document
        outputs = [("results", opts.json, save_results), ("HTML report", opts.report, _write_report)]
        for what, path, write in outputs:
            if not path:
                continue
            try:
                self.written.append((what, write(document, path)))
            except OSError as exc:
                self.problems.append(f"could not write the {what} to {path}: {exc.strerror or exc}")
                if session.exitstatus == pytest.ExitCode.OK:
                    session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        hidden = {path for plugin in self.config.pluginmanager.get_plugins()
                  for path in getattr(plugin, "syncbn_unannounced", ())}
        for what, path in self.written:
            if os.path.abspath(path) not in hidden:
                terminalreporter.write_line(f"syncbn-harness {what}: {os.fspath(path)}")
        for line in self.problems:
            terminalreporter.write_line(f"syncbn-harness: {line}", red=True)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """The verdict block, after everything pytest prints (its failures, its short summary, its count): the
        verdict, the diagnosis, the conformance table, the failed cases by severity, and the verdict again as the
        very last line, which is what a CI log's tail shows."""
        document = self.document
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if document is None or terminal is None:
            return
        from harness.diagnosis import run_summary_lines
        from harness.verdict import verdict_of

        lines = run_summary_lines(document)
        terminal.write_sep("=", "syncbn-harness summary")
        for line in lines:
            terminal.write_line(line)
        word = verdict_of(document)
        if document["status"] == "incomplete":
            info = document["incomplete"]
            done = "FAILED, and the run did not complete" if word == "FAILED" else "INCOMPLETE"
            terminal.write_line(
                f"syncbn-harness: {done}: {info['cases_run']} of {info['cases_selected']} selected tests ran, "
                f"{len(info['not_run'])} did not ({info['reason']})", red=True, bold=True)
        else:
            terminal.write_line(lines[0], bold=True, red=word != "PASSED", green=word == "PASSED")


_CATALOGUE_NODE = re.compile(r"::test_case\[(.+)\]$")


def _case_id(nodeid: str) -> str:
    """The case id of a catalogue test's node id (the id ``--case`` takes); other node ids as they are."""
    match = _CATALOGUE_NODE.search(nodeid)
    return match.group(1) if match else nodeid


def _write_report(document: dict[str, Any], path: str) -> Any:
    """The HTML report, written atomically (a run killed while writing leaves the previous file)."""
    from .html import write_html

    return write_html(document, path)
