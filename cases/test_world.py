"""World sizes 1 to 4 (8 in thorough), one process group of every rank."""
from harness.pytest_plugin import check_case

AREA = "world"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
