"""float64 and float32 on CPU."""
from harness.pytest_plugin import check_case

AREA = "dtypes"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
