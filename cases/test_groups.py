"""process_group subgroups: statistics are shared only inside the group given."""
from harness.pytest_plugin import check_case

AREA = "groups"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
