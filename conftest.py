"""Root conftest: the repository is used from its checkout; the harness's pytest plugin does the work."""
pytest_plugins = ["harness.pytest_plugin", "harness.reports.pytest_reports"]
# harness/cases is a link to cases/ (the suite is the package harness.cases): collected once, as cases/.
collect_ignore = ["harness/cases"]
