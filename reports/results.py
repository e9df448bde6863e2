"""The structured results of a run: one versioned JSON document, every comparison of every case recorded.

Document (``"schema": "syncbn-harness/results", "version": 1``)::

    {"schema", "version", "created", "exit_status",
     "environment": {torch, torch_git, cuda, device_name, python, numpy, platform, backend, backends, world_sizes,
                     devices, sut, sut_description, kernels, profile, case, harness_revision, harness_dirty,
                     seed_policy, workers},
     "summary": {"outcomes": {outcome: count}, "areas": {area: {outcome: count}}, "comparisons",
                 "failed_comparisons" (outside known deviations), "deviation_failed_comparisons" (inside them)},
     "cases": [case record, ...],                       # sorted by case id
     "property_tests": [{nodeid, outcome, examples, passed_examples, dtypes, worst_passing_ratio,
                         worst_passing_case}, ...]}     # hypothesis tests: what they ran (examples are not cases)

Case record: id, level ("op" | "module"), area (tags[0]), tags, params (spec.to_dict()), device, backend,
world_size, outcome as pytest saw it ("passed" | "failed" | "xfailed" | "xpassed" | "error"), xfail_reason,
harness_passed (the harness's own verdict), failures (non-comparison failures: rank tracebacks, hangs), comparisons,
duration_s, rerun, nodeid, worker. Comparison record: quantity, phase, rank (null: summed over ``ranks``), ranks,
level, dtype, device, backend, passed, shape, total, mismatched, mismatched_fraction, max_abs_err, max_rel_err,
error_ratio (max |err| / allowed), tolerance {atol, rtol, reason}, worst {index, global_sample, location, actual,
expected} or null, channel_ratio, ratio_histogram (bins: harness.compare.RATIO_HISTOGRAM_EDGES), note.

The document is strict JSON: non-finite numbers are written as the strings "inf", "-inf" and "nan" (read them
with :func:`as_float`), so a record can travel through pytest-xdist and be read by any JSON parser.
"""
from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from harness.compare import RATIO_HISTOGRAM_EDGES, Comparison, format_location
from harness.spec import CaseSpec, OpSpec

__all__ = ["SCHEMA", "VERSION", "OUTCOMES", "ResultsError", "case_record", "comparison_record", "build_document",
           "environment", "save_results", "load_results", "as_float", "jsonable", "case_level"]

SCHEMA = "syncbn-harness/results"
VERSION = 1
OUTCOMES = ("passed", "failed", "xfailed", "xpassed", "error", "skipped")
ROOT = Path(__file__).resolve().parent.parent
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


def comparison_record(comparison: Comparison, *, level: str, device: str, backend: str) -> dict[str, Any]:
    worst = None
    if comparison.worst is not None:
        worst = dict(comparison.worst)
        worst["location"] = format_location(worst, comparison.rank) if worst.get("index") else ""
    return jsonable({
        "quantity": comparison.quantity,
        "phase": comparison.phase,
        "rank": comparison.rank,
        "ranks": list(comparison.ranks),
        "level": level,
        "dtype": comparison.dtype,
        "device": device,
        "backend": backend,
        "passed": comparison.passed,
        "shape": list(comparison.shape),
        "total": comparison.total,
        "mismatched": comparison.mismatched,
        "mismatched_fraction": comparison.mismatched / comparison.total if comparison.total else 0.0,
        "max_abs_err": comparison.max_abs_err,
        "max_rel_err": comparison.max_rel_err,
        "error_ratio": comparison.error_ratio,
        "tolerance": {"atol": comparison.tolerance.atol, "rtol": comparison.tolerance.rtol,
                      "reason": comparison.tolerance.reason},
        "worst": worst,
        "channel_ratio": comparison.channel_ratio,
        "ratio_histogram": getattr(comparison, "ratio_histogram", []),
        "note": comparison.note,
    })


def case_level(spec: Any) -> str:
    """"op" (one kernel), "module" (one SyncBatchNorm layer) or "model" (a network under DDP, or anything else)."""
    return "op" if isinstance(spec, OpSpec) else "module" if isinstance(spec, CaseSpec) else "model"


@functools.lru_cache(maxsize=1)
def _catalogue_tags() -> dict[str, tuple[str, ...]]:
    """Case id -> feature areas, for specs rebuilt from an id (``--case``), which carry no tags."""
    try:
        from cases import catalogue
    except ImportError:
        return {}
    tags: dict[str, tuple[str, ...]] = {}
    for profile in catalogue.PROFILES:
        for case in catalogue.all_cases(profile):
            tags.setdefault(case.id, case.tags)
    return tags


def case_tags(spec: Any) -> tuple[str, ...]:
    tags = tuple(getattr(spec, "tags", ()) or ())
    return tags or _catalogue_tags().get(spec.id, ())


def _backend(spec: Any, requested: str | None) -> str:
    from harness.pool import resolve_backend

    world = 1 if isinstance(spec, OpSpec) else getattr(spec, "world_size", 1)
    try:
        return resolve_backend(spec.device, world, requested)
    except Exception:  # noqa: BLE001 - a report must not fail on an odd --backend
        return str(requested)


def case_record(spec: Any, result: Any | None, *, outcome: str, backend: str | None = None,
                xfail_reason: str = "", longrepr: str = "", nodeid: str = "", duration_s: float | None = None,
                rerun: str = "") -> dict[str, Any]:
    """The record of one case: ``result`` is its harness CaseResult (None when the test left none, e.g. it failed
    in a fixture or does not report its comparisons); ``rerun`` is used when the result has no rerun line."""
    level = case_level(spec)
    tags = case_tags(spec)
    resolved = _backend(spec, backend)
    comparisons = [comparison_record(c, level=level, device=getattr(spec, "device", "cpu"), backend=resolved)
                   for c in (result.comparisons if result is not None else [])]
    failures = list(result.failures) if result is not None else []
    if result is None and longrepr and outcome in ("failed", "error"):
        failures.append(longrepr)  # e.g. a fixture or collection-time error: the case never ran
    if result is not None and outcome == "xpassed" and longrepr:
        failures.append(longrepr)  # strict xfail that passed: the known deviation is gone
    return jsonable({
        "id": spec.id,
        "level": level,
        "area": tags[0] if tags else level,
        "tags": list(tags),
        "params": spec.to_dict(),
        "device": getattr(spec, "device", "cpu"),
        "backend": resolved,
        "world_size": 1 if isinstance(spec, OpSpec) else getattr(spec, "world_size", 1),
        "outcome": outcome,
        "xfail_reason": xfail_reason,
        "harness_passed": bool(result.passed) if result is not None else False,
        "failures": failures,
        "comparisons": comparisons,
        "duration_s": result.duration_s if result is not None else (duration_s or 0.0),
        "rerun": (result.rerun if result is not None else "") or rerun,
        "nodeid": nodeid,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
    })


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(*, sut: str, kernels: str | None, profile: str, backend: str | None, case: str | None = None,
                cases: Iterable[dict[str, Any]] = (), workers: int = 0) -> dict[str, Any]:
    """Where and with what the run happened (computed in the controller)."""
    import numpy
    import torch

    from harness.sut import describe_sut

    cases = list(cases)
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
        "devices": sorted({c["device"] for c in cases}),
        "sut": sut,
        "sut_description": describe_sut(sut),
        "kernels": kernels,
        "profile": profile,
        "case": case,
        "harness_revision": _git("rev-parse", "HEAD") or "unknown",
        "harness_dirty": bool(dirty) if dirty is not None else None,
        "seed_policy": SEED_POLICY,
        "workers": workers,
        "argv": sys.argv,
    })


def summarize(cases: list[dict[str, Any]]) -> dict[str, Any]:
    areas: dict[str, Counter] = {}
    for case in cases:
        areas.setdefault(case["area"], Counter())[case["outcome"]] += 1
    comparisons = [c for case in cases for c in case["comparisons"]]
    return {"outcomes": dict(Counter(case["outcome"] for case in cases)),
            "areas": {area: dict(counts) for area, counts in sorted(areas.items())},
            "comparisons": len(comparisons),
            "failed_comparisons": sum(not c["passed"] for case in cases if case["outcome"] != "xfailed"
                                      for c in case["comparisons"]),
            "deviation_failed_comparisons": sum(not c["passed"] for case in cases if case["outcome"] == "xfailed"
                                                for c in case["comparisons"])}


def build_document(cases: Iterable[dict[str, Any]], env: dict[str, Any], *, exit_status: int | None = None,
                   property_tests: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ordered = sorted(cases, key=lambda c: c["id"])
    return {"schema": SCHEMA, "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "exit_status": exit_status, "ratio_histogram_edges": list(RATIO_HISTOGRAM_EDGES),
            "environment": env, "summary": summarize(ordered), "cases": ordered,
            "property_tests": jsonable(property_tests or [])}


def save_results(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` as strict JSON (written to a temporary file, then renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(document), separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def check_document(document: Any, *, schema: str = SCHEMA, version: int = VERSION, source: str = "document"
                   ) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ResultsError(f"{source}: expected a JSON object, got {type(document).__name__}")
    if document.get("schema") != schema:
        raise ResultsError(f"{source}: schema={document.get('schema')!r}, expected {schema!r}")
    if document.get("version") != version:
        raise ResultsError(f"{source}: version={document.get('version')!r}; this harness reads version {version} "
                           f"(re-record it with this harness)")
    return document


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results document written by :func:`save_results`; ResultsError if unusable."""
    return check_document(read_json(path), source=str(path))


def read_json(path: str | os.PathLike[str]) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
