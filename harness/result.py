"""What running a case produced: every comparison, every failure that is not a comparison, and how to rerun it.

``CaseResult`` is one case's outcome; ``Failure`` is a problem that is not a numeric comparison (a rank raised,
crashed or hung; a required error was not raised; the SUT declared the case unsupported; the compiler failed), with
the rank it concerns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .compare import Comparison
from .errors import RankError

__all__ = ["CaseResult", "Failure", "FAILURE_KINDS"]

# Failure kinds, in the order a reader needs them: the cause before its consequences.
FAILURE_KINDS = ("crashed", "stalled", "compile", "raised", "wrong_error", "missing_error", "collectives", "hung",
                 "missing_result", "harness", "unsupported", "graph_break", "peer")
_COMPILE_STAGE = "compile"  # harness.rank.compiled.COMPILE_STAGE: a RankError the compiler raised


@dataclass
class Failure:
    """A failure that is not a numeric comparison. ``kind``: crashed (the process died), stalled (stopped
    answering), compile (torch.compile failed: the "compile failed" outcome), raised (an exception the
    specification does not require), wrong_error / missing_error (a required error not raised as required),
    collectives (ranks waited in a collective a member of their group never entered: harness.collectives.deadlock),
    hung (waited past the case timeout, alive), missing_result, harness (the harness itself broke), unsupported
    (declared by the SUT), graph_break (a graph break under --strict-compile), peer (a rank failing because another
    one did: connection closed by a crashed peer)."""

    kind: str
    message: str
    rank: int | None = None
    phase: str = ""
    traceback: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"Failure.kind={self.kind!r}: must be one of {FAILURE_KINDS}")

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "rank": self.rank, "phase": self.phase,
                "traceback": self.traceback}

    @classmethod
    def of_error(cls, rank: int, error: RankError, kind: str = "raised", message: str | None = None) -> Failure:
        """A rank's error: ``kind`` (raised, peer), or compile when the compiler raised it (the lane's stage)."""
        if error.stage == _COMPILE_STAGE:
            return cls("compile", f"rank {rank} could not compile at {error.phase}: {error.message}", rank=rank,
                       phase=error.phase, traceback=error.traceback)
        return cls(kind, error.describe(rank) if message is None else message, rank=rank, phase=error.phase,
                   traceback=error.traceback)


@dataclass
class CaseResult:
    """Everything one case produced: the comparisons (all of them, passed or not) and any other failure."""

    spec: Any  # a spec of a registered case kind (harness.kinds)
    comparisons: list[Comparison] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    duration_s: float = 0.0
    rerun: str = ""
    unsupported: str = ""  # the SUT's reason, when it declared the case unsupported (harness.sut.Unsupported)
    unsupported_features: tuple[str, ...] = ()  # the features the SUT named with its declaration (harness.features)
    deviation: Any = None  # a known deviation judged after the run (harness.deviations): quantity-scoped or inherited
    # A known defect of another SUT whose signature this failed case matches (harness.deviations.known_defect):
    # {"sut", "summary", "link", "match"}; None when there is none.
    known_defect: dict[str, Any] | None = None
    # What the ranks said to each other (harness.collectives.cost: per training step against torch's, and every
    # rank's log), None when no audit ran; a passing case's record keeps the numbers, not the log.
    collectives: dict[str, Any] | None = None
    compile: dict[str, Any] | None = None  # --compile: what compiling took (harness.compile_report.merge)

    @property
    def passed(self) -> bool:
        if self.unsupported:
            return False
        return not self.failures and bool(self.comparisons) and all(c.passed for c in self.comparisons)

    @property
    def compile_failed(self) -> bool:
        """torch.compile failed on a rank: the case's outcome is "compile_failed" (harness.outcomes)."""
        return any(f.kind == "compile" for f in self.failures)

    def record(self) -> dict[str, Any]:
        """The harness's part of a results record (harness.reports.results adds the outcome and where it ran)."""
        record = {"harness_passed": self.passed, "comparisons": [c.record() for c in self.comparisons],
                  "failures": [f.record() for f in self.failures], "duration_s": self.duration_s,
                  "rerun": self.rerun, "unsupported": self.unsupported,
                  "unsupported_features": list(self.unsupported_features), "known_defect": self.known_defect}
        if self.collectives is not None:
            record["collectives"] = {k: v for k, v in self.collectives.items() if k != "log" or not self.passed}
        if self.compile is not None:  # optional: only a compiled case has it
            record["compile"] = self.compile
        return record

    def report(self) -> str:
        """The console message of a failed case: root causes first, knock-ons folded under them, the rerun line
        last (harness.verdict)."""
        from .verdict import case_report

        return case_report(self.spec.id, self.record())
