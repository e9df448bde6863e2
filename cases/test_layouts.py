"""channels_last and channels_last_3d inputs give the values of contiguous ones."""
from harness.pytest_plugin import check_case

AREA = "layouts"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
