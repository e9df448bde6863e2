"""Root conftest: this repository's own pytest. It always runs the conformance suite (cases/) beside the harness's
own tests (tests/), with the harness's plugins loaded here, and takes the options' short spellings (``--sut``,
``--profile``, ..., ``--json-results``, ``--html-report``) besides the ``--syncbn-*`` ones every installed harness
declares (harness.pytest_entry)."""
from harness.options import add_pytest_options

pytest_plugins = ["harness.pytest_entry", "harness.pytest_plugin", "harness.reports.pytest_reports"]
# harness/cases is a link to cases/ (the suite is the package harness.cases): collected once, as cases/.
collect_ignore = ["harness/cases"]


def pytest_addoption(parser):
    add_pytest_options(parser.getgroup("syncbn"), short=True)
