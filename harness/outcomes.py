"""The outcomes a case can have, in one table: what each is called, where it counts, whether it fails the run.

Every place that names outcomes reads this table: the results document (harness.reports.results), the verdict and its
counts (harness.verdict, harness.diagnosis), the conformance table's columns (harness.features), the regression
gate (harness.reports.gate), the HTML report (harness.reports.html) and the torchrun launcher (harness.launch).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Outcome", "OUTCOMES", "OUTCOME_NAMES", "FAILING", "FAILURES", "JUDGED", "outcome", "COLUMNS"]


@dataclass(frozen=True)
class Outcome:
    name: str  # as recorded: "passed", "xfailed", ...
    label: str  # how a count of them reads: "3 known deviations"
    column: str | None  # the conformance table's column it counts in (None: in none, it did not run)
    fails_run: bool  # a case with this outcome makes the run FAILED
    failure: bool  # the case itself failed (its ranks or comparisons): listed among the failed cases
    judged: bool  # the implementation's results were compared (a pass, a failure, a known deviation)
    gate_rank: int  # the gate keeps a case's worst outcome over repeated runs: the highest rank
    description: str


OUTCOMES: tuple[Outcome, ...] = (
    Outcome("passed", "passed", "passing", False, False, True, 0, "every comparison within its tolerance"),
    Outcome("failed", "failed", "failing", True, True, True, 4, "a comparison or a rank failed"),
    Outcome("compile_failed", "compile failures", "failing", True, True, False, 4,
            "torch.compile could not compile the implementation (--compile): the error's first line and where"),
    Outcome("error", "errors", "failing", True, True, True, 5,
            "the case could not run (a fixture or the harness broke)"),
    Outcome("xfailed", "known deviations", "known deviation", False, False, True, 1,
            "failed as a reviewed known deviation documents (harness/known_deviations.toml)"),
    Outcome("xpassed", "known deviations passed", "failing", True, False, True, 3,
            "a known deviation no longer reproduces: the entry must be updated"),
    Outcome("unsupported", "unsupported", "unsupported", False, False, False, 2,
            "declared unsupported by the implementation (harness.sut.Unsupported)"),
    Outcome("skipped", "skipped", None, False, False, False, 2, "not run (e.g. a CUDA case without a GPU)"),
)
OUTCOME_NAMES = tuple(o.name for o in OUTCOMES)
FAILING = tuple(o.name for o in OUTCOMES if o.fails_run)
FAILURES = tuple(o.name for o in OUTCOMES if o.failure)
JUDGED = tuple(o.name for o in OUTCOMES if o.judged)
COLUMNS = ("passing", "failing", "known deviation", "unsupported")  # the conformance table's, in order
_BY_NAME = {o.name: o for o in OUTCOMES}


def outcome(name: str) -> Outcome:
    """The table's entry of ``name``; an unknown outcome (a foreign document) counts as an error."""
    return _BY_NAME.get(name, _BY_NAME["error"])
