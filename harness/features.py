"""The features of SyncBatchNorm a run covers, defined once, as predicates over a case record's ``params``.

Each feature is (name, description, predicate, the case kinds it applies to); the predicate reads the params dict
of a results document's case record (``ModuleSpec`` / ``OpSpec`` / ``ModelSpec`` ``to_dict()``, also from an older
document), so the conformance table works from records, for a run of this harness or an older one. A record says
its kind (``record_kind``: "kind", "level" in documents before version 3). A case counts in every feature it has.
``conformance(cases)`` counts, per feature, the cases that passed, failed, failed as a documented known deviation,
were declared unsupported by the implementation (harness.sut.Unsupported), or were not judged.

What a count is about:
- **Only cases that judged the SUT.** A record says what its case judged (``subject``: "sut", or "kernels" for an
  op case run with another SUT than torch: it tests torch's five kernels, or the ``--kernels`` substitutes, which
  that SUT need not use; harness.kinds). The table and the SUT's counts take only "sut" cases (``judges_sut``).
- **Unsupported where the declaration says.** A case declared unsupported counts as "unsupported" under the
  features its declaration concerns and as "not judged" under its other features (a 5-D case of a 4-D-only SUT is
  unsupported as "5-D input", not as "float32 input"). Which features those are (``unsupported_features``): the ones
  the SUT named (``Unsupported(reason, features=[...])``, names of FEATURES), else inferred from the run's evidence,
  never beyond it: for each reason and case kind, the features every case declared with it has and no judged case
  has; if they share none (a reason covering float16 and bfloat16 cases), per case, its features no judged case
  has; if none, or if no case of its kind was judged (nothing to tell the features apart with), the feature is
  unknown and the case is unsupported only in its kind's row ("module cases"). A kind's row counts every case of
  the kind as it ended.
- **Facts of the run.** A few features are facts of the run rather than of the case (``of_record``: how the
  compiled lane compiled it, harness.compile_report): their predicate reads the whole record.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .compile_report import compiled_whole, graph_breaks
from .outcomes import COLUMNS as OUTCOME_COLUMNS
from .outcomes import JUDGED, outcome

__all__ = ["Feature", "FEATURES", "FEATURE_NAMES", "record_kind", "features_of", "conformance", "FeatureRow",
           "COLUMNS", "NOT_JUDGED", "column_of", "KIND_NAMES", "SUT", "KERNELS", "case_subject", "judges_sut",
           "Declared", "unsupported_features", "declared_region", "case_cost", "COST_KEYS"]

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


def _schedule(p: Params) -> list[list[int]]:
    """The ranks' batch sizes of every distinct phase: ``shard_sizes``, then ``step_shard_sizes`` (module cases)."""
    return [list(p["shard_sizes"]), *(list(sizes) for sizes in p.get("step_shard_sizes") or ())]


def _rank_counts(p: Params) -> list[list[int]]:
    """Elements per channel on each rank, per distinct phase (module and op cases)."""
    spatials = p.get("rank_spatial") or [p.get("spatial") or []] * len(p["shard_sizes"])
    return [[n * math.prod(s) for n, s in zip(sizes, spatials)] for sizes in _schedule(p)]


def _max_group_count(p: Params) -> int:
    """The largest number of elements per channel a synchronising group (an op: all its shards) reduces over."""
    groups = p.get("groups") or [list(range(len(p["shard_sizes"])))]
    return max(sum(counts[r] for r in g) for counts in _rank_counts(p) for g in groups)


def _vector_tail(p: Params) -> bool:
    """channels_last with 32 channels or more, not a multiple of 8: a vectorised channel loop has a remainder."""
    return p["layout"] != "contiguous" and int(p["channels"]) >= 32 and int(p["channels"]) % 8 != 0


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
    Feature("empty shards", "a rank with no samples", lambda p: any(0 in sizes for sizes in _schedule(p))),
    Feature("uneven shards", "ranks with different numbers of samples",
            lambda p: any(len(set(sizes)) > 1 for sizes in _schedule(p))),
    Feature("ranks with different spatial sizes", "each rank its own spatial size (per-GPU image sizes)",
            lambda p: bool(p.get("rank_spatial")), ("module",)),
    Feature("shard sizes change between steps", "a rank's batch size differs from one step to the next (state "
            "captured at the first step is stale)", lambda p: bool(p.get("step_shard_sizes")), ("module",)),
    Feature("eval between training steps", "eval phases interleaved with the training steps (eval must leave the "
            "training state alone)", lambda p: bool(p.get("interleave_eval")), ("module",)),
    Feature("frozen affine", "weight and bias with requires_grad=False: no parameter gradients",
            lambda p: bool(p.get("frozen_affine")), ("module",)),
    Feature("no-grad training forward", "training-mode forward under torch.no_grad(), no backward (precise-BN)",
            lambda p: bool(p.get("no_grad")), ("module",)),
    Feature("world size 1", "a single rank", lambda p: len(p["shard_sizes"]) == 1, ("module", "model")),
    Feature("world size >= 3", "three ranks or more", lambda p: len(p["shard_sizes"]) >= 3, ("module", "model")),
    Feature("world size >= 5", "five ranks or more (a tree or hierarchical combine beyond one node of 4)",
            lambda p: len(p["shard_sizes"]) >= 5, ("module", "model")),
    Feature("more than 4096 values per channel on a rank", "a rank's per-channel reduction spans several blocks "
            "of 1024-4096 values, the last one partial",
            lambda p: max(max(counts) for counts in _rank_counts(p)) > 4096, _SHARDED),
    Feature("more than 1024 channels", "per-channel statistics exchanged in buffers of thousands of elements",
            lambda p: int(p["channels"]) > 1024, _SHARDED),
    Feature("channels_last, C >= 32 not a multiple of 8", "a vectorised channel loop with a remainder",
            _vector_tail, _SHARDED),
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

FEATURE_NAMES = frozenset(f.name for f in FEATURES)
_KIND_ROWS = frozenset(f.name for f in FEATURES if f.name.endswith(" cases"))  # "module cases": every case of a kind
NOT_JUDGED = "not judged"  # under a feature other than the one(s) a declaration of unsupported concerns
COLUMNS = (*OUTCOME_COLUMNS, NOT_JUDGED)  # the conformance table's, in order
SUT, KERNELS = "sut", "kernels"  # what a case judged (a record's "subject"; harness.kinds.subject_of)


def case_subject(case: dict[str, Any]) -> str:
    """What a case record judged: "sut" (the implementation under test; also every record of an older document)
    or "kernels" (an op case of another SUT than torch: torch's kernels or their --kernels substitutes)."""
    return str(case.get("subject") or SUT)


def judges_sut(case: dict[str, Any]) -> bool:
    return case_subject(case) == SUT


def column_of(outcome_name: str) -> str | None:
    """The conformance column a case outcome counts in (harness.outcomes)."""
    return outcome(outcome_name).column


def features_of(params: Params, kind: str = "module", record: dict[str, Any] | None = None) -> list[str]:
    """The names of every feature a case of ``kind`` has (with its ``record``, also the facts of its run)."""
    return [f.name for f in FEATURES if f.has(params, kind, record)]


@dataclass(frozen=True)
class Declared:
    """The features a declaration of unsupported concerns: ``how`` is "declared" (the SUT named them), "inferred"
    (from the run's evidence, see the module docstring) or "unknown" (``features`` empty)."""

    features: tuple[str, ...]
    how: str

    def text(self) -> str:
        return ", ".join(self.features) + f" ({self.how})" if self.features else "feature not identified"


def _declared_names(case: dict[str, Any]) -> tuple[str, ...]:
    """The feature names the SUT gave with its declaration (names not in FEATURES are ignored)."""
    return tuple(n for n in case.get("unsupported_features") or () if n in FEATURE_NAMES)


def unsupported_features(cases: Iterable[dict[str, Any]]) -> dict[str, Declared]:
    """For every case record declared unsupported that judged the SUT, by id: the features its declaration
    concerns (module docstring: named by the SUT, else inferred from the cases that were judged)."""
    cases = [c for c in cases if judges_sut(c)]
    judged: set[str] = set()
    judged_kinds: set[str] = set()
    for case in cases:
        if case.get("outcome") in JUDGED:
            judged.update(features_of(case.get("params") or {}, record_kind(case)))
            judged_kinds.add(record_kind(case))
    by_reason: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (reason, kind): kinds have different features
    found: dict[str, Declared] = {}
    for case in cases:
        if case.get("outcome") != "unsupported":
            continue
        named = _declared_names(case)
        if named:
            found[case["id"]] = Declared(named, "declared")
        else:
            by_reason.setdefault((case.get("unsupported") or "", record_kind(case)), []).append(case)
    for (_, kind), members in by_reason.items():
        if kind not in judged_kinds:  # nothing of the kind was judged: nothing to tell its features apart with
            found.update({c["id"]: Declared((), "unknown") for c in members})
            continue
        own = {c["id"]: [f for f in features_of(c.get("params") or {}, record_kind(c)) if f not in judged]
               for c in members}
        shared = [f for f in own[members[0]["id"]] if all(f in own[c["id"]] for c in members)]
        for case in members:
            features = tuple(shared or own[case["id"]])
            found[case["id"]] = Declared(features, "inferred" if features else "unknown")
    return found


def declared_region(cases: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The features the SUT declared unsupported, as far as the evidence shows (``unsupported_features``: named by
    the SUT, or inferred against judged cases). Kind rows ("module cases") count only when the SUT named them."""
    region: set[str] = set()
    for declared in unsupported_features(cases).values():
        region.update(f for f in declared.features if declared.how == "declared" or f not in _KIND_ROWS)
    return frozenset(region)


@dataclass
class FeatureRow:
    feature: Feature
    counts: Counter  # column -> cases
    failing_cases: list[str]  # ids
    unsupported_reasons: Counter  # reason -> cases
    not_judged_for: Counter = field(default_factory=Counter)  # the features the declarations concerned -> cases
    # Communication per training step and rank, summed over the cases that measured it (harness.collectives.cost):
    # "cases", "per_step", "bytes_per_step", "torch_per_step", "torch_bytes_per_step", "costlier" (cases issuing
    # more collectives per step than torch's SyncBatchNorm).
    communication: Counter = field(default_factory=Counter)

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    def mean_cost(self) -> dict[str, float] | None:
        """Collectives and bytes per training step and rank, the SUT's and torch's, averaged over the cases that
        measured them; None when none did."""
        n = self.communication["cases"]
        if not n:
            return None
        return {key: self.communication[key] / n for key in COST_KEYS}

    @property
    def judged(self) -> int:
        c = self.counts
        return c["passing"] + c["failing"] + c["known deviation"]

    @property
    def status(self) -> str:
        """One word: "failing" if any case fails, else "unsupported" if no case was judged and some were declared
        unsupported for this feature, "not judged" if no case was judged (each declared unsupported for another
        feature), "partly unsupported", "known deviation" if a case fails as documented, "partly judged" if some
        cases were declared unsupported for another feature, else "passing"."""
        c = self.counts
        if c["failing"]:
            return "failing"
        if not self.judged:
            return "unsupported" if c["unsupported"] else NOT_JUDGED
        if c["unsupported"]:
            return "partly unsupported"
        if c["known deviation"]:
            return "known deviation"
        return "partly judged" if c[NOT_JUDGED] else "passing"


COST_KEYS = ("per_step", "bytes_per_step", "torch_per_step", "torch_bytes_per_step")


def case_cost(case: dict[str, Any]) -> dict[str, float] | None:
    """A case record's communication per training step and rank against torch's SyncBatchNorm (the record's
    ``collectives``), or None when it was not measured (an older document, an op case, a case that did not
    finish)."""
    cost = case.get("collectives") or {}
    if any(cost.get(key) is None for key in COST_KEYS):
        return None
    return {key: float(cost[key]) for key in COST_KEYS}


def conformance(cases: Iterable[dict[str, Any]]) -> list[FeatureRow]:
    """Per feature (in FEATURES order), the cases that judged the SUT by column, and their communication; features no
    case has are left out. A case declared unsupported counts as unsupported under the features its declaration
    concerns (and in its kind's row), as not judged under the others."""
    cases = [c for c in cases if judges_sut(c)]
    declared = unsupported_features(cases)
    rows = {f.name: FeatureRow(f, Counter(), [], Counter()) for f in FEATURES}
    for case in cases:
        column = column_of(case.get("outcome", ""))
        if column is None:
            continue
        kind = record_kind(case)
        concerns = declared.get(case.get("id", ""))
        for feature in FEATURES:
            if not feature.has(case.get("params") or {}, kind, case):
                continue
            row = rows[feature.name]
            if column == "unsupported" and concerns is not None and feature.name not in concerns.features \
                    and feature.name not in _KIND_ROWS:
                row.counts[NOT_JUDGED] += 1
                row.not_judged_for.update(concerns.features or ("feature not identified",))
                continue
            row.counts[column] += 1
            if column == "failing":
                row.failing_cases.append(case["id"])
            if column == "unsupported":
                row.unsupported_reasons[case.get("unsupported") or "no reason given"] += 1
            cost = case_cost(case)
            if cost is not None:
                row.communication["cases"] += 1
                row.communication.update(cost)
                row.communication["costlier"] += cost["per_step"] > cost["torch_per_step"]
    return [row for row in rows.values() if row.cases]
