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

    for name in [*mutants.CORRECT, *mutants.MUTANTS, *mutants.COSTLIER, *mutants.COMBINED, *mutants.COMPILED_MUTANTS]:
        assert callable(load_factory(f"harness.mutants:{name}"))
    assert len(mutants.MUTANTS) >= 15
    assert set(mutants.HANGING) <= set(mutants.MUTANTS)
    for name, parts in mutants.COMBINED_PARTS.items():  # independent: no two parts override the same hook
        hooks = [{h for h in vars(mutants._MUTANT_CLASSES[part][0]) if h.startswith("_") and not h.startswith("__")}
                 for part in parts]
        assert all(not (a & b) for i, a in enumerate(hooks) for b in hooks[i + 1:]), (name, hooks)


# The four case dimensions the third-party SyncBNs slipped through, each with the mutant that reproduces the miss:
# (mutant, the case that must catch it, the quantity that shows it, a case of the old catalogue it passes).
_RANK_SPATIAL = ModuleSpec(shard_sizes=(3, 2), channels=3, rank_spatial=((4, 5), (2, 3)), steps=2, eval_steps=1)
_CONSTANT = ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(3, 2), data="constant", steps=2, eval_steps=1)
_EVEN_OFFSET = ModuleSpec(shard_sizes=(4, 4), channels=3, spatial=(3, 2), loc=100.0, steps=2, eval_steps=1)
_HALF_FAR = ModuleSpec(shard_sizes=(6, 5), channels=4, spatial=(5, 4), dtype="float16", loc=300.0, scale=100.0,
                     steps=2, eval_steps=1)
NEW_DIMENSIONS = [
    # Each rank counts with its own spatial size: their running_mean differ (an agreement root, shown first as an exact
    # check: "running_mean on rank 1 differs from rank 0's"), and the output is wrong (a root too).
    ("count_by_batch_size", _RANK_SPATIAL, "running_mean", _RANK_SPATIAL.replace(rank_spatial=None, spatial=(4, 5))),
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


_EVAL_AFTER_TRAINING = ModuleSpec(shard_sizes=(3, 1, 2), channels=3, spatial=(3, 2), steps=2, eval_steps=1)


def _roots_and_knock_ons(name: str):
    from harness.verdict import roots_and_knock_ons
    from harness.reports.results import case_record

    result = run_case(_EVAL_AFTER_TRAINING, _config(name))
    assert not result.passed, f"{name} passed {_EVAL_AFTER_TRAINING.id}"
    groups, knock_ons = roots_and_knock_ons(case_record(_EVAL_AFTER_TRAINING, result, outcome="failed"))
    return [g[0]["quantity"] for g in groups], knock_ons


def test_a_biased_running_var_is_the_root_of_the_eval_gradients():
    """biased_running_var: running_var is the only root; eval's output and gradients (grad_weight included), computed
    from the running_var carried from training, are its knock-ons (harness.quantities computed_from)."""
    roots, knock_ons = _roots_and_knock_ons("biased_running_var")
    assert roots == ["running_var"]
    (folded,) = knock_ons.values()
    assert {("grad_weight", "eval0"), ("grad_input", "eval0"), ("output", "eval0")} <= \
        {(c["quantity"], c["phase"]) for c in folded}


def test_ranks_that_hold_different_running_var_are_a_root():
    """local_running_var (each rank updates running_var with its own variance): the ranks' disagreement is a root
    of its own, not folded under running_var or the output."""
    roots, knock_ons = _roots_and_knock_ons("local_running_var")
    assert roots[0] == "running_var.agreement" and "running_var" in roots
    assert not any(c["quantity"].endswith(".agreement") for folded in knock_ons.values() for c in folded)


# Issue 21: a mutant per defect class the catalogue missed before, each with the tag of the DEFAULT-profile case that
# must catch it, the quantity that shows it, and the same case without the boundary or dimension (what the catalogue
# had before), which it passes. The quick selftest (tests/test_selftest.py) leaves the boundary classes out by design;
# this is their default-profile catch, run on the one case each instead of the whole profile.
def _default_case(tags: tuple[str, ...], dtype: str | None) -> ModuleSpec:
    """The default profile's first case tagged exactly ``tags`` (in ``dtype`` if given)."""
    from harness.catalogue import module_cases

    return next(c for c in module_cases("default") if c.tags == tags and dtype in (None, c.dtype))


_WITHOUT = {  # the case minus its dimension
    "large_count": dict(spatial=(1024,)),  # 2048 and 1024 values per channel: whole blocks of 1024 and 2048
    "many_channels": dict(channels=512),  # (count, sum) of 512 channels: one bucket of 1024 elements
    "vector_tail": dict(channels=40),  # a multiple of 8: no remainder
    "big_world": dict(shard_sizes=(2, 1, 0, 3)),  # one node of 4 ranks
    "step_shards": dict(step_shard_sizes=None),
    "interleaved": dict(interleave_eval=False),
    "frozen": dict(frozen_affine=False),
    "no_grad": dict(no_grad=False),
}
BOUNDARY_MUTANTS = [
    ("tail_block_dropped", ("boundaries", "large_count"), "float32", "output"),
    ("float64_partials_in_float32", ("boundaries", "large_count"), "float64", "output"),
    ("bucket_tail_unreduced", ("boundaries", "many_channels"), None, "running_mean"),  # the tail stays local
    ("channels_last_vector_tail", ("boundaries", "vector_tail"), None, "output"),
    ("nodes_floored", ("boundaries", "big_world"), None, "output"),
    ("count_captured_once", ("steps", "step_shards"), None, "output"),
    ("eval_advances_step_counter", ("steps", "interleaved"), None, "running_mean"),
    ("frozen_weight_ignored", ("steps", "frozen"), None, "grad_input"),
    ("no_grad_skips_sync", ("steps", "no_grad"), None, "running_mean"),  # the ranks' buffers disagree: a root
]


@pytest.mark.parametrize(("name", "tags", "dtype", "quantity"), BOUNDARY_MUTANTS, ids=[m[0] for m in BOUNDARY_MUTANTS])
def test_default_profile_catches_each_new_defect_class_that_its_case_needs(name, tags, dtype, quantity):
    from harness.selftest import caught_from, first_failure

    case = _default_case(tags, dtype)
    assert caught_from(name, "default")
    result = run_case(case, _config(name))
    assert not result.passed, f"{name} passed {case.id}"
    assert first_failure(result).startswith(quantity + " "), first_failure(result)
    harmless = case.replace(**_WITHOUT[tags[1]])
    assert run_case(harmless, _config(name)).passed, f"{name} failed {harmless.id}: it should need the dimension"
