"""Each of the five ops (batch_norm_stats, ..._gather_stats_with_counts, ..._elemt, ..._backward_reduce,
..._backward_elemt) against its numpy reference."""
from harness.pytest_plugin import check_case


def test_op(op_case, run_case):
    check_case(run_case(op_case))
