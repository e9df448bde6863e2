"""Momentum values including None (cumulative average) over at least 3 steps with new data each step."""
from harness.pytest_plugin import check_case

AREA = "momentum"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
