"""``python -m harness selftest``: the suite against deliberately broken SyncBNs (harness.mutants).

Each mutant runs the profile's module cases, cheap discriminating ones first, until its first failing case (the
mutant is then *caught*, by that case and quantity); each correct implementation runs every case and must pass all;
each costlier one (correct, but more communication than torch's SyncBatchNorm) runs until the first case that
reports more collectives per training step than torch's, which it must pass (*reported*, not failed). All run
eagerly, or compiled with ``--compile BACKEND``. A compiled-lane mutant (harness.mutants.COMPILED_MUTANTS) runs
compiled with the backend it names until caught, and then the case that caught it runs again eagerly, where it must
pass: its defect is the compiler's doing, not the code's.
The catch rate is reported per defect class (harness.mutants.CLASSES). A class that only a larger profile's catalogue
is meant to catch (quick misses boundary defects by design) is not run unless its mutants are named with --only.
Exit 0 only if every mutant run is caught (a compiled-lane mutant also passing its case eagerly), every costlier one
reported and no correct implementation fails a case; 1 otherwise; 2 usage error.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from .catalogue import AREAS, module_cases
from .kinds import RunConfig, run_case
from .options import PROFILES, resolve
from .result import CaseResult
from .spec import ModuleSpec
from .verdict import label, roots_and_knock_ons

__all__ = ["add_arguments", "main", "ordered_cases", "first_failure", "MutantOutcome", "run_mutant",
           "costlier_than_torch", "caught_from", "class_lines"]

_SUT_PREFIX = "harness.mutants:"


def ordered_cases(profile: str) -> list[ModuleSpec]:
    """The profile's module cases, areas in their ``selftest_order`` (harness.catalogue.AREAS), stable within."""
    order = {name: area.selftest_order for name, area in AREAS.items()}
    return sorted(module_cases(profile), key=lambda c: order.get(c.tags[0] if c.tags else "", len(order)))


def first_failure(result: CaseResult) -> str:
    """What failed first in a failed case: a rank failure, else the root cause (harness.verdict)."""
    if result.failures:
        return result.failures[0].message.splitlines()[0]
    groups, _ = roots_and_knock_ons(result.record())
    if groups:
        worst = groups[0][0]
        if worst.get("exact"):
            return worst.get("statement") or label(worst)
        return f"{label(worst)} (error {float(worst['error_ratio']):.3g}x the tolerance)"
    return result.unsupported and f"declared unsupported: {result.unsupported}" or "nothing was compared"


@dataclass
class MutantOutcome:
    name: str
    description: str
    correct: bool  # a correct implementation (must pass) rather than a mutant (must be caught)
    cases_run: int
    failed: list[CaseResult]
    duration_s: float
    costlier: bool = False  # correct but costlier: must pass, and be reported as costlier than torch's
    reported: CaseResult | None = None  # the case that reported it costlier
    compile: str = "off"  # the --compile backend it ran with
    eager_check: CaseResult | None = None  # a compiled-lane mutant: its catching case, run again eagerly

    @property
    def ok(self) -> bool:
        if self.costlier:
            return not self.failed and self.reported is not None
        if self.correct:
            return not self.failed
        return bool(self.failed) and (self.eager_check is None or self.eager_check.passed)


def costlier_than_torch(result: CaseResult) -> bool:
    """The case's ranks issued more collectives per training step than torch's SyncBatchNorm would."""
    cost = result.collectives or {}
    return cost.get("per_step") is not None and cost.get("torch_per_step") is not None \
        and cost["per_step"] > cost["torch_per_step"]


def run_mutant(name: str, cases: list[ModuleSpec], *, correct: bool, case_timeout: float,
               description: str = "", costlier: bool = False, compile: str = "off",
               eager_check: bool = False) -> MutantOutcome:
    """Run ``cases`` against ``harness.mutants:<name>`` (compiled with ``compile``): a mutant stops at its first
    failing case (with ``eager_check`` that case runs again eagerly: a compiled-lane mutant must pass it there), a
    costlier implementation at its first case reported costlier than torch's SyncBatchNorm (or failed)."""
    config = RunConfig.of(sut=_SUT_PREFIX + name, case_timeout=case_timeout, compile=compile)
    start = time.monotonic()
    failed: list[CaseResult] = []
    reported = None
    run = 0
    for case in cases:
        result = run_case(case, config)
        run += 1
        if not result.passed:
            failed.append(result)
            if not correct:
                break
        elif costlier and costlier_than_torch(result):
            reported = result
        if costlier and (failed or reported):
            break
    check = None
    if eager_check and failed:
        check = run_case(failed[0].spec, RunConfig.of(sut=_SUT_PREFIX + name, case_timeout=case_timeout))
    return MutantOutcome(name, description, correct, run, failed, time.monotonic() - start, costlier, reported,
                         compile, check)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_argparse_options

    add_argparse_options(parser, names=("profile", "case_timeout", "compile"))
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated mutant / correct implementation names to run (default: all)")


def main(args: argparse.Namespace) -> int:
    from . import mutants

    options = resolve({"profile": args.profile, "case_timeout": args.case_timeout, "compile": args.compile})

    compiled_lane = {name: bug for name, (_, bug) in mutants.COMPILED_MUTANTS.items()}
    # The compiled lane's first: the ranks' forkserver then starts with the compilers imported (harness.pool).
    known = {**compiled_lane, **mutants.CORRECT, **mutants.MUTANTS, **mutants.COSTLIER}
    names = list(known) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"--only: unknown name(s) {unknown}; choose from {sorted(known)}")
        return 2
    cases = ordered_cases(options.profile)
    # A mutant whose class the profile's catalogue is not meant to catch (quick and the boundary classes) runs only
    # when named: each would run every case to find nothing.
    beyond = [] if args.only else [n for n in names if n in mutants.MUTANTS and not caught_from(n, options.profile)]
    names = [n for n in names if n not in beyond]
    lane = f", compiled with {options.compile}" if options.compile != "off" else ""
    print(f"selftest: profile {options.profile}, {len(cases)} module cases, case timeout {options.case_timeout:g} s"
          f"{lane}")
    outcomes: list[MutantOutcome] = []
    for name in names:  # the rank pools stay up between mutants (closed at exit)
        costlier = name in mutants.COSTLIER
        backend = mutants.COMPILED_MUTANTS[name][0] if name in compiled_lane else options.compile
        outcome = run_mutant(name, cases, correct=costlier or name in mutants.CORRECT,
                             case_timeout=options.case_timeout, description=known[name], costlier=costlier,
                             compile=backend, eager_check=name in compiled_lane)
        outcomes.append(outcome)
        print(_line(outcome), flush=True)
    mutant_outcomes = [o for o in outcomes if not o.correct]
    caught = sum(o.ok for o in mutant_outcomes)
    correct_failed = [o.name for o in outcomes if o.correct and not o.costlier and not o.ok]
    unreported = [o.name for o in outcomes if o.costlier and not o.ok]
    if mutant_outcomes or beyond:
        print(f"catch rate by class (profile {options.profile}):")
        print("\n".join(class_lines(mutant_outcomes, beyond, options.profile)))
    if mutant_outcomes:
        in_lane = [o for o in mutant_outcomes if o.name in compiled_lane]
        lane_text = (f"; {sum(o.ok for o in in_lane)}/{len(in_lane)} of the compiled lane's caught compiled and "
                     "passing eagerly" if in_lane else "")
        print(f"catch rate: {caught}/{len(mutant_outcomes)} mutants caught "
              f"({100.0 * caught / len(mutant_outcomes):.0f}%){lane_text}"
              + (f"; {len(beyond)} of boundary classes not run (--profile default runs them)" if beyond else ""))
    missed = [o.name for o in mutant_outcomes if not o.ok]
    if missed:
        print(f"MISSED: {', '.join(missed)}")
    if correct_failed:
        print(f"CORRECT IMPLEMENTATIONS FAILED: {', '.join(correct_failed)}")
    if unreported:
        print(f"COSTLIER IMPLEMENTATIONS FAILED OR NOT REPORTED: {', '.join(unreported)}")
    return 0 if not (missed or correct_failed or unreported) else 1


def caught_from(name: str, profile: str) -> bool:
    """Whether ``profile``'s catalogue is meant to catch mutant ``name`` (its class's profile or a larger one)."""
    from .mutants import CLASSES, MUTANT_CLASS

    return PROFILES.index(profile) >= PROFILES.index(CLASSES[MUTANT_CLASS[name]].profile)


def class_lines(outcomes: list[MutantOutcome], not_run: list[str], profile: str) -> list[str]:
    """One line per defect class (harness.mutants.CLASSES): mutants caught of those run, or why none ran."""
    from .mutants import CLASSES, MUTANT_CLASS

    lines = []
    for name, bug_class in CLASSES.items():
        ran = [o for o in outcomes if MUTANT_CLASS.get(o.name) == name]
        skipped = [n for n in not_run if MUTANT_CLASS[n] == name]
        if ran:
            missed = [o.name for o in ran if not o.ok]
            lines.append(f"  {name:<24} {sum(o.ok for o in ran)}/{len(ran)} caught"
                         + (f" (MISSED: {', '.join(missed)})" if missed else ""))
        elif skipped:
            lines.append(f"  {name:<24} not run ({len(skipped)}): the {bug_class.profile} profile's catalogue "
                         f"catches these; {profile} misses boundary defects by design")
    return lines


def _line(outcome: MutantOutcome) -> str:
    timing = f"[{outcome.cases_run} cases, {outcome.duration_s:.1f} s]"
    if outcome.compile != "off":
        timing = f"compiled with {outcome.compile} {timing}"
    if outcome.costlier and outcome.ok:
        cost = outcome.reported.collectives
        return (f"REPORTED {outcome.name} ({outcome.description}): passed case {outcome.reported.spec.id}, "
                f"{cost['per_step']:g} collectives per training step where torch's SyncBatchNorm issues "
                f"{cost['torch_per_step']:g} {timing}")
    if outcome.costlier and not outcome.failed:
        return f"MISSED  {outcome.name} ({outcome.description}): never reported costlier than torch's {timing}"
    if outcome.correct:  # a costlier one that failed a case too
        if outcome.ok:
            return f"PASS    {outcome.name}: correct implementation passed all cases {timing}"
        first = outcome.failed[0]
        return (f"FAIL    {outcome.name}: correct implementation failed {len(outcome.failed)} case(s), first "
                f"{first.spec.id}: {first_failure(first)} {timing}")
    check = outcome.eager_check
    if outcome.failed and check is not None and not check.passed:
        return (f"EAGER   {outcome.name} ({outcome.description}): caught compiled by case {outcome.failed[0].spec.id},"
                f" but that case fails eagerly too ({first_failure(check)}): not the compiler's doing {timing}")
    if outcome.ok:
        first = outcome.failed[0]
        eagerly = "; the same case passes eagerly" if check is not None else ""
        return (f"CAUGHT  {outcome.name} ({outcome.description}) by case {first.spec.id}: "
                f"{first_failure(first)}{eagerly} {timing}")
    return f"MISSED  {outcome.name} ({outcome.description}): every case passed {timing}"
