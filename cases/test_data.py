"""Large-offset data (mean far above the spread), constant channels, outliers, tiny and huge scales."""
from harness.pytest_plugin import check_case

AREA = "data"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
