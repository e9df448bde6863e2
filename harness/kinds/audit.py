"""The collective audit in a case's judgement, for the kinds whose ranks run one (module, model): the exact checks
of harness.collectives on the ranks' logs, and the case's communication against torch's SyncBatchNorm."""
from __future__ import annotations

from typing import Any, Sequence

from .. import collectives
from ..errors import RankFailure
from ..result import CaseResult

__all__ = ["judge_collectives", "collectives_of_failure", "COMPILED_UNMEASURED"]

COMPILED_UNMEASURED = ("compiled (--compile): no collective audit (dynamo would trace its wrappers, and the "
                       "collectives it puts in a graph are not Python calls); the eager lane checks what the ranks "
                       "exchange")


def judge_collectives(result: CaseResult, actual: list[Any], *, phases: Sequence[str], training: Sequence[str],
                      input_dtype: str, yardstick: list[list[collectives.Entry]]) -> None:
    """Add the audit's exact checks to ``result`` and set its communication (``result.collectives``), when every
    rank returned a log (a rank that raised has fewer steps: no cost then, the checks still run). A case run
    compiled (--compile) ran no audit (harness.rank.audit): its record says so."""
    if any(isinstance(value, dict) and value.get("compile") for value in actual):
        result.collectives = {"unmeasured": COMPILED_UNMEASURED}  # no audit ran (harness.rank.audit)
        return
    logs = {rank: value["collectives"] for rank, value in enumerate(actual)
            if isinstance(value, dict) and isinstance(value.get("collectives"), list)}
    if len(logs) != len(actual):
        return
    result.comparisons.extend(collectives.audit_checks(logs, phases, input_dtype))
    complete = not any(isinstance(value, dict) and value.get("error") for value in actual)
    result.collectives = collectives.cost(logs, training if complete else (), yardstick, keep_log=True)


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
