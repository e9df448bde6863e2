"""eval() from loaded buffers and after training; local batch statistics when not tracking."""
from harness.pytest_plugin import check_case

AREA = "eval"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
