"""The conformance suite catches the broken SyncBNs of harness.mutants and passes the independent correct ones."""
from __future__ import annotations

import pytest

from harness import mutants
from harness.kinds import run_case
from harness.kinds import RunConfig
from harness.spec import ModuleSpec

pytestmark = pytest.mark.processes  # every test here starts rank pools or subprocesses

# A small fixed subset: uneven shards with momentum None, an empty shard, eval after training.
SUBSET = [
    ModuleSpec(shard_sizes=(3, 1, 2), channels=3, spatial=(3, 2), momentum=None, steps=3, eval_steps=1),
    ModuleSpec(shard_sizes=(3, 0, 2), channels=3, spatial=(3, 2), steps=2, eval_steps=1),
    ModuleSpec(shard_sizes=(5, 2, 1), channels=3, spatial=(2,), steps=2, eval_steps=1),
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


# The correct implementations pass every case of the quick profile: tests/test_selftest.py (the selftest runs them
# on all of it, and fails naming the first case one of them fails).


def test_every_mutant_is_a_contract_factory():
    from harness.sut import load_factory

    for name in [*mutants.CORRECT, *mutants.MUTANTS, *mutants.COMPILED_MUTANTS]:
        assert callable(load_factory(f"harness.mutants:{name}"))
    assert len(mutants.MUTANTS) >= 15
    assert set(mutants.HANGING) <= set(mutants.MUTANTS)


# The four case dimensions the third-party SyncBNs slipped through, each with the mutant that reproduces the miss:
# (mutant, the case that must catch it, the quantity that shows it, a case of the old catalogue it passes).
_RANK_SPATIAL = ModuleSpec(shard_sizes=(3, 2), channels=3, rank_spatial=((4, 5), (2, 3)), steps=2, eval_steps=1)
_CONSTANT = ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(3, 2), data="constant", steps=2, eval_steps=1)
_EVEN_OFFSET = ModuleSpec(shard_sizes=(4, 4), channels=3, spatial=(3, 2), loc=100.0, steps=2, eval_steps=1)
_HALF_FAR = ModuleSpec(shard_sizes=(6, 5), channels=4, spatial=(5, 4), dtype="float16", loc=300.0, scale=100.0,
                     steps=2, eval_steps=1)
NEW_DIMENSIONS = [
    ("count_by_batch_size", _RANK_SPATIAL, "output", _RANK_SPATIAL.replace(rank_spatial=None, spatial=(4, 5))),
    ("variance_floor", _CONSTANT, "grad_input", _CONSTANT.replace(data="normal")),
    ("naive_variance_f32", _EVEN_OFFSET, "output", _EVEN_OFFSET.replace(loc=0.0)),
    ("squares_in_half", _HALF_FAR, "output", _HALF_FAR.replace(loc=0.0, scale=1.0)),
]


@pytest.mark.parametrize(("name", "case", "quantity", "harmless"), NEW_DIMENSIONS, ids=[n for n, *_ in NEW_DIMENSIONS])
def test_new_dimension_catches_its_mutant_which_other_data_does_not(name, case, quantity, harmless):
    """Each mutant is caught by its case (the root failure is ``quantity``), and passes the same case without the
    case's dimension (equal spatial sizes, a non-constant channel, no offset, data near 0)."""
    from harness.selftest import first_failure

    result = run_case(case, _config(name))
    assert not result.passed, f"{name} passed {case.id}"
    assert first_failure(result).startswith(quantity + " "), first_failure(result)
    assert run_case(harmless, _config(name)).passed, f"{name} failed {harmless.id}: it should need the dimension"
