"""A RankFailure from the pool (a rank raised, crashed, stalled or hung) as the case's Failures, cause first.

The ranks that did answer may carry the implementation's own error (returned as data by the rank), which is the
likely cause of the others' hang; a rank whose error only says that a peer closed its connection failed because
another rank died (crashed or stopped answering), so it is reported after that rank, as a consequence ("peer").
"""
from __future__ import annotations

from typing import Any

from ..errors import RankError, RankFailure
from ..result import FAILURE_KINDS, Failure

__all__ = ["failures_from_rank_failure", "failures_of_raised", "PEER_MESSAGES"]

# What a rank's collective says when its peer process died (gloo, NCCL): a consequence, not a cause.
PEER_MESSAGES = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                 "NCCL communicator was aborted", "Socket Timeout", "connection closed")
_POOL_KINDS = {"crashed": "crashed", "timeout": "hung", "stalled": "stalled", "raised": "harness", "start": "harness",
               "deadlock": "collectives"}


def _is_peer_error(text: str) -> bool:
    return any(m.lower() in text.lower() for m in PEER_MESSAGES)


def failures_from_rank_failure(failure: RankFailure, *, expected_errors: dict[int, dict[str, Any]]
                               ) -> list[Failure]:
    """The Failures of a case whose ranks failed, the cause first (crashed, stalled, raised ..., peers last)."""
    someone_died = bool(failure.crashed or failure.stalled or failure.kind in ("crashed", "stalled"))
    failures: list[Failure] = []
    for rank, value in sorted(failure.partial.items()):
        error = value.get("error") if isinstance(value, dict) else None
        if not isinstance(error, RankError):
            continue
        want = expected_errors.get(rank)
        if want is not None and want["type"] == error.type and want["phase"] == error.phase:
            continue  # the error the specification requires: not a problem
        kind = "peer" if someone_died and _is_peer_error(error.message) else "raised"
        message = error.describe(rank) + (" (a consequence: a peer rank died)" if kind == "peer" else "")
        failures.append(Failure.of_error(rank, error, kind, message))
    kind = _POOL_KINDS.get(failure.kind, "harness")
    if failure.kind == "timeout" and failure.stalled:  # out of time with a rank silent: it stopped answering
        kind = "stalled"
    if kind == "harness" and failure.kind == "raised" and someone_died and _is_peer_error(str(failure)):
        kind = "peer"
    failures.append(Failure(kind, str(failure), rank=failure.rank, traceback=failure.traceback,
                            phase=failure.phase))
    failures.sort(key=lambda f: FAILURE_KINDS.index(f.kind))
    return failures


def failures_of_raised(errors: dict[int, RankError]) -> list[Failure]:
    """The Failures of ranks whose entry raised (under torchrun, where no pool reports it): one per rank."""
    return [Failure.of_error(rank, error) for rank, error in sorted(errors.items())]

