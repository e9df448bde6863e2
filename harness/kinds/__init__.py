"""The registry of case kinds: module, op and model. Each kind has its id prefix, its spec (parser), its catalogue
and its runner; every id the harness prints parses back through ``parse_case_id`` and runs through ``run_case``.

Adding a kind: a spec class in harness.spec (``id``, ``from_id``, ``to_dict``, ``device``, ``world_size``,
``tags``), a catalogue function in harness.catalogue, a runner module here (``run(spec, config) -> CaseResult``)
and one ``CaseKind`` entry in ``KINDS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .. import catalogue
from ..errors import CaseError
from ..result import CaseResult, Failure, RunConfig
from ..spec import CaseSpec, ModelSpec, OpSpec
from . import model, module, op

__all__ = ["CaseKind", "KINDS", "kind_of", "kind_for_id", "parse_case_id", "case_for_id", "run_case",
           "catalogue_cases"]


@dataclass(frozen=True)
class CaseKind:
    name: str  # "module", "op", "model": the ``level`` of a results record
    prefix: str  # how its ids start
    spec: type
    catalogue: Callable[[str, str], list[Any]]  # (profile, device) -> specs
    run: Callable[[Any, RunConfig], CaseResult]

    def owns(self, case_id: str) -> bool:
        if self.name == "module":  # w<world size>_...
            return len(case_id) > 1 and case_id[0] == "w" and case_id[1].isdigit()
        return case_id.startswith(self.prefix)

    def parse(self, case_id: str) -> Any:
        return self.spec.from_id(case_id)


KINDS: tuple[CaseKind, ...] = (
    CaseKind("op", "op-", OpSpec, catalogue.op_cases, op.run),
    CaseKind("module", "w", CaseSpec, lambda profile, device: catalogue.module_cases(profile, device=device),
             module.run),
    CaseKind("model", "model_", ModelSpec, catalogue.model_cases, model.run),
)


def kind_of(spec: Any) -> CaseKind:
    for kind in KINDS:
        if isinstance(spec, kind.spec):
            return kind
    raise CaseError(f"{type(spec).__name__} is not a registered case kind ({', '.join(k.name for k in KINDS)})")


def kind_for_id(case_id: str) -> CaseKind:
    for kind in KINDS:
        if kind.owns(case_id):
            return kind
    raise CaseError(f"case id {case_id!r}: not an id of any case kind (module ids start with w<world size>_, "
                    f"op ids with 'op-', model ids with 'model_')")


def parse_case_id(case_id: str) -> Any:
    """The spec of any case id the harness prints (CaseError naming the bad token otherwise)."""
    return kind_for_id(case_id).parse(case_id)


def case_for_id(case_id: str) -> Any:
    """The catalogue's case of ``case_id`` (with its areas as tags) when some profile has it, else the parsed spec
    (a hypothesis example, a hand-written id)."""
    spec = parse_case_id(case_id)
    kind = kind_of(spec)
    for profile in catalogue.PROFILES:
        for case in kind.catalogue(profile, spec.device):
            if case.id == case_id:
                return case
    return spec


def run_case(spec: Any, config: RunConfig) -> CaseResult:
    """Run ``spec`` with its kind's runner; a case the SUT declares unsupported fails under --strict-features."""
    result = kind_of(spec).run(spec, config)
    if result.unsupported and config.options.strict_features:
        result.failures.append(Failure("unsupported", f"declared unsupported by the implementation: "
                                       f"{result.unsupported} (--strict-features: an unsupported feature fails)"))
    return result


def catalogue_cases(profile: str, device: str = "cpu") -> list[Any]:
    """Every case of the profile on ``device``, all kinds (op, module, model)."""
    return [case for kind in KINDS for case in kind.catalogue(profile, device)]
