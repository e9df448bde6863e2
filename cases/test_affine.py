"""affine on and off (random weight and bias, never ones and zeros), with and without running stats."""
from harness.pytest_plugin import check_case

AREA = "affine"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
