"""Known deviations: where an implementation under test knowingly departs from the specification (docs/semantics.md).

The reviewed list is ``harness/known_deviations.toml``; each entry names the SUT, the cases it covers (a regular
expression over the case id, a named condition over the parsed case, or both; optionally a device, and the
``--compile`` lanes it applies to: a deviation of torch.compile, or one the compiled code no longer has), why, and
the upstream issue. The pytest plugin runs matching cases as strict expected failures, so a fix upstream becomes a
visible XPASS failure; the torchrun launcher does the same. No pytest here: both entry points use this module.
"""
from __future__ import annotations

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
           "match_deviation", "all_profile_case_ids"]

KNOWN_DEVIATIONS = Path(__file__).resolve().parent / "known_deviations.toml"
_HALF = ("float16", "bfloat16")


def _synced_groups(spec: ModuleSpec) -> list[tuple[int, ...]]:
    """The process groups that communicate: 2 ranks or more, and at least one training step (SyncBatchNorm only
    synchronises in training; eval, with or without running statistics, stays local)."""
    return [g for g in spec.rank_groups if len(g) >= 2] if spec.steps >= 1 else []


def _group_count(spec: ModuleSpec, group: tuple[int, ...]) -> int:
    return sum(spec.rank_count(r) for r in group)


def _cuda_half_reduction(s: ModuleSpec) -> bool:
    """CUDA, float16/bfloat16 input, float32 parameters, affine, and a phase whose backward runs a half-rounding
    reduction: SyncBatchNorm's batch_norm_backward_reduce in a synchronised training step (the harness feeds a
    contiguous grad_output, so channels-last input takes the contiguous kernel too), the native BatchNorm backward
    in eval, and in an unsynchronised training step for bfloat16 (cuDNN takes float16 there, accurately)."""
    if not (s.device == "cuda" and s.dtype in _HALF and s.effective_param_dtype == "float32" and s.affine):
        return False
    unsynced_training = s.steps >= 1 and any(len(g) == 1 for g in s.rank_groups)
    return bool(_synced_groups(s)) or s.eval_steps >= 1 or (s.dtype == "bfloat16" and unsynced_training)


def _cpu_bf16_channels_last(s: ModuleSpec) -> bool:
    """CPU, bfloat16 channels-last input, float32 parameters, affine, and a phase that runs torch's native CPU
    BatchNorm backward (eval, or a training step of a one-rank group): with the contiguous grad_output the harness
    feeds, its grad_bias is rounded to bfloat16. SyncBatchNorm's synchronised training runs the harness's kernels."""
    if not (s.device == "cpu" and s.dtype == "bfloat16" and s.effective_param_dtype == "float32" and s.affine
            and s.layout in ("channels_last", "channels_last_3d")):
        return False
    unsynced_training = s.steps >= 1 and any(len(g) == 1 for g in s.rank_groups)
    return s.eval_steps >= 1 or unsynced_training


def _cpu_mixed_local_batch_stats(s: ModuleSpec) -> bool:
    """CPU, float16/bfloat16 input with float32 parameters, affine, and a phase where F.batch_norm normalises a
    rank's own batch with its batch statistics: a training step in a one-rank group, or eval without running
    statistics (what inductor compiles from native_batch_norm's decomposition)."""
    if not (s.device == "cpu" and s.dtype in _HALF and s.effective_param_dtype == "float32" and s.affine):
        return False
    unsynced_training = s.steps >= 1 and any(len(g) == 1 for g in s.rank_groups)
    return unsynced_training or (s.eval_steps >= 1 and not s.track_running_stats)


def _local_count_one(s: ModuleSpec) -> bool:
    """A rank normalises its own batch, one value per channel: a training step in a one-rank group, or eval without
    running statistics (local batch statistics). F.batch_norm must raise 'Expected more than 1 value per channel'."""
    alone = [r for g in s.rank_groups if len(g) == 1 for r in g]
    training = s.steps >= 1 and any(s.rank_count(r) == 1 for r in alone)
    local_eval = s.eval_steps >= 1 and not s.track_running_stats and any(
        s.rank_count(r) == 1 for r in range(s.world_size))
    return training or local_eval


# Named conditions a known deviation can require of a case (``condition = "..."``), for the rules a regular
# expression over the id cannot state, such as "within some process group". Module cases only (any other kind of
# case never matches a condition).
CONDITIONS: dict[str, Callable[[ModuleSpec], bool]] = {
    "empty_group": lambda s: any(all(s.shard_sizes[r] == 0 for r in g) for g in _synced_groups(s)),
    "group_count_one": lambda s: any(_group_count(s, g) == 1 for g in _synced_groups(s)),
    "half_input_empty_shard": lambda s: s.dtype in _HALF and any(
        any(s.shard_sizes[r] == 0 for r in g) for g in _synced_groups(s)),
    "half_input_no_running_stats": lambda s: s.dtype in _HALF and not s.track_running_stats
    and bool(_synced_groups(s)),
    "float16_module_count_over_65504": lambda s: s.effective_param_dtype == "float16" and any(
        _group_count(s, g) > 65504 for g in _synced_groups(s)),
    "cuda_half_reduction": _cuda_half_reduction,
    "cpu_bf16_channels_last": _cpu_bf16_channels_last,
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

    def outcome(self, result) -> str:
        """How a matching case's result reads: "xfailed" (it departs as documented), "xpassed" (it no longer does:
        update the entry) or "failed" (something else failed too, which a quantity-scoped entry does not excuse)."""
        if self.quantities is None:
            return "xpassed" if result.passed else "xfailed"
        failed = {c.quantity for c in result.comparisons if not c.passed}
        if result.failures or result.unsupported or not failed <= set(self.quantities):
            return "failed"
        return "xfailed" if failed else "xpassed"

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


def match_deviation(deviations: Iterable[KnownDeviation], sut: str, case_id: str,
                    compile: str = "off") -> KnownDeviation | None:
    """The first entry matching ``case_id`` of ``sut`` in the ``--compile`` lane ``compile``, or None."""
    return next((d for d in deviations if d.matches(sut, case_id, compile)), None)


def unmatched_deviations(deviations: list[KnownDeviation], case_ids: set[str]) -> list[KnownDeviation]:
    """Entries matching no case id (of any SUT, in any lane they name): stale or mistyped."""
    return [d for d in deviations if not any(d.matches(d.sut, case_id, None) for case_id in case_ids)]


def all_profile_case_ids() -> set[str]:
    """Every case id of every profile, on every device, every kind."""
    from .catalogue import PROFILES
    from .kinds import catalogue_cases

    return {case.id for profile in PROFILES for device in ("cpu", "cuda") for case in catalogue_cases(profile, device)}

