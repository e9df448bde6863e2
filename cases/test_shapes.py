"""Inputs (N,C), (N,C,L), (N,C,H,W), (N,C,D,H,W) with 1 to 7 channels."""
from harness.pytest_plugin import check_case

AREA = "shapes"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
