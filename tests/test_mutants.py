"""The conformance suite catches the broken SyncBNs of harness.mutants and passes the independent correct ones."""
from __future__ import annotations

import pytest

from harness.catalogue import module_cases
from harness import mutants
from harness.kinds import run_case
from harness.result import RunConfig
from harness.spec import CaseSpec

# A small fixed subset: uneven shards with momentum None, an empty shard, eval after training.
SUBSET = [
    CaseSpec(shard_sizes=(3, 1, 2), channels=3, spatial=(3, 2), momentum=None, steps=3, eval_steps=1),
    CaseSpec(shard_sizes=(3, 0, 2), channels=3, spatial=(3, 2), steps=2, eval_steps=1),
    CaseSpec(shard_sizes=(5, 2, 1), channels=3, spatial=(2,), steps=2, eval_steps=1),
]


def _config(name: str) -> RunConfig:
    return RunConfig.of(sut=f"harness.mutants:{name}", case_timeout=30.0)


@pytest.mark.parametrize("name", ["no_sync", "mean_of_means", "biased_running_var", "no_backward_allreduce"])
def test_issue2_mutants_fail_the_suite(name):
    results = [run_case(case, _config(name)) for case in SUBSET]
    assert not all(r.passed for r in results), f"mutant {name} ({mutants.MUTANTS[name]}) passed every case"


@pytest.mark.parametrize("name", ["no_backward_allreduce"])
def test_mutant_failure_names_quantity(name):
    result = run_case(SUBSET[0], _config(name))
    assert not result.passed
    assert "grad_input" in result.report() and f"--sut harness.mutants:{name}" in result.report()


@pytest.mark.parametrize("name", sorted(mutants.CORRECT))
def test_correct_implementations_pass_quick_profile(name):
    failures = [r.report() for r in (run_case(case, _config(name)) for case in module_cases("quick"))
                if not r.passed]
    assert not failures, f"{len(failures)} case(s) failed:\n" + "\n\n".join(failures[:3])


def test_every_mutant_is_a_contract_factory():
    from harness.sut import load_factory

    for name in [*mutants.CORRECT, *mutants.MUTANTS]:
        assert callable(load_factory(f"harness.mutants:{name}"))
    assert len(mutants.MUTANTS) >= 15
    assert set(mutants.HANGING) <= set(mutants.MUTANTS)
