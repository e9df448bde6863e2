"""track_running_stats on and off over several steps."""
from harness.pytest_plugin import check_case

AREA = "running_stats"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
