"""The pytest plugin as any project's pytest loads it: the ``pytest11`` entry point of the installed package.

    pytest --syncbn-sut my_bn.py:factory [--syncbn-profile quick] [--syncbn-report syncbn-report.html] ...
    SYNCBN_SUT=my_bn.py:factory pytest ...

It declares the options of harness.options as ``--syncbn-<option>`` and does nothing else until a run asks for the
conformance suite, by naming the implementation under test (``--syncbn-sut SPEC`` or the environment variable
``SYNCBN_SUT``). Then it loads the harness's plugins (harness.pytest_plugin, harness.reports.pytest_reports) and adds
the suite (the directory of the installed harness.cases) to what pytest collects, next to the project's own tests.
So a project that merely has the package installed runs its tests as before: this module imports no torch, and an
other ``--syncbn-*`` option without the SUT is a usage error rather than silently ignored.

``python -m harness run`` (harness.suite) loads it with ``-p`` and names the SUT on its command line. This
repository's own conftest.py loads the harness's plugins itself (its pytest always runs cases/), so then this module
only declares the options.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .options import OPTIONS, add_pytest_options, option
from .suite import SUITE

__all__ = ["PLUGINS"]

PLUGINS = ("harness.pytest_plugin", "harness.reports.pytest_reports")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_pytest_options(parser.getgroup("syncbn", "syncbn-harness: the SyncBatchNorm conformance suite, run when "
                                                 "--syncbn-sut (or SYNCBN_SUT) names the implementation under test"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if all(manager.has_plugin(name) for name in PLUGINS):  # this repository's conftest.py loaded them
        return
    sut = option("sut")
    if config.getoption(f"syncbn_{sut.name}") is None and not os.environ.get(sut.env or ""):
        given = [o.pytest_name for o in OPTIONS if config.getoption(f"syncbn_{o.name}") not in (None, False)]
        if given:
            raise pytest.UsageError(f"{given[0]}: the conformance suite runs only when {sut.pytest_name} SPEC (or "
                                    f"{sut.env}) names the implementation under test")
        return
    shared = not _selects_the_suite(config)
    if shared:  # the project's own tests run beside the suite (harness.pytest_plugin keeps the process theirs)
        from .pytest_plugin import SHARED_RUN

        config.stash[SHARED_RUN] = True
    for name in PLUGINS:  # each one's pytest_configure runs as it is registered, in this order
        manager.import_plugin(name)
    if shared:  # its node ids are relative to it: test_catalogue.py::test_case[<case id>]
        config.args.append(str(SUITE))


def _selects_the_suite(config: pytest.Config) -> bool:
    """Whether the run's arguments already name the suite or a part of it (``python -m harness run`` gives its
    directory; a user may give one of its modules): then only that runs, else the suite joins the project's tests."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == SUITE or SUITE in path.parents:
            return True
    return False
