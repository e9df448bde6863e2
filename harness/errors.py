"""Exception classes: a bad case, a broken harness, and a failed rank are different things."""
from __future__ import annotations

import traceback as _traceback
from dataclasses import dataclass

__all__ = ["CaseError", "HarnessError", "RankFailure", "RankError"]


class CaseError(ValueError):
    """The case (or an option) is invalid: the message names the field, its value and the rule broken."""


class HarnessError(RuntimeError):
    """The harness itself broke (a bug here, not in the implementation under test)."""


class RankFailure(RuntimeError):
    """A rank raised, crashed or hung while running a case; ``rank`` names it (None: several or unknown)."""

    def __init__(self, message: str, *, rank: int | None, kind: str, traceback: str = "",
                 partial: dict[int, object] | None = None, stalled: tuple[int, ...] = (),
                 waiting: tuple[int, ...] = (), crashed: tuple[int, ...] = (),
                 collectives: dict[int, object] | None = None, phase: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.kind = kind  # "raised", "crashed", "timeout", "start", "deadlock" (proved by the collective audit)
        self.traceback = traceback
        self.partial = partial or {}  # the values of the ranks that did answer, by rank
        self.stalled = stalled  # ranks that stopped answering (no heartbeat)
        self.waiting = waiting  # ranks alive but not done (waiting on the others)
        self.crashed = crashed
        self.collectives = collectives or {}  # rank -> its collective audit state (harness.collectives.snapshot)
        self.phase = phase  # where it went wrong, when known (the phase of a mismatched collective)


@dataclass
class RankError:
    """An exception raised inside a rank (by the implementation under test, or the harness), as data: where it
    happened (``phase``: train0, eval1, setup; ``stage``: construct, forward, backward) and what it was."""

    phase: str
    stage: str
    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, phase: str, stage: str, exc: BaseException) -> RankError:
        return cls(phase, stage, type(exc).__name__, str(exc), _traceback.format_exc())

    def describe(self, rank: int) -> str:
        return f"rank {rank} raised {self.type} at {self.phase} ({self.stage}): {self.message}"
