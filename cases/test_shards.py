"""Even, uneven, empty, single-sample shards and one rank holding the whole batch."""
from harness.pytest_plugin import check_case

AREA = "shards"


def test_module(module_case, run_case):
    check_case(run_case(module_case))
