"""The conformance suite: every case of the catalogue (harness.catalogue), all kinds (module, op, model), each id
once, on --device; or exactly --case ID. ``--area NAMES`` selects areas (world, shards, ..., ops, models)."""
from harness.pytest_plugin import check_case


def test_case(catalogue_case, run_case):
    check_case(run_case(catalogue_case))
