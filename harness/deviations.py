"""Known deviations: where an implementation under test knowingly departs from the specification (docs/semantics.md).

The reviewed list is ``harness/known_deviations.toml``; each entry names the SUT, the cases it covers (a regular
expression over the case id, a named condition over the parsed case, or both; optionally a device, and the
``--compile`` lanes it applies to: a deviation of torch.compile, or one the compiled code no longer has), why, and
the upstream issue. The pytest plugin runs matching cases as strict expected failures, so a fix upstream becomes a
visible XPASS failure; the torchrun launcher does the same. No pytest here: both entry points use this module.

Torch's defects inside another SUT. A SUT that wraps torch.nn.SyncBatchNorm, its Function or torch's native
BatchNorm runs torch's code and inherits its defects; its failure there is torch's, not its own.
- **Declared** (the factory's ``built_on = "torch"``, harness.sut.built_on): torch's entries apply to it as
  *inherited* deviations (``match_deviation(..., built_on=)``), judged after the run like a quantity-scoped entry:
  a case that fails as the entry documents is an expected failure ("xfailed"); one that passes is a pass, not an
  XPASS (the wrapper may avoid torch's code path there, and the entry is about torch, not about it); anything
  else fails. The SUT said it runs torch's kernels, so torch's reviewed list is the reviewed list of those kernels.
- **Not declared**: nothing is excused (a false "it is torch's fault" would hide the SUT's own bug), but a failed
  case whose failure matches the signature of another SUT's entry (``known_defect``: the entry's cases, by its
  regex / condition / device, and its quantities, or a crashed rank for an entry that aborts) says so next to the
  failure: "matches the signature of known torch defect ...", in the console, the HTML and the results record.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .errors import CaseError
from .kinds import parse_case_id
from .options import COMPILE_BACKENDS
from .quantities import is_known
from .spec import ModuleSpec

__all__ = ["KnownDeviation", "KNOWN_DEVIATIONS", "CONDITIONS", "load_known_deviations", "unmatched_deviations",
           "match_deviation", "all_profile_case_ids", "known_defect"]

KNOWN_DEVIATIONS = Path(__file__).resolve().parent / "known_deviations.toml"
_HALF = ("float16", "bfloat16")


def _synced_shards(spec: ModuleSpec) -> list[tuple[tuple[int, ...], int]]:
    """(group, training phase) of every synchronising group in every training phase (a phase's shard sizes may
    differ from the first's: ``step_shard_sizes``)."""
    return [(g, p) for p, (_, training) in enumerate(spec.phases) if training for g in spec.synced_groups]


def _group_count(spec: ModuleSpec, group: tuple[int, ...], phase: int) -> int:
    return sum(spec.rank_count(r, phase) for r in group)


def _cuda_half_reduction(s: ModuleSpec) -> bool:
    """CUDA, float16/bfloat16 input, float32 parameters, affine, and a phase whose backward runs a half-rounding
    reduction: SyncBatchNorm's batch_norm_backward_reduce in a synchronised training step (the harness feeds a
    contiguous grad_output, so channels-last input takes the contiguous kernel too), the native BatchNorm backward
    in eval, and in an unsynchronised training step for bfloat16 (cuDNN takes float16 there, accurately)."""
    if not (s.device == "cuda" and s.dtype in _HALF and s.effective_param_dtype == "float32" and s.affine):
        return False
    unsynced_training = s.steps >= 1 and any(len(g) == 1 for g in s.rank_groups)
    return bool(s.synced_groups) or s.eval_steps >= 1 or (s.dtype == "bfloat16" and unsynced_training)


def _cpu_bf16_channels_last(s: ModuleSpec) -> bool:
    """CPU, bfloat16 channels-last input, float32 parameters, affine, and a phase that runs torch's native CPU
    BatchNorm backward (eval, or a training step of a one-rank group): with the contiguous grad_output the harness
    feeds, its grad_bias is rounded to bfloat16. SyncBatchNorm's synchronised training runs the harness's kernels."""
    if not (s.device == "cpu" and s.dtype == "bfloat16" and s.effective_param_dtype == "float32" and s.affine
            and s.layout in ("channels_last", "channels_last_3d")):
        return False
    unsynced_training = s.steps >= 1 and any(len(g) == 1 for g in s.rank_groups)
    return s.eval_steps >= 1 or unsynced_training


def _local_batch_counts(s: ModuleSpec) -> list[int]:
    """The per-channel counts of every phase and rank that normalises its own batch with its batch statistics
    through torch's F.batch_norm: a training step of a one-rank group, eval without running statistics (each rank
    alone)."""
    counts = []
    for p, (_, training) in enumerate(s.phases):
        if training:
            counts += [s.rank_count(g[0], p) for g in s.rank_groups if len(g) == 1]
        elif not s.track_running_stats:
            counts += [s.rank_count(r, p) for r in range(s.world_size)]
    return counts


def _cpu_float64_sequential_sum(s: ModuleSpec) -> bool:
    """CPU, float64 input, constant or half-constant channels, and a phase that runs torch's native CPU BatchNorm
    with batch statistics (_local_batch_counts) over more than 512 values per channel. Its statistics kernel sums
    each channel sequentially in float64, so the mean of n equal values can be off by up to n/2 roundings: beyond
    512 values that passes the 256 (16 floors of 16 u) up to which harness.tolerances trusts the single-process
    yardstick, which shares the error."""
    return (s.device == "cpu" and s.dtype == "float64" and s.data in ("constant", "halfconst")
            and any(count > 512 for count in _local_batch_counts(s)))


def _cpu_mixed_local_batch_stats(s: ModuleSpec) -> bool:
    """CPU, float16/bfloat16 input with float32 parameters, affine, and a phase where F.batch_norm normalises a
    rank's own batch with its batch statistics (_local_batch_counts; what inductor compiles from
    native_batch_norm's decomposition)."""
    return (s.device == "cpu" and s.dtype in _HALF and s.effective_param_dtype == "float32" and s.affine
            and bool(_local_batch_counts(s)))


def _local_count_one(s: ModuleSpec) -> bool:
    """A rank normalises its own batch (_local_batch_counts) with one value per channel: F.batch_norm must raise
    'Expected more than 1 value per channel'."""
    return 1 in _local_batch_counts(s)


# Named conditions a known deviation can require of a case (``condition = "..."``), for the rules a regular
# expression over the id cannot state, such as "within some process group". Module cases only (any other kind of
# case never matches a condition).
CONDITIONS: dict[str, Callable[[ModuleSpec], bool]] = {
    "empty_group": lambda s: any(all(s.shard_sizes_at(p)[r] == 0 for r in g) for g, p in _synced_shards(s)),
    "group_count_one": lambda s: any(_group_count(s, g, p) == 1 for g, p in _synced_shards(s)),
    "half_input_empty_shard": lambda s: s.dtype in _HALF and any(
        any(s.shard_sizes_at(p)[r] == 0 for r in g) for g, p in _synced_shards(s)),
    "half_input_no_running_stats": lambda s: s.dtype in _HALF and not s.track_running_stats
    and bool(s.synced_groups),
    "float16_module_count_over_65504": lambda s: s.effective_param_dtype == "float16" and any(
        _group_count(s, g, p) > 65504 for g, p in _synced_shards(s)),
    "cuda_half_reduction": _cuda_half_reduction,
    "cpu_bf16_channels_last": _cpu_bf16_channels_last,
    "cpu_float64_sequential_sum": _cpu_float64_sequential_sum,
    "local_count_one": _local_count_one,
    "cpu_mixed_local_batch_stats": _cpu_mixed_local_batch_stats,
}


@functools.lru_cache(maxsize=4096)
def _module_spec(case_id: str) -> ModuleSpec | None:
    try:
        spec = parse_case_id(case_id)
    except CaseError:
        return None
    return spec if isinstance(spec, ModuleSpec) else None


@dataclass(frozen=True)
class KnownDeviation:
    """A reviewed entry: ``sut`` departs from the specification on the case ids matching ``case`` (a regular
    expression, searched) and ``condition`` (a name in CONDITIONS), when given, on ``device`` when given, in the
    ``compile`` lanes when given (values of ``--compile``: "off" is eager; absent: every lane)."""

    sut: str
    reason: str
    link: str
    case: str | None = None
    condition: str | None = None
    device: str | None = None
    aborts: bool = False  # the deviation kills a rank's process: pools contain that, torchrun cannot (launch skips)
    summary: str = ""  # one line for listings; the reason is the full story
    quantities: tuple[str, ...] | None = None  # only these may fail; every other comparison of the case is judged
    compile: tuple[str, ...] | None = None  # the --compile lanes it applies to ("off": eager); None: every lane
    # Not a field of the file: the SUT this entry applies to because it declared it is built on ``sut`` (None: the
    # entry's own SUT). An inherited entry is judged after the run, and a case that passes is a pass.
    inherited_by: str | None = None

    def __post_init__(self) -> None:
        if self.quantities is not None:
            object.__setattr__(self, "quantities", tuple(self.quantities))
        if self.compile is not None:
            object.__setattr__(self, "compile", tuple(self.compile))

    @property
    def of_the_compiler(self) -> bool:
        """The entry documents what torch.compile does (it applies to compiled lanes only): a compile failure is
        then what it expects."""
        return self.compile is not None and "off" not in self.compile

    @property
    def judged_after_run(self) -> bool:
        """Judged on the case's result (check_case) rather than as a pytest xfail mark."""
        return self.quantities is not None or self.inherited_by is not None

    def outcome(self, result) -> str:
        """How a matching case's result reads: "xfailed" (it departs as documented), "xpassed" (it no longer does:
        update the entry; "passed" for an inherited entry) or "failed" (something else failed too, which a
        quantity-scoped entry does not excuse)."""
        gone = "passed" if self.inherited_by else "xpassed"
        if self.quantities is None:
            return gone if result.passed else "xfailed"
        failed = {c.quantity for c in result.comparisons if not c.passed}
        if result.failures or result.unsupported or not failed <= set(self.quantities):
            return "failed"
        return "xfailed" if failed else gone

    def signature(self, result) -> str:
        """How a failed case of another SUT matches this entry beyond its cases ("" if it does not): its quantities
        failed (and which others did), a rank crashed (an entry that aborts), or the cases alone (an entry without
        quantities)."""
        failed = sorted({c.quantity for c in result.comparisons if not c.passed})
        crashed = any(f.kind in ("crashed", "peer") for f in result.failures)
        if self.quantities is not None:
            ours = [q for q in failed if q in self.quantities]
            others = [q for q in failed if q not in self.quantities]
            if not ours:
                return ""
            return (f"its quantities failed ({', '.join(ours)})"
                    + (f", and {', '.join(others)} too" if others else ", and only those")
                    + ("; other failures too" if result.failures else ""))
        if self.aborts:
            return "a rank's process was killed, as this defect does" if crashed else ""
        return "the entry names no quantities: compare the failure with its reason"

    def matches(self, sut: str, case_id: str, compile: str | None = "off") -> bool:
        """Whether the entry covers ``case_id`` run against ``sut`` in the ``--compile`` lane ``compile`` (None: in
        any lane the entry names)."""
        if self.sut != sut:
            return False
        if compile is not None and self.compile is not None and compile not in self.compile:
            return False
        if self.device is not None and self.device not in case_id.split("_"):  # every kind's id ends in its device
            return False
        if self.case is not None and re.search(self.case, case_id) is None:
            return False
        if self.condition is not None:
            spec = _module_spec(case_id)
            return spec is not None and CONDITIONS[self.condition](spec)
        return True

    @property
    def pattern(self) -> str:
        return " and ".join(f"{k}={v!r}" for k, v in (("case", self.case), ("condition", self.condition)) if v)

    @property
    def title(self) -> str:
        """One short line: the summary, else the reason's first sentence."""
        text = self.summary or self.reason.split(": ")[0]
        return (text if len(text) <= 110 else text[:107] + "...") + f" ({self.link})"


_FIELDS = {"sut", "case", "condition", "reason", "link", "device", "aborts", "summary", "quantities", "compile"}


def load_known_deviations(path: Path = KNOWN_DEVIATIONS) -> list[KnownDeviation]:
    """The entries of ``path``; CaseError naming the entry and field for a bad one. Read once per version of the
    file (its modification time and size), however often a process asks."""
    if not path.exists():
        return []
    stat = path.stat()
    return list(_load(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int, size: int) -> tuple[KnownDeviation, ...]:
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    entries = []
    for i, entry in enumerate(data.get("deviation", [])):
        where = f"{path.name}: deviation[{i}]"
        missing = [k for k in ("sut", "reason", "link") if not entry.get(k)]
        if missing or not (entry.get("case") or entry.get("condition")):
            raise CaseError(f"{where} lacks {missing or ['case or condition']}; every entry needs sut, reason, "
                            f"link, and a case pattern, a condition or both")
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise CaseError(f"{where} has unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
        if entry.get("case"):
            try:
                re.compile(entry["case"])
            except re.error as exc:
                raise CaseError(f"{where}.case={entry['case']!r} is not a regular expression: {exc}") from None
        if entry.get("condition") and entry["condition"] not in CONDITIONS:
            raise CaseError(f"{where}.condition={entry['condition']!r}: must be one of {sorted(CONDITIONS)}")
        if not isinstance(entry.get("aborts", False), bool):
            raise CaseError(f"{where}.aborts={entry['aborts']!r}: must be true or false")
        if entry.get("device") not in (None, "cpu", "cuda"):
            raise CaseError(f"{where}.device={entry['device']!r}: must be 'cpu' or 'cuda' (or absent)")
        lanes = entry.get("compile")
        if lanes is not None and not (isinstance(lanes, list) and lanes and set(lanes) <= set(COMPILE_BACKENDS)):
            raise CaseError(f"{where}.compile={lanes!r}: must be a non-empty list of --compile values "
                            f"{list(COMPILE_BACKENDS)} ('off': eager), or absent (every lane)")
        unknown_quantities = [q for q in entry.get("quantities") or [] if not is_known(q)]
        if unknown_quantities or "quantities" in entry and not entry["quantities"]:
            raise CaseError(f"{where}.quantities={entry.get('quantities')!r}: must name quantities of "
                            f"harness.quantities (unknown: {unknown_quantities})")
        entries.append(KnownDeviation(**entry))
    return tuple(entries)


def match_deviation(deviations: Iterable[KnownDeviation], sut: str, case_id: str, compile: str = "off", *,
                    built_on: str | None = None) -> KnownDeviation | None:
    """The first entry of ``sut`` matching ``case_id`` in the ``--compile`` lane ``compile``, else (a SUT declared
    built on ``built_on``, harness.sut.built_on) the first entry of ``built_on`` matching, as inherited; or None."""
    deviations = list(deviations)
    own = next((d for d in deviations if d.matches(sut, case_id, compile)), None)
    if own is not None or not built_on or built_on == sut:
        return own
    base = next((d for d in deviations if d.matches(built_on, case_id, compile)), None)
    return dataclasses.replace(base, inherited_by=sut) if base is not None else None


def known_defect(deviations: Iterable[KnownDeviation], sut: str, result, compile: str = "off") -> dict[str, str] | None:
    """For a failed case of ``sut`` in the ``--compile`` lane ``compile``: the first entry of ANOTHER SUT whose
    signature it matches (the entry's cases and ``KnownDeviation.signature``), as the note the reports show next to
    the failure ({"sut", "summary", "link", "match"}); None when the case passed or matches none."""
    if result.passed or result.unsupported:
        return None
    for d in deviations:
        if d.sut == sut or d.inherited_by or not d.matches(d.sut, result.spec.id, compile):
            continue
        match = d.signature(result)
        if match:
            where = " and ".join(f"{k} {v}" for k, v in (("condition", d.condition), ("case", d.case),
                                                          ("device", d.device)) if v)
            return {"sut": d.sut, "summary": d.summary or d.reason.split(": ")[0], "link": d.link,
                    "match": f"same cases ({where}); {match}"}
    return None


def unmatched_deviations(deviations: list[KnownDeviation], case_ids: set[str]) -> list[KnownDeviation]:
    """Entries matching no case id (of any SUT, in any lane they name): stale or mistyped."""
    return [d for d in deviations if not any(d.matches(d.sut, case_id, None) for case_id in case_ids)]


def all_profile_case_ids() -> set[str]:
    """Every case id of every profile, on every device, every kind."""
    from .catalogue import PROFILES
    from .kinds import catalogue_cases

    return {case.id for profile in PROFILES for device in ("cpu", "cuda") for case in catalogue_cases(profile, device)}

