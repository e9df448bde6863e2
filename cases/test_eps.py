"""eps values, including data whose variance is near eps."""
from harness.pytest_plugin import check_case

AREA = "eps"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
