"""What a property test tried (harness.strategies.PropertyTally): the minimum of judged examples, the region the SUT
declared unsupported, the line a report shows."""
from __future__ import annotations

from harness.spec import ModuleSpec
from harness.strategies import MIN_JUDGED_EXAMPLES, PropertyTally, minimum_judged

FOUR_D = ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(3, 2), steps=1)
FIVE_D = FOUR_D.replace(spatial=(2, 2, 2))


def test_the_minimum_is_ten_judged_examples_or_every_one_asked():
    assert MIN_JUDGED_EXAMPLES == 10
    assert [minimum_judged(n) for n in (1, 3, 10, 25, 300)] == [1, 3, 10, 10, 10]


def test_a_test_below_its_minimum_is_not_exercised_and_says_why():
    tally = PropertyTally(25, region={"5-D input"})
    assert tally.avoids(FIVE_D) and not tally.avoids(FOUR_D)
    for _ in range(9):
        tally.judged_example(FOUR_D, passed=True)
    tally.unsupported, tally.avoided, tally.deviation = 4, 30, 2
    assert not tally.exercised and tally.outcome == "not exercised"
    assert tally.text() == ("9 of 25 examples judged (minimum 10; 9 with a synchronised training step); 4 declared "
                            "unsupported, 30 drawn in the region declared unsupported (5-D input), 2 known "
                            "deviations, not run")
    tally.judged_example(FOUR_D.replace(shard_sizes=(3,)), passed=True)  # world size 1: nothing synchronised
    assert tally.exercised and tally.outcome == "passed" and tally.synced == 9
    tally.failed = True
    assert tally.outcome == "failed"
    record = tally.record()
    assert record["judged_examples"] == 10 and record["minimum_judged"] == 10 and record["avoided_features"] == [
        "5-D input"]


def test_features_the_sut_names_are_avoided_from_then_on_but_never_a_whole_kind():
    tally = PropertyTally(5)
    assert not tally.avoids(FIVE_D)
    tally.declared(["5-D input", "module cases", "no such feature"])
    assert tally.region == {"5-D input"} and tally.avoids(FIVE_D) and not tally.avoids(FOUR_D)
    for _ in range(5):
        tally.unsupported += 1
    assert tally.budget_spent  # as many declared-unsupported runs as examples asked: the rest are not run
