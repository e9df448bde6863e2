"""Exception classes: a bad case, a broken harness, and a failed rank are different things."""
from __future__ import annotations

__all__ = ["CaseError", "HarnessError", "RankFailure"]


class CaseError(ValueError):
    """The case (or an option) is invalid: the message names the field, its value and the rule broken."""


class HarnessError(RuntimeError):
    """The harness itself broke (a bug here, not in the implementation under test)."""


class RankFailure(RuntimeError):
    """A rank raised, crashed or hung while running a case; ``rank`` names it (None: several or unknown)."""

    def __init__(self, message: str, *, rank: int | None, kind: str, traceback: str = "",
                 partial: dict[int, object] | None = None) -> None:
        super().__init__(message)
        self.rank = rank
        self.kind = kind  # "raised", "crashed", "timeout"
        self.traceback = traceback
        self.partial = partial or {}  # the values of the ranks that did answer, by rank
