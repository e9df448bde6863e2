"""The collective audit in a case's judgement, for the kinds whose ranks run one (module, model): the exact checks
of harness.collectives on the ranks' logs, and the case's communication against torch's SyncBatchNorm."""
from __future__ import annotations

from typing import Any, Sequence

from .. import collectives
from ..errors import RankFailure
from ..result import CaseResult

__all__ = ["judge_collectives", "collectives_of_failure", "COMPILED_UNMEASURED"]

COMPILED_UNMEASURED = ("compiled (--compile): the collectives dynamo put in a compiled graph are not seen by the "
                       "audit, so neither the cost nor the sequence is checked; the precision of the ones run eagerly "
                       "is")


def judge_collectives(result: CaseResult, actual: list[Any], *, phases: Sequence[str], training: Sequence[str],
                      input_dtype: str, yardstick: list[list[collectives.Entry]]) -> None:
    """Add the audit's exact checks to ``result`` and set its communication (``result.collectives``), when every
    rank returned a log (a rank that raised has fewer steps: no cost then, the checks still run). A case run
    compiled (--compile) has no cost either: the collectives dynamo put in a compiled graph run as functional
    collectives the audit does not see (harness.rank.audit), so the count would read as cheaper than torch's, and
    no sequence check (ranks whose graphs break differently would see different parts of the same sequence)."""
    logs = {rank: value["collectives"] for rank, value in enumerate(actual)
            if isinstance(value, dict) and isinstance(value.get("collectives"), list)}
    if len(logs) != len(actual):
        return
    compiled = any(isinstance(value, dict) and value.get("compile") for value in actual)
    result.comparisons.extend(collectives.audit_checks(logs, phases, input_dtype, sequence=not compiled))
    complete = not any(isinstance(value, dict) and value.get("error") for value in actual)
    result.collectives = collectives.cost(logs, training if complete and not compiled else (), yardstick,
                                          keep_log=True)
    if compiled:
        result.collectives["unmeasured"] = COMPILED_UNMEASURED


def collectives_of_failure(failure: RankFailure) -> dict[str, Any] | None:
    """What is known of the ranks' collectives when a case did not finish: the logs of the ranks that returned and
    the collective each other rank was inside (None when no audit ran)."""
    logs = {rank: state["log"] for rank, state in failure.collectives.items()
            if isinstance(state, dict) and isinstance(state.get("log"), list)}  # ranks that returned or raised
    inside = {rank: collectives.waits_in(state)[0] for rank, state in failure.collectives.items()
              if isinstance(state, dict) and collectives.waits_in(state) and rank not in logs}
    if not (logs or inside):
        return None
    return {"log": {str(rank): log for rank, log in sorted(logs.items())},
            "inside": {str(rank): entry for rank, entry in sorted(inside.items())}}
