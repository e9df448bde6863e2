"""The structured results of a run: one versioned JSON document, every comparison of every case recorded.

Document (``"schema": "syncbn-harness/results", "version": 3``)::

    {"schema", "version", "created", "exit_status" (the harness's exit code: 0, 1, 2, 3; null while a torchrun job
     is running), "status" ("complete" | "incomplete"),
     "incomplete": null | {"reason", "cases_run", "cases_selected", "not_run": [ids]},  # counts: selected tests
                                                        # (cases and property tests); ids: case ids, else node ids
     "environment": {torch, torch_git, cuda, device_name, python, numpy, platform, backend, backends, world_sizes,
                     devices, sut, sut_description, kernels, profile, case, strict_features, compile,
                     strict_compile, tf32, cpu_kernel_behaviours, harness_revision, harness_version, harness_dirty,
                     seed_policy, workers, argv},
     "summary": {"cases" (catalogue cases), "property_tests", "failing_property_examples" (recorded as case records,
                 tagged "property"), "outcomes": {outcome: count}, "areas": {area: {outcome: count}},
                 "comparisons", "failed_comparisons" (outside known deviations),
                 "deviation_failed_comparisons" (inside them)},
     "cases": [case record, ...],                       # sorted by case id
     "property_tests": [{nodeid, outcome, examples, passed_examples, dtypes, worst_passing_ratio,
                         worst_passing_case, and optionally judged_examples, unsupported_examples,
                         deviation_examples, avoided_examples, unrun_examples, synced_examples, minimum_judged,
                         avoided_features, note}, ...],
                                                        # hypothesis tests: what they ran (examples are not cases);
                                                        # outcome "not exercised": fewer examples judged than
                                                        # minimum_judged (harness.strategies.PropertyTally)
     "diagnosis": [finding, ...]}                       # optional (absent before): harness.diagnosis.diagnose

Case record: id, kind (harness.kinds: "module" | "op" | "model"), subject (what it judged: "sut", or "kernels"
for an op case of another SUT than torch, harness.kinds.subject_of; optional, absent: "sut"), area (tags[0]), tags,
params (the spec's fields), device, backend, world_size, outcome (harness.outcomes: "passed" | "failed" | "xfailed"
| "xpassed" | "error" | "skipped" | "unsupported"), xfail_reason (the known deviation's whole reason), unsupported
(the SUT's reason), unsupported_features (optional: the features the SUT named with it, harness.features),
known_defect (optional: {sut, summary, link, match}, a failed case that matches the signature of another SUT's
known deviation, e.g. a torch defect inside a wrapper of torch, harness.deviations), harness_passed, failures
([{kind, message, rank, phase, traceback}]: a rank that crashed, hung or raised, a required error not raised,
...), comparisons, duration_s, rerun, nodeid, worker. Comparison record: quantity
(harness.quantities), item, phase, rank (null: summed over ``ranks``), ranks, dtype, passed, exact, statement
(what an exact check found), shape, total, mismatched, max_abs_err, max_rel_err, error_ratio (max |err| /
allowed), tolerance {atol, rtol, reason, scale}, worst {index, global_sample, location, actual, expected} or null,
channel_ratio, ratio_histogram (bins: harness.compare.RATIO_HISTOGRAM_EDGES), note, knock_on_of (the root failure
it follows from, harness.verdict).

Optional fields (a reader tolerates their absence: documents written before them lack them):
- a case record's ``collectives`` (module and model cases: harness.collectives.cost): per_step, bytes_per_step
  (collectives and bytes per training step and rank, the SUT's), torch_per_step, torch_bytes_per_step (torch's
  SyncBatchNorm for the same case), eval (collectives at eval phases), and for a failed case ``log`` (rank -> the
  collectives it issued: op, dtype, shape, numel, bytes, group, index, phase, stage, source) and, for a case whose
  ranks did not finish, ``inside`` (rank -> the collective it waited in);
- the document's ``diagnosis``: the findings of harness.diagnosis.diagnose, each {text, role, children} and, for a
  root (role "root"), ``data``: {roots, failed, checked, knock_on_only, phases, condition, failed_cases, knock_ons},
  the condition structured (kind "every" / "pair" / "necessary" / "groups" / "none" / "everywhere", its values,
  counts and chance).

Version 3 (this harness): a case record's kind is ``kind`` (version 2 called it ``level``). Version 2: comparisons
carry exact / statement / item / knock_on_of / tolerance.scale, failures are records, not strings, and the document
says whether the run completed. The verdict, the HTML report and ``python -m harness report`` read versions 1-3
(an older GPU run); the gate reads versions 2 and 3.

The document is strict JSON: non-finite numbers are written as the strings "inf", "-inf" and "nan" (read them
with :func:`as_float`), so a record can travel through pytest-xdist and be read by any JSON parser.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import harness
from harness.compare import RATIO_HISTOGRAM_EDGES
from harness.diagnosis import diagnose
from harness import files
from harness.kinds import kind_of, subject_of
from harness.verdict import mark_knock_ons

__all__ = ["SCHEMA", "VERSION", "READABLE_VERSIONS", "GATE_VERSIONS", "ResultsError", "case_record", "build_document",
           "environment", "save_results", "load_results", "as_float", "jsonable"]

SCHEMA = "syncbn-harness/results"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # what the verdict and the HTML report read
GATE_VERSIONS = (2, 3)  # what the gate reads: comparisons with statements and tolerance scales (version 2 on)
ROOT = Path(__file__).resolve().parent.parent  # the checkout (installed: the package harness, not a git repository)
SEED_POLICY = ("deterministic: every tensor of a case is drawn from the seed in its id (harness.data), so a case "
               "id reproduces the same data on any machine; the catalogue's seeds are fixed per profile")


class ResultsError(ValueError):
    """A results or baseline document that cannot be used: missing, not JSON, wrong schema or version."""


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: numpy scalars unwrapped, tuples as lists, non-finite floats as strings."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        return jsonable(item())
    return repr(value)


def as_float(value: Any) -> float:
    """A metric read back from a document: numbers as they are, "inf"/"-inf"/"nan" as floats, null as nan."""
    if value is None:
        return math.nan
    return float(value)  # float("inf"), float("nan") parse the strings jsonable writes


def _backend(spec: Any, requested: str | None) -> str:
    from harness.pool import resolve_backend

    try:
        return resolve_backend(spec.device, spec.world_size, requested)
    except Exception:  # noqa: BLE001 - a report must not fail on an odd --backend
        return str(requested)


def case_record(spec: Any, result: Any | None, *, outcome: str, backend: str | None = None,
                xfail_reason: str = "", longrepr: str = "", nodeid: str = "", duration_s: float | None = None,
                rerun: str = "", sut: str | None = None) -> dict[str, Any]:
    """The record of one case: ``result`` is its harness CaseResult (None when the test left none, e.g. it failed
    in a fixture); ``rerun`` is used when the result has no rerun line; ``sut``: the run's SUT (what the case
    judged depends on it: harness.kinds.subject_of)."""
    tags = tuple(getattr(spec, "tags", ()) or ())
    kind = kind_of(spec).name
    harness_part = result.record() if result is not None else {
        "harness_passed": False, "comparisons": [], "failures": [], "duration_s": duration_s or 0.0, "rerun": "",
        "unsupported": "", "unsupported_features": [], "known_defect": None}
    if result is None and longrepr and outcome in ("failed", "error"):  # e.g. a fixture error: the case never ran
        harness_part["failures"].append({"kind": "harness", "message": longrepr, "rank": None, "phase": "",
                                         "traceback": ""})
    if result is not None and outcome == "xpassed" and longrepr:  # strict xfail that passed: the deviation is gone
        harness_part["failures"].append({"kind": "harness", "message": longrepr, "rank": None, "phase": "",
                                         "traceback": ""})
    params = spec.to_dict()
    mark_knock_ons(harness_part["comparisons"], params)
    return jsonable({
        "id": spec.id,
        "kind": kind,
        "subject": subject_of(spec, sut),
        "area": tags[0] if tags else kind,
        "tags": list(tags),
        "params": params,
        "device": spec.device,
        "backend": _backend(spec, backend),
        "world_size": spec.world_size,
        "outcome": outcome,
        "xfail_reason": xfail_reason,
        **harness_part,
        "rerun": harness_part["rerun"] or rerun,
        "nodeid": nodeid,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
    })


def _git(*args: str) -> str | None:
    """git in the harness's own checkout; None elsewhere (installed, a git repository around site-packages, a
    project's own, is not the harness's)."""
    if not (ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(*, sut: str, kernels: str | None, profile: str, backend: str | None, case: str | None = None,
                cases: Iterable[dict[str, Any]] = (), workers: int = 0,
                strict_features: bool = False, compile: str = "off",
                strict_compile: bool = False) -> dict[str, Any]:
    """Where and with what the run happened (computed in the controller)."""
    import numpy
    import torch

    from harness.cpu_kernels import HARNESS_KERNEL_BEHAVIOURS
    from harness.sut import describe_sut
    from harness.tf32 import tf32_state

    cases = list(cases)
    devices = sorted({c["device"] for c in cases})
    device_name = None
    if any(c["device"] == "cuda" for c in cases) and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(0)
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return jsonable({
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "cuda": torch.version.cuda,
        "device_name": device_name,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "backend": backend or "auto",
        "backends": sorted({c["backend"] for c in cases}),
        "world_sizes": sorted({c["world_size"] for c in cases}),
        "devices": devices,
        "sut": sut,
        "sut_description": describe_sut(sut, devices),
        "kernels": kernels,
        "profile": profile,
        "case": case,
        "strict_features": strict_features,
        "compile": compile,  # torch.compile backend of --compile ("off": eager); absent in older documents
        "strict_compile": strict_compile,
        "tf32": tf32_state(),
        # On CPU, what the torch SUT takes from the harness's own kernels rather than from PyTorch's code.
        "cpu_kernel_behaviours": list(HARNESS_KERNEL_BEHAVIOURS) if "cpu" in devices and sut == "torch" else [],
        "harness_revision": _git("rev-parse", "HEAD") or "unknown",
        "harness_version": harness.__version__,
        "harness_dirty": bool(dirty) if dirty is not None else None,
        "seed_policy": SEED_POLICY,
        "workers": workers,
        "argv": sys.argv,
    })


def summarize(cases: list[dict[str, Any]], property_tests: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    areas: dict[str, Counter] = {}
    for case in cases:
        areas.setdefault(case["area"], Counter())[case["outcome"]] += 1
    comparisons = [c for case in cases for c in case["comparisons"]]
    examples = [case for case in cases if case.get("area") == "property"]  # a property test's failing example
    return {"cases": len(cases) - len(examples), "property_tests": len(property_tests or []),
            "failing_property_examples": len(examples),
            "outcomes": dict(Counter(case["outcome"] for case in cases)),
            "areas": {area: dict(counts) for area, counts in sorted(areas.items())},
            "comparisons": len(comparisons),
            "failed_comparisons": sum(not c["passed"] for case in cases if case["outcome"] != "xfailed"
                                      for c in case["comparisons"]),
            "deviation_failed_comparisons": sum(not c["passed"] for case in cases if case["outcome"] == "xfailed"
                                                for c in case["comparisons"])}


def build_document(cases: Iterable[dict[str, Any]], env: dict[str, Any], *, exit_status: int | None = None,
                   property_tests: list[dict[str, Any]] | None = None,
                   incomplete: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results document. ``incomplete``: {reason, cases_run, cases_selected, not_run} when the run did not
    finish (interrupted, terminated, a worker lost): such a document never reads as passed."""
    ordered = sorted(cases, key=lambda c: c["id"])
    document = {"schema": SCHEMA, "version": VERSION,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "exit_status": exit_status, "status": "incomplete" if incomplete else "complete",
                "incomplete": jsonable(incomplete) if incomplete else None,
                "ratio_histogram_edges": list(RATIO_HISTOGRAM_EDGES),
                "environment": env, "summary": summarize(ordered, property_tests), "cases": ordered,
                "property_tests": jsonable(property_tests or [])}
    document["diagnosis"] = jsonable(diagnose(document))
    return document


def save_results(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` as strict JSON."""
    return files.write_atomically(path, json.dumps(jsonable(document), separators=(",", ":"), allow_nan=False) + "\n")


def check_document(document: Any, *, schema: str = SCHEMA, versions: tuple[int, ...] = (VERSION,),
                   source: str = "document") -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ResultsError(f"{source}: expected a JSON object, got {type(document).__name__}")
    if document.get("schema") != schema:
        raise ResultsError(f"{source}: schema={document.get('schema')!r}, expected {schema!r}")
    if document.get("version") not in versions:
        raise ResultsError(f"{source}: version={document.get('version')!r}; this harness reads version "
                           f"{' or '.join(map(str, versions))} (re-record it with this harness)")
    return document


def load_results(path: str | os.PathLike[str], *, versions: tuple[int, ...] = (VERSION,)) -> dict[str, Any]:
    """Read a results document written by :func:`save_results`; ResultsError if unusable."""
    return check_document(read_json(path), versions=versions, source=str(path))


def read_json(path: str | os.PathLike[str]) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
