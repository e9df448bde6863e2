"""What a case kind is (``CaseKind``) and what the controller prepares for one case (``Plan``); the registry of the
kinds is harness.kinds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..result import CaseResult

__all__ = ["CaseKind", "Plan"]


@dataclass(frozen=True)
class Plan:
    """What the controller prepares for one case: ``request``, the keyword arguments every rank gets besides the
    spec and the options, and ``expected``, the expected values, computed (once) while the ranks run."""

    request: dict[str, Any] = field(default_factory=dict)
    expected: Callable[[], Any] = lambda: None


@dataclass(frozen=True)
class CaseKind:
    name: str  # "module", "op", "model": the ``kind`` of a results record
    prefix: str  # how its ids start ("w" for module ids: w<world size>_...)
    spec: type  # its spec class: ``from_id`` parses its ids, ``to_dict`` / ``from_dict`` carry it to the ranks
    catalogue: Callable[[str, str], list[Any]]  # (profile, device) -> specs
    rank_entry: Callable[..., Any]  # harness.rank.<kind>.run(ctx, *, spec, options, **request), in every rank
    plan: Callable[[Any], Plan]  # the controller's part, started before the ranks finish
    judge: Callable[[Any, Any, list[Any], CaseResult], CaseResult]  # (spec, expected, per-rank values, result)
    required_errors: Callable[[Any], dict[int, dict[str, Any]]] = lambda expected: {}  # errors the spec requires
    # The case's parameters as readable values that failed and passing cases can be compared on (harness.diagnosis:
    # "dtype float16 with float32 parameters", "uneven shards", "world size 3"), from a record's params.
    attributes: Callable[[dict[str, Any]], list[str]] = lambda params: []

    def owns(self, case_id: str) -> bool:
        if self.name == "module":  # w<world size>_...
            return len(case_id) > 1 and case_id[0] == "w" and case_id[1].isdigit()
        return case_id.startswith(self.prefix)

    def parse(self, case_id: str) -> Any:
        return self.spec.from_id(case_id)
