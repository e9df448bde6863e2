"""pytest plugin: --json-results PATH and --html-report PATH (options declared by harness.pytest_plugin).

Worker side (every process that runs tests, xdist worker or not): a hookwrapper on pytest_runtest_makereport turns
the case's CaseResult into a JSON-able record and attaches it to ``report.user_properties`` as
``("syncbn_case", record)``; pytest-xdist ships it to the controller with the report. Controller side:
pytest_runtest_logreport collects the records, pytest_sessionfinish writes the documents once, for all workers.
"""
from __future__ import annotations

import os
import shlex
from typing import Any

import pytest

from .results import build_document, case_record, environment, save_results

__all__ = ["PROPERTY", "PROPERTY_SUMMARY", "property_summary"]

PROPERTY = "syncbn_case"
PROPERTY_SUMMARY = "syncbn_property_test"
_CASE_FIXTURES = ("module_case", "op_case", "rerun_case")
_START = pytest.StashKey[int]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _case_spec(item: pytest.Item) -> Any:
    """The case an item runs: a module, op or rerun case, or any parameter that looks like one (id + to_dict)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in _CASE_FIXTURES:
        if name in params:
            return params[name]
    return next((v for v in params.values() if hasattr(v, "id") and hasattr(v, "to_dict")), None)


def _outcome(report: pytest.TestReport) -> tuple[str, str]:
    """(outcome as pytest saw it, xfail reason)."""
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return ("xfailed" if report.skipped else "xpassed"), str(wasxfail)
    text = str(report.longrepr) if report.failed else ""
    if text.startswith("[XPASS(strict)]"):
        return "xpassed", text[len("[XPASS(strict)]"):].strip()
    if report.when != "call" and report.failed:
        return "error", ""
    return report.outcome, ""


# -- worker side ----------------------------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_START] = len(getattr(item.config, "_syncbn_results", []))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report: pytest.TestReport = yield
    spec = _case_spec(item)
    if spec is None and report.when == "call":
        # A test that draws its own cases (hypothesis): a summary of its examples, and the example it failed on
        # (the last, shrunk one) as a case. Passing generated examples are not recorded as cases: their ids change
        # from run to run, so they would only add noise to the report and coverage losses to the gate.
        results = getattr(item.config, "_syncbn_results", [])[item.stash.get(_START, 0):]
        if results:
            report.user_properties.append((PROPERTY_SUMMARY, property_summary(item.nodeid, report.outcome,
                                                                              results)))
        failing = next((r for r in reversed(results) if not r.passed), None) if report.failed else None
        if failing is not None:
            from harness.pytest_plugin import options

            record = case_record(failing.spec, failing, outcome="failed", backend=options(item.config).backend,
                                 nodeid=item.nodeid)
            report.user_properties.append((PROPERTY, record))
        return report
    # The phase that decides the outcome: call, or setup/teardown when they fail (or skip, at setup).
    if spec is None or not (report.when == "call" or report.failed or (report.when == "setup" and report.skipped)):
        return report
    results = getattr(item.config, "_syncbn_results", [])[item.stash.get(_START, 0):]
    result = next((r for r in reversed(results) if r.spec.id == spec.id), None)
    outcome, reason = _outcome(report)
    from harness.pytest_plugin import options

    opts = options(item.config)
    longrepr = str(report.longrepr) if (report.failed and result is None) or outcome == "xpassed" else ""
    if report.skipped and not reason and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[-1])  # the skip reason
    rerun = "" if result is not None else _pytest_rerun(item, opts)
    record = case_record(spec, result, outcome=outcome, backend=opts.backend, xfail_reason=reason,
                         longrepr=longrepr, nodeid=item.nodeid, duration_s=report.duration, rerun=rerun)
    report.user_properties.append((PROPERTY, record))
    if result is not None and outcome == "failed":
        _pytest_html_extra(item.config, report, record)
    return report


def property_summary(nodeid: str, outcome: str, results: list[Any]) -> dict[str, Any]:
    """What a property test ran: how many examples, how many passed, and the closest passing call."""
    ratios = [(max((c.error_ratio for c in r.comparisons), default=0.0), r.spec.id) for r in results if r.passed]
    worst_ratio, worst_case = max(ratios) if ratios else (None, None)
    dtypes = sorted({getattr(r.spec, "dtype", "?") for r in results})
    return {"nodeid": nodeid, "outcome": outcome, "examples": len(results),
            "passed_examples": sum(r.passed for r in results), "dtypes": dtypes,
            "worst_passing_ratio": worst_ratio, "worst_passing_case": worst_case}


def _pytest_rerun(item: pytest.Item, opts: Any) -> str:
    """For a test that did not leave a CaseResult (so no harness rerun line): the pytest command for the item."""
    from harness.sut import DEFAULT_SUT

    parts = ["python", "-m", "pytest", item.nodeid]
    if opts.sut != DEFAULT_SUT:
        parts += ["--sut", opts.sut]
    for option, value in (("--kernels", opts.kernels), ("--backend", opts.backend),
                          ("--device", getattr(opts, "device", "cpu") if getattr(opts, "device", "cpu") != "cpu"
                           else None)):
        if value:
            parts += [option, value]
    return " ".join(shlex.quote(p) for p in parts)


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
def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config) and (config.getoption("--json-results") or config.getoption("--html-report")):
        config.pluginmanager.register(ResultsCollector(config), "syncbn-results-collector")


class ResultsCollector:
    """The controller's half: keeps the case records of every worker, writes the documents at session end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, dict[str, Any]] = {}  # nodeid -> case record
        self.properties: dict[str, dict[str, Any]] = {}  # nodeid -> property test summary
        self.written: list[tuple[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
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

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from harness.pytest_plugin import options

        config = self.config
        opts = options(config)
        cases = list(self.records.values())
        numprocesses = config.getoption("numprocesses", None)
        env = environment(sut=opts.sut, kernels=opts.kernels, profile=opts.profile, backend=opts.backend,
                          case=opts.case, cases=cases, workers=numprocesses if isinstance(numprocesses, int) else 0)
        document = build_document(cases, env, exit_status=int(exitstatus),
                                  property_tests=sorted(self.properties.values(), key=lambda p: p["nodeid"]))
        if json_path := config.getoption("--json-results"):
            self.written.append(("results", save_results(document, json_path)))
        if html_path := config.getoption("--html-report"):
            from .html import write_html

            self.written.append(("HTML report", write_html(document, html_path)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for what, path in self.written:
            terminalreporter.write_line(f"syncbn-harness {what}: {os.fspath(path)}")
