"""The features of SyncBatchNorm a run covers, defined once, as predicates over a case record's ``params``.

Each feature is (name, description, predicate, the case kinds it applies to); the predicate reads the params dict
of a results document's case record (``ModuleSpec`` / ``OpSpec`` / ``ModelSpec`` ``to_dict()``, also from an older
document), so the conformance table works from records, for a run of this harness or an older one. A record says
its kind (``record_kind``: "kind", "level" in documents before version 3). A case counts in every feature it has.
``conformance(cases)`` counts, per feature, the cases that passed, failed, failed as a documented known deviation,
or were declared unsupported by the implementation (harness.sut.Unsupported). A few features are facts of the run
rather than of the case (``of_record``: how the compiled lane compiled it, harness.compile_report): their predicate
reads the whole record.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .compile_report import compiled_whole, graph_breaks
from .outcomes import COLUMNS, outcome

__all__ = ["Feature", "FEATURES", "record_kind", "features_of", "conformance", "FeatureRow", "COLUMNS",
           "column_of", "KIND_NAMES"]

HALF = ("float16", "bfloat16")
Params = dict[str, Any]


KIND_NAMES = ("module", "op", "model")  # the case kinds of harness.kinds, as records name them
_SHARDED = ("module", "op")  # kinds whose params describe an input tensor (shape, layout, dtype per shard)


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    predicate: Callable[[Params], bool]
    kinds: tuple[str, ...] = KIND_NAMES  # the case kinds that can have it
    of_record: bool = False  # the predicate reads the whole case record (a fact of the run), not its params

    def has(self, params: Params, kind: str = "module", record: dict[str, Any] | None = None) -> bool:
        if kind not in self.kinds or (self.of_record and record is None):
            return False
        try:
            return bool(self.predicate(record if self.of_record else (params or {})))
        except (TypeError, ValueError, KeyError):  # a malformed or foreign record has none of the features
            return False


def record_kind(case: dict[str, Any]) -> str:
    """The kind of a results document's case record: "kind" (version 3), "level" (versions 1 and 2)."""
    return str(case.get("kind") or case.get("level") or "module")


def _dims(p: Params) -> int:
    """The input's dimensions (N, C, spatial...)."""
    return 2 + len(p["spatial"])


def _param_dtype(p: Params) -> str:
    return p.get("param_dtype") or p["dtype"]


def _rank_counts(p: Params) -> list[int]:
    """Elements per channel on each rank (module and op cases)."""
    spatials = p.get("rank_spatial") or [p.get("spatial") or []] * len(p["shard_sizes"])
    return [n * math.prod(s) for n, s in zip(p["shard_sizes"], spatials)]


def _max_group_count(p: Params) -> int:
    """The largest number of elements per channel a synchronising group (an op: all its shards) reduces over."""
    counts = _rank_counts(p)
    groups = p.get("groups") or [list(range(len(counts)))]
    return max(sum(counts[r] for r in g) for g in groups)


def _offset(p: Params) -> bool:
    return "loc" in p and abs(float(p["loc"])) >= 10 * float(p.get("scale", 1.0))


FEATURES: tuple[Feature, ...] = (
    Feature("2-D input", "(N, C) input: BatchNorm1d without a length", lambda p: _dims(p) == 2, _SHARDED),
    Feature("3-D input", "(N, C, L) input", lambda p: _dims(p) == 3, _SHARDED),
    Feature("4-D input", "(N, C, H, W) input", lambda p: _dims(p) == 4, _SHARDED),
    Feature("5-D input", "(N, C, D, H, W) input", lambda p: _dims(p) == 5, _SHARDED),
    Feature("float64 input", "input in float64", lambda p: p["dtype"] == "float64"),
    Feature("float32 input", "input in float32", lambda p: p["dtype"] == "float32"),
    Feature("float16 input", "input in float16", lambda p: p["dtype"] == "float16"),
    Feature("bfloat16 input", "input in bfloat16", lambda p: p["dtype"] == "bfloat16"),
    Feature("half input, float32 parameters", "float16/bfloat16 input with float32 weight, bias and running "
            "statistics (mixed precision)", lambda p: p["dtype"] in HALF and _param_dtype(p) == "float32",
            ("module",)),
    Feature("half module", "float16/bfloat16 input and parameters (module.half())",
            lambda p: p["dtype"] in HALF and _param_dtype(p) == p["dtype"], ("module",)),
    Feature("autocast", "run under torch.autocast", lambda p: bool(p.get("autocast")), ("module",)),
    Feature("channels_last", "4-D input in channels_last memory format", lambda p: p["layout"] == "channels_last",
            _SHARDED),
    Feature("channels_last_3d", "5-D input in channels_last_3d memory format",
            lambda p: p["layout"] == "channels_last_3d", _SHARDED),
    Feature("momentum None", "momentum=None: cumulative moving average of the statistics",
            lambda p: "momentum" in p and p["momentum"] is None, ("module", "model")),
    Feature("momentum 0 or 1", "momentum 0 (running statistics frozen) or 1 (the last batch's)",
            lambda p: p.get("momentum") is not None and float(p["momentum"]) in (0.0, 1.0)),
    Feature("affine off", "affine=False: no weight and bias", lambda p: p.get("affine") is False, _SHARDED),
    Feature("no running statistics", "track_running_stats=False",
            lambda p: p["track_running_stats"] is False, ("module",)),
    Feature("eval with running statistics", "eval steps normalising with the running statistics",
            lambda p: p["track_running_stats"] is True and int(p.get("eval_steps") or 0) >= 1, ("module",)),
    Feature("eval without running statistics", "eval steps without running statistics (batch statistics, local)",
            lambda p: p["track_running_stats"] is False and int(p.get("eval_steps") or 0) >= 1, ("module",)),
    Feature("process groups", "SyncBatchNorm over process groups, not the whole world",
            lambda p: bool(p.get("groups")), ("module",)),
    Feature("empty shards", "a rank with no samples", lambda p: 0 in p["shard_sizes"]),
    Feature("uneven shards", "ranks with different numbers of samples", lambda p: len(set(p["shard_sizes"])) > 1),
    Feature("ranks with different spatial sizes", "each rank its own spatial size (per-GPU image sizes)",
            lambda p: bool(p.get("rank_spatial")), ("module",)),
    Feature("world size 1", "a single rank", lambda p: len(p["shard_sizes"]) == 1, ("module", "model")),
    Feature("world size >= 3", "three ranks or more", lambda p: len(p["shard_sizes"]) >= 3, ("module", "model")),
    Feature("offset data", "data far from zero: |loc| >= 10·scale (cancellation in E[x²] - E[x]²)", _offset,
            _SHARDED),
    Feature("constant channels", "constant or half-constant channels (zero variance)",
            lambda p: p.get("data") in ("constant", "halfconst"), ("module",)),
    Feature("large eps", "eps >= 0.1", lambda p: float(p.get("eps", 0.0)) >= 0.1, _SHARDED),
    Feature("more than 65504 elements per channel", "a group's count above float16's largest finite value",
            lambda p: _max_group_count(p) > 65504, _SHARDED),
    Feature("TF32", "a model with TF32 convolutions and matmuls allowed", lambda p: bool(p.get("tf32")), ("model",)),
    Feature("module cases", "one SyncBatchNorm layer against the float64 reference", lambda p: True, ("module",)),
    Feature("op cases", "one of the five batch-norm kernels alone", lambda p: True, ("op",)),
    Feature("model cases", "a small network under DDP", lambda p: True, ("model",)),
    Feature("compiled whole", "ran under --compile without a graph break: dynamo captured every frame whole",
            compiled_whole, of_record=True),
    Feature("graph breaks", "ran under --compile with graph breaks (their reasons: the diagnosis, the HTML report)",
            lambda r: graph_breaks(r) > 0, of_record=True),
)

def column_of(outcome_name: str) -> str | None:
    """The conformance column a case outcome counts in (harness.outcomes)."""
    return outcome(outcome_name).column


def features_of(params: Params, kind: str = "module", record: dict[str, Any] | None = None) -> list[str]:
    """The names of every feature a case of ``kind`` has (with its ``record``, also the facts of its run)."""
    return [f.name for f in FEATURES if f.has(params, kind, record)]


@dataclass
class FeatureRow:
    feature: Feature
    counts: Counter  # column -> cases
    failing_cases: list[str]  # ids
    unsupported_reasons: Counter  # reason -> cases

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> str:
        """One word: "failing" if any case fails, else "unsupported" if every case was declared unsupported,
        "partly unsupported", "known deviation" if a case fails as documented, else "passing"."""
        c = self.counts
        if c["failing"]:
            return "failing"
        if c["unsupported"] and not (c["passing"] or c["known deviation"]):
            return "unsupported"
        if c["unsupported"]:
            return "partly unsupported"
        return "known deviation" if c["known deviation"] else "passing"


def conformance(cases: Iterable[dict[str, Any]]) -> list[FeatureRow]:
    """Per feature (in FEATURES order), the cases by column; features no case has are left out."""
    rows = {f.name: FeatureRow(f, Counter(), [], Counter()) for f in FEATURES}
    for case in cases:
        column = column_of(case.get("outcome", ""))
        if column is None:
            continue
        kind = record_kind(case)
        for feature in FEATURES:
            if feature.has(case.get("params") or {}, kind, case):
                row = rows[feature.name]
                row.counts[column] += 1
                if column == "failing":
                    row.failing_cases.append(case["id"])
                if column == "unsupported":
                    row.unsupported_reasons[case.get("unsupported") or "no reason given"] += 1
    return [row for row in rows.values() if row.cases]
