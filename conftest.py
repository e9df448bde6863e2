"""Root conftest: the repository is used from its checkout; the harness's pytest plugin does the work."""
pytest_plugins = ["harness.pytest_plugin", "reports.pytest_reports"]
