"""``python -m harness selftest``: reports each mutant as caught (by which case and quantity) and the catch rate."""
from __future__ import annotations

import re

from harness import cli
from harness.mutants import CORRECT, MUTANTS
from harness.selftest import ordered_cases, run_mutant
from harness.spec import CaseSpec


def test_quick_selftest_catches_every_mutant_and_passes_the_correct_ones(capsys):
    """The quick selftest, in CI: every mutant of the catalogue caught, no false failure of a correct SyncBN."""
    code = cli.main(["selftest", "--profile", "quick", "--case-timeout", "10"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(rf"^catch rate: {len(MUTANTS)}/{len(MUTANTS)} mutants caught \(100%\)", out, re.M), out
    for name in CORRECT:
        assert re.search(rf"^PASS    {name}: correct implementation passed all cases", out, re.M), out
    for name in MUTANTS:  # by a comparison ("output at train0, rank 1") or a failure ("rank(s) [0] did not ...")
        assert re.search(rf"^CAUGHT  {name} \(.*\) by case w\d+_\S+: \S+", out, re.M), out


def test_selftest_rejects_unknown_names(capsys):
    assert cli.main(["selftest", "--only", "no_such_mutant"]) == 2
    assert "unknown name" in capsys.readouterr().out


def test_a_correct_implementation_is_not_caught():
    cases = [CaseSpec(shard_sizes=(3, 0, 2), channels=3, spatial=(3, 2), steps=2, eval_steps=1)]
    outcome = run_mutant("allreduce_syncbn", cases, correct=False, case_timeout=30.0)
    assert not outcome.ok and outcome.cases_run == 1 and not outcome.failed


def test_cases_ordered_cheap_discriminating_first():
    cases = ordered_cases("quick")
    assert cases[0].tags[0] == "momentum"
    assert len({c.id for c in cases}) == len(cases)
