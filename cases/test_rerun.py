"""Reruns exactly one case named by ``--case ID`` (module or op level); selected only when --case is given."""
from harness.pytest_plugin import check_case


def test_case(rerun_case, run_case):
    check_case(run_case(rerun_case))
