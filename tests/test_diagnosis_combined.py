"""One line per independent defect (harness.diagnosis): a SUT with several defects reads as several lines, each with
the condition under which that defect shows, never one it does not show.

Synthetic documents plant defects on known conditions (fast); the combined SUTs of harness.mutants (two and three
independent mutants in one SyncBN) run on a small grid of cases (the ``processes`` tests). Each root line's claimed
condition must select exactly the cases where the defect is (the truth, known from the mutant's bug class), among
the cases where its quantity was checked."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from harness.compare import Tolerance, compare_arrays, compare_exact
from harness.diagnosis import case_attributes, diagnose
from harness.kinds import RunConfig, run_case
from harness.result import CaseResult
from harness.spec import ModuleSpec
from harness.reports.results import build_document, case_record


def _roots(document: dict) -> dict[tuple[str, ...], dict]:
    """The module kind's root findings, by their roots."""
    kind = next(f for f in diagnose(document) if f["role"] == "kind" and f["text"].startswith("module"))
    return {tuple(f["data"]["roots"]): f for f in kind["children"] if f["role"] == "root"}


def _claimed(finding: dict, cases: list[dict]) -> set[str]:
    """The ids of the cases the root line's condition selects, among the cases where its quantity was checked."""
    condition = finding["data"]["condition"]
    checked = [c for c in cases if c["id"] in _checked_ids(finding, cases)]
    if condition["kind"] == "everywhere":
        return {c["id"] for c in checked}
    assert condition["kind"] in ("every", "pair"), condition
    values = condition["values"] if condition["kind"] == "pair" else condition["values"][:1]
    return {c["id"] for c in checked if set(values) <= set(case_attributes(c))}


def _checked_ids(finding: dict, cases: list[dict]) -> set[str]:
    roots = set(finding["data"]["roots"])
    ids = set()
    for case in cases:
        quantities = {c["quantity"] for c in case["comparisons"]}
        kinds = {f["kind"] for f in case["failures"]}
        if roots & quantities or ("collectives.sequence" in roots and "collectives" in kinds) or (
                "error" in roots and kinds & {"missing_error", "wrong_error"}):
            ids.add(case["id"])
    return ids


def _consistent(finding: dict, cases: list[dict]) -> None:
    """The counts a root line states are the document's: no line claims more than the evidence shows."""
    data = finding["data"]
    failed = set(data["failed_cases"])
    assert len(failed) == data["failed"] or data["failed"] > 20
    condition = data["condition"]
    if condition.get("significant") and condition["kind"] in ("every", "pair"):
        claimed = _claimed(finding, cases)
        assert failed <= claimed, (finding["text"], failed - claimed)
        assert len(claimed) == data["failed"], finding["text"]  # no case it selects passed


# -- synthetic: defects planted on known conditions --------------------------------------------------------------------
def _synthetic_cases() -> list[ModuleSpec]:
    grid = itertools.product(((3, 3), (4, 2), (3, 1, 2), (2, 2, 2), (5, 1)), (0.1, None),
                             (("contiguous", (3, 2)), ("channels_last", (3, 2)), ("contiguous", (4,))))
    return [ModuleSpec(shard_sizes=shards, channels=2, spatial=spatial, layout=layout, momentum=momentum, seed=i)
            for i, (shards, momentum, (layout, spatial)) in enumerate(grid)]


def _cmp(quantity: str, failed: bool, rank: int = 0):
    expected = np.linspace(1.0, 2.0, 4)
    return compare_arrays(expected + (0.5 if failed else 0.0), expected, Tolerance(1e-3, 0.0, "test", 1.0),
                          quantity=quantity, phase="train0", rank=rank, ranks=(rank,), dtype="float32")


def _document(specs, defects, noise=None) -> dict:
    records = []
    for spec in specs:
        comparisons = [_cmp("output", defects["output"](spec)), _cmp("grad_input", defects["output"](spec)),
                       _cmp("grad_bias", defects["grad_bias"](spec)), _cmp("running_mean", False),
                       compare_exact(0 if defects["num_batches_tracked"](spec) else 1, 1,
                                     quantity="num_batches_tracked", phase="train0", rank=0, ranks=(0,),
                                     dtype="int64", reason="+1 per training forward")]
        if noise is not None:
            comparisons.append(_cmp("running_var", noise(spec)))
        result = CaseResult(spec, comparisons=comparisons, rerun="rerun")
        records.append(case_record(spec, result, outcome="passed" if result.passed else "failed"))
    return json.loads(json.dumps(build_document(records, {"sut": "x"})))


PLANTED = {  # quantity -> the condition it fails under
    "output": lambda s: len(set(s.shard_sizes)) > 1,
    "num_batches_tracked": lambda s: s.momentum is None,
    "grad_bias": lambda s: s.layout == "channels_last",
}


def test_three_planted_defects_read_as_three_lines_each_with_its_condition():
    specs = _synthetic_cases()
    document = _document(specs, PLANTED)
    roots = _roots(document)
    assert set(roots) == {("output",), ("num_batches_tracked",), ("grad_bias",)}, list(roots)
    by_id = {s.id: s for s in specs}
    for (quantity,), finding in roots.items():
        truth = {case_id for case_id, spec in by_id.items() if PLANTED[quantity](spec)}
        assert finding["data"]["condition"]["kind"] == "every" and finding["data"]["condition"]["significant"]
        assert _claimed(finding, document["cases"]) == truth, finding["text"]
        assert "every one with " in finding["text"], finding["text"]
        _consistent(finding, document["cases"])
    # grad_input fails wherever output does, computed from it: folded under output, never a line of its own.
    assert any(c["text"].startswith("knock-ons folded under it: grad_input ") for c in roots[("output",)]["children"])


def test_a_root_failing_at_random_claims_no_condition():
    """running_var fails in a random half of the cases (seeded): whatever it shares with them is chance, and the
    line says that no case parameter sets them apart (the planted defects keep their lines)."""
    rng = random.Random(7)
    unlucky = {s.id for s in _synthetic_cases() if rng.random() < 0.5}
    document = _document(_synthetic_cases(), PLANTED, noise=lambda s: s.id in unlucky)
    roots = _roots(document)
    noise = roots[("running_var",)]
    assert not noise["data"]["condition"]["significant"], noise["text"]
    assert "every one with" not in noise["text"] and "in every case" not in noise["text"]
    assert {("output",), ("num_batches_tracked",), ("grad_bias",)} <= set(roots)
    for finding in roots.values():
        _consistent(finding, document["cases"])


# -- live: the combined SUTs of harness.mutants ------------------------------------------------------------------------
def _grid(shards, **axes) -> list[ModuleSpec]:
    names = list(axes)
    return [ModuleSpec(shard_sizes=s, channels=2, spatial=(2,), seed=i, **dict(zip(names, values)))
            for i, (s, *values) in enumerate(itertools.product(shards, *axes.values()))]


def _run(sut: str, specs: list[ModuleSpec]) -> dict:
    config = RunConfig.of(sut=f"harness.mutants:{sut}", case_timeout=30.0)
    records = []
    for spec in specs:
        result = run_case(spec, config)
        records.append(case_record(spec, result, outcome="passed" if result.passed else "failed"))
    return json.loads(json.dumps(build_document(records, {"sut": sut})))


def _truth(document: dict, predicate) -> set[str]:
    return {c["id"] for c in document["cases"] if predicate(ModuleSpec.from_dict(c["params"]))}


@pytest.mark.processes
def test_two_mutants_two_lines_counter_and_even_shards():
    """no_batch_count: num_batches_tracked wrong in every training case (eval-only cases pass it);
    assumes_even_shards: output wrong where the element counts of a group differ, in training."""
    specs = _grid([(3, 3), (4, 2), (2, 2, 2), (3, 1, 2)], momentum=(0.1, None), dtype=("float32", "float64"))
    specs += _grid([(3, 3), (4, 2), (3, 1, 2)], steps=(0,), eval_steps=(1,), momentum=(0.1, None))
    document = _run("counter_and_even_shards", specs)
    roots = _roots(document)
    # Ranks that count their group differently also hold different running statistics: the agreement checks, roots
    # of their own, fail in exactly the output's cases and share its line.
    assert len(roots) == 2 and ("num_batches_tracked",) in roots, [f["text"] for f in roots.values()]
    counter = roots[("num_batches_tracked",)]
    output = next(f for key, f in roots.items() if "output" in key)
    assert set(output["data"]["roots"]) <= {"output", "running_mean.agreement", "running_var.agreement"}
    assert _claimed(counter, document["cases"]) == _truth(document, lambda s: s.steps > 0)
    assert _claimed(output, document["cases"]) == _truth(document, lambda s: s.steps > 0
                                                         and len(set(s.shard_sizes)) > 1), output["text"]
    for finding in roots.values():
        assert finding["data"]["condition"]["significant"], finding["text"]
        _consistent(finding, document["cases"])


@pytest.mark.processes
def test_three_mutants_three_lines_momentum_grads_and_count_one():
    """momentum_none_ignored: running_mean and running_var wrong where momentum is None (one line: the same cases);
    param_grads_reduced: the parameter gradients wrong where a group has several ranks; count_one_no_error: no
    error where the group's count is 1."""
    specs = _grid([(3, 3), (4, 2), (2, 2, 2), (4,)], momentum=(0.1, None), dtype=("float32", "float64"))
    specs += [ModuleSpec(shard_sizes=(1,), channels=2, spatial=(), seed=50 + i, momentum=m)
              for i, m in enumerate((0.1, None))]
    document = _run("momentum_grads_and_count_one", specs)
    roots = _roots(document)
    running = next(f for key, f in roots.items() if "running_mean" in key)
    assert set(running["data"]["roots"]) == {"running_mean", "running_var"}
    assert _claimed(running, document["cases"]) == _truth(document, lambda s: s.momentum is None
                                                          and s.rank_count(0) > 1)
    grads = [f for key, f in roots.items() if set(key) & {"grad_weight", "grad_bias"}]
    assert grads and all(_claimed(f, document["cases"]) == _truth(document, lambda s: s.world_size > 1)
                         for f in grads), [f["text"] for f in grads]
    error = roots[("error",)]
    assert _claimed(error, document["cases"]) == _truth(document, lambda s: s.rank_count(0) == 1)
    assert set().union(*roots) <= {"running_mean", "running_var", "grad_weight", "grad_bias", "error"}, list(roots)
    for finding in roots.values():
        _consistent(finding, document["cases"])


@pytest.mark.processes
def test_three_mutants_three_lines_empty_skip_half_gather_and_count_one():
    """empty_skips_collective: the ranks' collectives differ (named in seconds) where an empty rank sits beside ranks
    with data; half_gather: statistics exchanged in float16 wherever ranks exchange any; count_one_no_error."""
    specs = _grid([(3, 3), (3, 0), (4, 2), (0, 3, 2), (2, 2, 2), (2, 0, 2)], momentum=(0.1, None),
                  dtype=("float32", "float64"))
    specs += [ModuleSpec(shard_sizes=(1,), channels=2, spatial=(), seed=60)]
    document = _run("empty_skip_half_gather_and_count_one", specs)
    roots = _roots(document)
    sequence, error = roots[("collectives.sequence",)], roots[("error",)]
    precision = next(f for key, f in roots.items() if "collectives.precision" in key)
    assert _claimed(sequence, document["cases"]) == _truth(document, lambda s: 0 in s.shard_sizes)
    assert "never entered" in sequence["children"][-1]["text"], sequence["children"]
    assert _claimed(precision, document["cases"]) == _truth(document, lambda s: s.world_size > 1
                                                            and 0 not in s.shard_sizes)
    assert _claimed(error, document["cases"]) == _truth(document, lambda s: s.rank_count(0) == 1)
    assert set().union(*roots) <= {"collectives.sequence", "collectives.precision", "error", "output"}, list(roots)
    for finding in roots.values():
        _consistent(finding, document["cases"])
