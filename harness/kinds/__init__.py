"""The registry of case kinds (module, op, model) and the one way a case runs.

A ``CaseKind`` is everything the harness knows of a kind of case: how its ids start and parse (its spec class), its
catalogue, its entry inside a rank (harness.rank), what the controller computes while the ranks run (``plan``), how
the ranks' results are judged, and which features of the conformance table it can have. Everything dispatches
through ``KINDS``: ``run_case`` (the rank pools, for pytest, the CLI and the self-test), the torchrun launcher
(harness.launch), the results (``kind`` of a record) and the conformance table (harness.features).

Adding a kind: a spec class in harness.spec, a catalogue function in harness.catalogue, a rank entry in
harness.rank (``run(ctx, *, spec, options, **request)``), a module here with ``plan`` and ``judge``, and one
``CaseKind`` in ``KINDS``.

What a case judges (``subject_of``): module and model cases judge the SUT; op cases judge the five kernels, which
are the SUT's own only when the SUT is torch. With another SUT, op cases test torch's kernels (on CPU the harness's
copies of them) or the ``--kernels`` substitutes, nothing of the SUT: they are not selected from the profile
(``selected``) unless ``--kernels`` puts kernels under test or ``--area ops`` / ``--case`` asks for them, and their
records say so (``subject``), so every count and the conformance table keep them apart (harness.features).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import catalogue, compile_report
from ..errors import CaseError, RankError, RankFailure
from ..features import KERNELS, SUT
from ..options import DEFAULT_SUT, Options, rerun_command
from ..pool import PoolManager, default_manager
from ..rank import model as rank_model
from ..rank import module as rank_module
from ..rank import op as rank_op
from ..result import CaseResult, Failure
from ..spec import ModelSpec, ModuleSpec, OpSpec
from . import model, module, op
from .audit import collectives_of_failure
from .base import CaseKind, Plan
from .rank_failures import failures_from_rank_failure, failures_of_raised

__all__ = ["CaseKind", "Plan", "KINDS", "RunConfig", "kind_of", "kind_named", "kind_for_id", "parse_case_id",
           "case_for_id", "run_case", "settle", "catalogue_cases", "rank_payload", "subject_of", "selected",
           "strict_failures"]


KINDS: tuple[CaseKind, ...] = (
    CaseKind("op", "op-", OpSpec, catalogue.op_cases, rank_op.run, op.plan, op.judge, attributes=op.attributes,
             judges=KERNELS),
    CaseKind("module", "w", ModuleSpec, lambda profile, device: catalogue.module_cases(profile, device=device),
             rank_module.run, module.plan, module.judge, required_errors=module.required_errors,
             attributes=module.attributes),
    CaseKind("model", "model_", ModelSpec, catalogue.model_cases, rank_model.run, model.plan, model.judge,
             attributes=model.attributes),
)


def kind_of(spec: Any) -> CaseKind:
    for kind in KINDS:
        if isinstance(spec, kind.spec):
            return kind
    raise CaseError(f"{type(spec).__name__} is not a registered case kind ({', '.join(k.name for k in KINDS)})")


def kind_named(name: str) -> CaseKind:
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise CaseError(f"kind={name!r}: must be one of {', '.join(k.name for k in KINDS)}")


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


def catalogue_cases(profile: str, device: str = "cpu") -> list[Any]:
    """Every case of the profile on ``device``, all kinds (op, module, model)."""
    return [case for kind in KINDS for case in kind.catalogue(profile, device)]


def subject_of(spec: Any, sut: str | None) -> str:
    """What a case of ``spec`` judges in a run of ``sut``: "sut", or "kernels" for an op case of another SUT than
    torch (``None``: unknown, taken as the SUT)."""
    judges = kind_of(spec).judges
    return SUT if judges == SUT or sut in (None, DEFAULT_SUT) else judges


def selected(cases: list[Any], options: Options) -> list[Any]:
    """The profile's ``cases`` a run selects by default: those that judge the SUT, and op cases when kernels are
    under test (the torch SUT, or --kernels); ``--area`` (exact names, harness.catalogue.in_areas) decides alone."""
    if options.area or options.kernels:
        return cases
    return [case for case in cases if subject_of(case, options.sut) == SUT]


@dataclass
class RunConfig:
    """How to run cases: the resolved options (implementation, kernels, backend, time limits) and the pools."""

    options: Options = field(default_factory=Options)
    manager: PoolManager | None = None

    @classmethod
    def of(cls, manager: PoolManager | None = None, **values: Any) -> RunConfig:
        """A config from option values (harness.options names), ignoring the environment: for programs and
        tests that say exactly what they want."""
        from ..options import resolve

        return cls(resolve(values, environ={}), manager)

    @property
    def pools(self) -> PoolManager:
        return self.manager or default_manager()

    def rerun(self, case_id: str) -> str:
        return rerun_command(case_id, self.options)


def rank_payload(spec: Any, options: Options, plan: Plan) -> dict[str, Any]:
    """The keyword arguments of a kind's rank entry: the spec, the run's RankOptions, the plan's request."""
    return {"spec": spec.to_dict(), "options": options.rank, **plan.request}


def _gives_up(value: Any) -> bool:
    """A rank's value that may leave the other ranks waiting in a collective: an error or a declaration of
    unsupported (the pool then gives the others a short grace period, not the whole timeout)."""
    return isinstance(value, dict) and bool(value.get("error") or value.get("unsupported"))


def _declares(value: Any) -> bool:
    """A rank's declaration of unsupported: the others are released at once (see ``run_case``)."""
    return isinstance(value, dict) and bool(value.get("unsupported"))


def _declared_unsupported(values: Any) -> tuple[str, tuple[str, ...]]:
    """The reasons the ranks that answered gave for declaring the case unsupported ("" if none did), and the
    features they named."""
    declared = [v for v in values if _declares(v)]
    reasons = sorted({v["unsupported"] for v in declared})
    features = dict.fromkeys(f for v in declared for f in v.get("unsupported_features") or ())
    return "; ".join(reasons), tuple(features)


def _mark_unsupported(result: CaseResult, values: Any) -> bool:
    result.unsupported, result.unsupported_features = _declared_unsupported(values)
    return bool(result.unsupported)


def _compile_errors(values: dict[int, Any]) -> dict[int, RankError]:
    """The ranks whose compiler raised (harness.rank.compiled), by rank."""
    return {rank: value["error"] for rank, value in values.items() if isinstance(value, dict)
            and isinstance(value.get("error"), RankError) and value["error"].stage == "compile"}


def settle(kind: CaseKind, spec: Any, expected: Any, actual: list[Any], result: CaseResult) -> CaseResult:
    """Judge what every rank returned: what compiling took (--compile); unsupported if a rank declared it; compile
    failed if a rank's compiler raised (nothing is compared); else the kind's judgement."""
    result.compile = compile_report.merge(dict(enumerate(actual)))
    if _mark_unsupported(result, actual):
        return result
    compile_errors = _compile_errors(dict(enumerate(actual)))
    if compile_errors:
        result.failures.extend(Failure.of_error(rank, error) for rank, error in sorted(compile_errors.items()))
        return result
    return kind.judge(spec, expected, actual, result)


def strict_failures(result: CaseResult, options: Options) -> list[Failure]:
    """What the strict options add: --strict-features fails a case declared unsupported, --strict-compile a case
    with a graph break."""
    failures = []
    if result.unsupported and options.strict_features:
        failures.append(Failure("unsupported", f"declared unsupported by the implementation: {result.unsupported} "
                                "(--strict-features: an unsupported feature fails)"))
    if options.strict_compile and result.compile and compile_report.graph_breaks({"compile": result.compile}):
        failures.append(Failure("graph_break", compile_report.strict_message(result.compile)))
    return failures


_COMPILE_PRELOAD = ("torch._dynamo", "torch._inductor.compile_fx")  # about 4 s of imports a rank then skips


def _preload(options: Options) -> tuple[str, ...]:
    """What the ranks' forkserver imports for these options besides torch (a compiled run: the compilers)."""
    return _COMPILE_PRELOAD if options.compile != "off" else ()


def run_case(spec: Any, config: RunConfig) -> CaseResult:
    """Run ``spec`` on the rank pool of its world size: every rank runs its kind's rank entry while the controller
    computes the expected values; then the kind judges. A rank that raised, crashed, stopped or hung is the
    case's failure, naming the rank.

    Unsupported, the contract: ANY rank may declare the case unsupported (only the rank whose shard is empty can
    see that it is), from the factory or from its forward before its first collective; the case is then
    unsupported (a failure under --strict-features), whatever the other ranks did. The harness tells the others:
    they may be waiting for the declaring rank in a collective that will never complete, and a gloo collective
    cannot be interrupted from Python, so the pool gives them a short grace (to declare or finish too) and then
    stops them; the pool restarts for the next case (harness.pool: ``releases``). The torchrun launcher, which
    cannot restart its processes, follows the same contract differently (harness.launch)."""
    kind = kind_of(spec)
    options = config.options
    start = time.monotonic()
    result = CaseResult(spec, rerun=config.rerun(spec.id))
    expected = None
    try:
        plan = kind.plan(spec)
        pool = config.pools.get(spec.world_size, spec.device, options.backend_choice,
                                start_timeout=options.start_timeout, preload=_preload(options))
        pool.submit(kind.rank_entry, rank_payload(spec, options, plan))
        expected = plan.expected()
        actual = pool.collect(timeout=options.case_timeout, is_failure=_gives_up,  # one limit for every kind
                              releases=_declares)
    except RankFailure as failure:
        result.compile = compile_report.merge(failure.partial)
        if failure.kind == "crashed" or not _mark_unsupported(result, failure.partial.values()):
            required = kind.required_errors(expected) if expected is not None else {}
            result.failures.extend(failures_from_rank_failure(failure, expected_errors=required))
            result.collectives = collectives_of_failure(failure)
    else:
        settle(kind, spec, expected, actual, result)
    result.failures.extend(strict_failures(result, options))
    result.duration_s = time.monotonic() - start
    return result


__all__ += ["failures_of_raised"]
