"""Edge rules: a global count of 1 raises, every shard empty leaves the running statistics unchanged."""
from harness.pytest_plugin import check_case

AREA = "errors"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
