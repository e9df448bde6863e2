"""``python -m harness gate``: run the suite and compare it with a stored known-good baseline.

    python -m harness gate --baseline FILE [suite options] [--update-baseline] [--repeat N] [--results-in RESULTS]

Exit 0: no regression. Exit 1: a tolerance failure (any failed case), a case that passed in the baseline and does
not pass now, a baseline case that did not run (coverage loss), or a quantity whose max |error| grew by more than
``--growth-factor`` (default 2) over the baseline while exceeding ``--growth-floor`` (default 1%) of its tolerance.
Improvements by the same factor are printed as candidates for tightening. Exit 2: usage error (a missing or
corrupt baseline, another schema version, no baseline for this environment, a different case selection, an
option the gate would ignore). Exit 3: the run is incomplete (interrupted, terminated, a worker lost): it is
neither judged nor recorded.

Baseline (``"schema": "syncbn-harness/baseline", "version": 2``): ``environments`` maps an environment key,
``<device kind>/<backend>`` (``cpu/gloo``, ``cuda:NVIDIA H100 80GB HBM3/nccl``), to what was recorded there:
``recorded`` (torch, harness revision, SUT, runs), ``selection`` (profile, --case, extra pytest arguments) and
``cases``: per case id (the id encodes every parameter, dtype and device included) its outcome and, per quantity
(``phase/quantity/rank<r>`` or ``.../sum<ranks>``), dtype, max |error|, error / allowed and the tolerance. A case
is only ever judged against the entry of its own environment, so a CPU baseline never judges a GPU run.

Run-to-run variation: CPU runs here are bit-for-bit repeatable. GPU reductions (atomics, split-K, launch
configuration) are not; the growth factor (2x) and the floor (1% of the tolerance) absorb that jitter, and a
baseline recorded as the maximum over several runs (``--update-baseline --repeat 3``) absorbs the rest.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.compile_report import graph_breaks
from harness.errors import CaseError
from harness import files
from harness.files import check_writable
from harness.options import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, OPTIONS, Options
from harness.suite import add_suite_arguments, preflight, resolve_suite_options, run_suite

from harness.outcomes import FAILING, outcome

from .results import GATE_VERSIONS, ResultsError, as_float, check_document, jsonable, load_results, read_json

__all__ = ["BASELINE_SCHEMA", "BASELINE_VERSION", "add_arguments", "main", "summarize_results", "merge_runs",
           "judge", "load_baseline", "save_baseline", "GateReport"]

BASELINE_SCHEMA = "syncbn-harness/baseline"
BASELINE_VERSION = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_suite_arguments(parser)
    for action in parser._actions:  # the suite's options run the suite: not with --results-in
        if action.dest in _RUN_ONLY:
            action.help = (action.help or "") + " (the run's; not with --results-in" + (
                "; with --repeat, the last run's)" if action.dest == "json" else ")")
        elif action.dest == "report":
            action.help = ("write the HTML report here (the gate's run writes syncbn-report.html unless told "
                           "otherwise; with --repeat, the last run's; with --results-in, that document's, only "
                           "when given)")
        elif action.dest == "pytest_args":
            action.help = ("extra arguments for pytest (after --); part of the selection compared with the "
                           "baseline's, also with --results-in")
    parser.add_argument("--baseline", required=True, metavar="FILE",
                        help="the known-good baseline (JSON); --update-baseline creates it if missing")
    parser.add_argument("--update-baseline", action="store_true",
                        help="record this run as the baseline of its environment instead of judging it (other "
                        "environments are kept); an incomplete run is refused (exit 3); a run with failing cases is "
                        "recorded, then exits 1")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the suite N times and use each case's worst outcome and each quantity's largest "
                        "error (for GPU jitter; not with --results-in)")
    parser.add_argument("--growth-factor", type=float, default=2.0, metavar="F",
                        help="an error more than F times its baseline is a regression when above --growth-floor "
                        "(default 2; must be > 1)")
    parser.add_argument("--growth-floor", type=float, default=0.01, metavar="FRACTION",
                        help="growth only counts when the new error exceeds this fraction of the tolerance "
                        "(default 0.01), so noise far below the tolerance never trips the gate")
    parser.add_argument("--results-in", default=None, metavar="PATH",
                        help="judge (or with --update-baseline, record) this results document (from --json) instead "
                        "of running the suite")


# What only a run of the suite uses: given with --results-in, it would be ignored.
_RUN_ONLY = tuple(o.name for o in OPTIONS if o.name != "report") + ("workers",)


# -- summaries: a results document reduced to what the gate compares -------------------------------------------------
def environment_key(case: dict[str, Any], env: dict[str, Any]) -> str:
    """device/backend, and /compile:<backend> for a compiled run: a compiled run and an eager one are different
    environments, each judged against a baseline of its own (docs/gpu.md: gating a compiler change)."""
    device = case["device"]
    if device == "cuda":
        device = f"cuda:{env.get('device_name') or 'unknown'}"
    lane = env.get("compile") or "off"
    return f"{device}/{case['backend']}" + (f"/compile:{lane}" if lane != "off" else "")


def quantity_key(comparison: dict[str, Any]) -> str:
    where = f"rank{comparison['rank']}" if comparison["rank"] is not None else \
        "sum" + ".".join(map(str, comparison["ranks"]))
    quantity = comparison["quantity"] + (f":{comparison['item']}" if comparison.get("item") else "")
    return f"{comparison['phase']}/{quantity}/{where}"


def _problem(case: dict[str, Any]) -> str:
    failed = sorted((c for c in case["comparisons"] if not c["passed"]), key=lambda c: -as_float(c["error_ratio"]))
    parts = [f"{quantity_key(c)} {as_float(c['error_ratio']):.3g}x the allowed error" for c in failed[:3]]
    if len(failed) > 3:
        parts.append(f"{len(failed) - 3} more")
    if case["failures"]:
        parts.append(case["failures"][0]["message"].strip().splitlines()[0][:200])
    return "; ".join(parts)


def summarize_results(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{environment key: {"recorded": ..., "cases": {id: {outcome, dtype, problem, rerun, quantities}}}}."""
    env = document["environment"]
    out: dict[str, dict[str, Any]] = {}
    for case in document["cases"]:
        key = environment_key(case, env)
        entry = out.setdefault(key, {"recorded": {k: env.get(k) for k in (
            "torch", "torch_git", "cuda", "device_name", "harness_revision", "harness_version", "harness_dirty", "sut",
            "kernels", "compile")}
            | {"created": document.get("created"), "runs": 1}, "cases": {}})
        quantities = {}
        for c in case["comparisons"]:
            quantities[quantity_key(c)] = {"dtype": c["dtype"], "max_abs_err": c["max_abs_err"],
                                           "error_ratio": c["error_ratio"], "atol": c["tolerance"]["atol"],
                                           "rtol": c["tolerance"]["rtol"], "passed": c["passed"]}
        entry["cases"][case["id"]] = {"outcome": case["outcome"], "dtype": case["params"].get("dtype"),
                                      "problem": _problem(case) if case["outcome"] in FAILING else "",
                                      "rerun": case.get("rerun", ""), "quantities": quantities,
                                      "graph_breaks": graph_breaks(case)}
    return out


def merge_runs(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several summaries of the same selection: each case's worst outcome, each quantity's largest error."""
    merged: dict[str, dict[str, Any]] = json.loads(json.dumps(runs[0]))
    for run in runs[1:]:
        for key, entry in run.items():
            target = merged.setdefault(key, json.loads(json.dumps(entry)))
            if target is entry:
                continue
            target["recorded"]["runs"] = target["recorded"].get("runs", 1) + 1
            for case_id, case in entry["cases"].items():
                mine = target["cases"].setdefault(case_id, json.loads(json.dumps(case)))
                if outcome(case["outcome"]).gate_rank > outcome(mine["outcome"]).gate_rank:
                    mine["outcome"], mine["problem"] = case["outcome"], case["problem"]
                for name, q in case["quantities"].items():
                    old = mine["quantities"].get(name)
                    if old is None or as_float(q["max_abs_err"]) > as_float(old["max_abs_err"]):
                        mine["quantities"][name] = q
    return merged


# -- baseline files -------------------------------------------------------------------------------------------------
def load_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    document = check_document(read_json(path), schema=BASELINE_SCHEMA, versions=(BASELINE_VERSION,),
                              source=f"baseline {path}")
    if not isinstance(document.get("environments"), dict):
        raise ResultsError(f"baseline {path}: no 'environments' object")
    return document


def save_baseline(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    text = json.dumps(jsonable(document), indent=1, sort_keys=True, allow_nan=False) + "\n"
    return files.write_atomically(path, text)


def selection(args: argparse.Namespace, document: dict[str, Any]) -> dict[str, Any]:
    """Which cases the run selected: the same selection is needed for coverage to be comparable."""
    env = document["environment"]
    return {"profile": env.get("profile"), "case": env.get("case"),
            "pytest_args": list(getattr(args, "pytest_args", None) or [])}


# -- judging --------------------------------------------------------------------------------------------------------
class GateReport:
    """What the gate found: problems (exit 1), notes, tightening candidates."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.candidates: list[str] = []
        self.notes: list[str] = []

    def problem(self, kind: str, case_id: str, text: str) -> None:
        self.problems.append(f"FAIL {kind:<10} {case_id}: {text}")


def judge(current: dict[str, Any], baseline: dict[str, Any], *, growth_factor: float, growth_floor: float,
          report: GateReport) -> None:
    """Compare one environment's summary (``current``) with its baseline entry."""
    base_cases = baseline["cases"]
    for case_id, case in sorted(current["cases"].items()):
        base = base_cases.get(case_id)
        now = case["outcome"]
        if now in FAILING:
            report.problem("failure", case_id, f"{now}: {case['problem']}" + (
                f"\n     rerun: {case['rerun']}" if case.get("rerun") else ""))
        elif base is not None and base["outcome"] == "passed" and now != "passed":
            report.problem("regression", case_id, f"passed in the baseline, {now} now")
        if base is None:
            report.notes.append(f"new case (no baseline, judged by its tolerances only): {case_id}")
            continue
        if case.get("graph_breaks", 0) > base.get("graph_breaks", 0):  # a compiler change: noted, not failed
            report.notes.append(f"more graph breaks: {case_id}: {base.get('graph_breaks', 0)} -> "
                                f"{case['graph_breaks']} (--strict-compile fails any)")
        for name, q in sorted(case["quantities"].items()):
            old = base["quantities"].get(name)
            if old is None or not q["passed"]:
                continue
            new_err, old_err = as_float(q["max_abs_err"]), as_float(old["max_abs_err"])
            new_ratio, old_ratio = as_float(q["error_ratio"]), as_float(old["error_ratio"])
            if not (math.isfinite(new_err) and math.isfinite(old_err)):
                continue
            if new_err > growth_factor * old_err and new_ratio > growth_floor:
                factor = f"{new_err / old_err:.3g}x" if old_err > 0 else "from exactly 0"
                report.problem("growth", case_id, f"{name} ({q['dtype']}) max |err| {old_err:.3g} -> {new_err:.3g} "
                               f"({factor} > {growth_factor:g}x; now {100 * new_ratio:.3g}% of the tolerance "
                               f"{as_float(q['atol']):.3g})")
            elif old_err > growth_factor * new_err and old_ratio > growth_floor:
                report.candidates.append(f"{case_id} {name}: max |err| {old_err:.3g} -> {new_err:.3g} "
                                         f"({100 * new_ratio:.3g}% of the tolerance)")
    for case_id in sorted(set(base_cases) - set(current["cases"])):
        report.problem("coverage", case_id, f"in the baseline ({base_cases[case_id]['outcome']}), did not run now")


# -- the command ----------------------------------------------------------------------------------------------------
def _usage(message: str) -> int:
    print(f"gate: usage error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run_once(args: argparse.Namespace, options: Options, json_path: str, *, last: bool,
              private: bool) -> tuple[int, dict[str, Any] | None]:
    options = dataclasses.replace(options, json=json_path, report=options.report if last else None)
    code = run_suite(options, workers=args.workers, extra=args.pytest_args,
                     unannounced=[json_path] if private else ())
    if code == EXIT_USAGE or not os.path.exists(json_path):
        return code, None
    return code, load_results(json_path, versions=GATE_VERSIONS)


def _incomplete(document: dict[str, Any]) -> str | None:
    """'N of M selected tests did not run (reason)' for an incomplete results document, else None."""
    if document.get("status") != "incomplete":
        return None
    info = document.get("incomplete") or {}
    return (f"{len(info.get('not_run') or [])} of {info.get('cases_selected', '?')} selected tests did not run"
            f" ({info.get('reason') or 'incomplete'})")


def _check_args(args: argparse.Namespace) -> str | None:
    """A usage problem of the gate's own arguments, or None."""
    if not args.growth_factor > 1:
        return f"--growth-factor={args.growth_factor!r}: must be > 1"
    if not 0 <= args.growth_floor < 1:
        return f"--growth-floor={args.growth_floor!r}: must be in [0, 1)"
    if args.repeat < 1:
        return f"--repeat={args.repeat!r}: must be >= 1"
    if args.results_in:
        given = [name for name in _RUN_ONLY if getattr(args, name, None) not in (None, False)]
        if args.repeat != 1:
            given.append("repeat")
        if given:
            flag = "-n" if given[0] == "workers" else "--" + given[0].replace("_", "-")
            return (f"{flag}={getattr(args, given[0])!r}: not with --results-in (the gate judges that document as "
                    f"it is; it runs nothing)")
    return None


def main(args: argparse.Namespace) -> int:
    if problem := _check_args(args):
        return _usage(problem)
    try:
        options = resolve_suite_options(args)
        if not args.results_in:
            preflight(options, main_job=True)
        elif args.report:  # a run's outputs are checked by preflight; with --results-in only the report is written
            check_writable("--report", args.report)
        if args.update_baseline:
            check_writable("--baseline", args.baseline)
    except CaseError as exc:
        return _usage(str(exc))
    if not args.results_in:
        args.report = options.report  # the main job's default included
    for name in ("json", "report", "results_in"):  # before a run changes the working directory (harness.suite)
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    options = dataclasses.replace(options, json=args.json, report=args.report)
    baseline_path = Path(args.baseline).resolve()
    baseline: dict[str, Any] | None = None
    if baseline_path.exists() or not args.update_baseline:
        try:
            baseline = load_baseline(baseline_path)
        except ResultsError as exc:
            return _usage(f"{exc}" + ("" if args.update_baseline else
                                      "; record one with --update-baseline on a known-good revision"))

    documents = []
    if args.results_in:
        try:
            documents.append(load_results(args.results_in, versions=GATE_VERSIONS))
        except ResultsError as exc:
            return _usage(str(exc))
        if args.report:
            from .html import write_html

            print(f"gate: HTML report of {args.results_in}: {write_html(documents[0], args.report)}")
    else:
        with tempfile.TemporaryDirectory(prefix="syncbn-gate-") as tmp:
            for i in range(args.repeat):
                last = i == args.repeat - 1
                private = not (args.json and last)
                path = os.path.join(tmp, f"results-{i}.json") if private else args.json
                code, document = _run_once(args, options, path, last=last, private=private)
                if document is None:
                    return _usage(f"the suite did not run (exit {code}): see the pytest output above")
                documents.append(document)
                if _incomplete(document):
                    break
    for document in documents:
        if why := _incomplete(document):
            if args.update_baseline:
                print(f"gate: INCOMPLETE: not recording an incomplete run as the baseline: {why}")
            else:
                print(f"gate: INCOMPLETE: not judged: {why}")
            return EXIT_INCOMPLETE
    current = merge_runs([summarize_results(d) for d in documents])
    if not current:
        return _usage("the run selected no cases")
    wanted = selection(args, documents[-1])

    if args.update_baseline:
        document = baseline or {"schema": BASELINE_SCHEMA, "version": BASELINE_VERSION, "environments": {}}
        failing = []
        for key, entry in current.items():
            entry["selection"] = wanted
            entry["recorded"]["recorded_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")
            document["environments"][key] = entry
            failing += [f"{key} {case_id}: {case['outcome']}: {case['problem']}"
                        for case_id, case in entry["cases"].items() if case["outcome"] in FAILING]
        save_baseline(document, baseline_path)
        cases = sum(len(entry["cases"]) for entry in current.values())
        print(f"gate: baseline {baseline_path} updated for {', '.join(sorted(current))}: {cases} cases, "
              f"{len(documents)} run(s)")
        if failing:
            print("gate: the recorded run has failing cases; a baseline should come from a known-good revision:")
            print("\n".join("  " + line for line in failing))
            return EXIT_FAILED
        return EXIT_OK

    assert baseline is not None
    report = GateReport()
    for key, entry in sorted(current.items()):
        base = baseline["environments"].get(key)
        if base is None:
            known = ", ".join(sorted(baseline["environments"])) or "none"
            return _usage(f"baseline {baseline_path} has no entry for environment {key!r} (it has: {known}); a "
                          f"baseline only judges runs on the same device kind and backend: record one here with "
                          f"--update-baseline")
        if base.get("selection") != wanted:
            return _usage(f"environment {key}: the baseline selected {base.get('selection')}, this run {wanted}; "
                          f"run the gate with the options the baseline was recorded with")
        recorded = base.get("recorded", {})
        harness = str(recorded.get("harness_revision"))[:12]
        if harness in ("None", "unknown") and recorded.get("harness_version"):  # an installed harness
            harness = recorded["harness_version"]
        print(f"gate: {key}: {len(entry['cases'])} cases against baseline of {recorded.get('recorded_at', '?')} "
              f"(torch {recorded.get('torch')}, harness {harness}, "
              f"sut {recorded.get('sut')}, {recorded.get('runs', 1)} run(s)); now torch "
              f"{entry['recorded'].get('torch')}, sut {entry['recorded'].get('sut')}")
        judge(entry, base, growth_factor=args.growth_factor, growth_floor=args.growth_floor, report=report)
    for note in report.notes[:20]:
        print(f"note: {note}")
    if len(report.notes) > 20:
        print(f"note: ... and {len(report.notes) - 20} more new cases")
    if report.candidates:
        print(f"improved by more than {args.growth_factor:g}x (candidates for tightening the tolerance or "
              f"re-recording the baseline):")
        for line in report.candidates[:30]:
            print(f"  {line}")
        if len(report.candidates) > 30:
            print(f"  ... and {len(report.candidates) - 30} more")
    for line in report.problems:
        print(line)
    if report.problems:
        print(f"gate: FAILED ({len(report.problems)} problem(s))")
        return EXIT_FAILED
    print("gate: PASSED")
    return EXIT_OK
