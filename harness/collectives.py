"""The collective audit: what the ranks said to each other, as data, and what that record proves.

Inside each rank, harness.rank.audit records every torch.distributed collective the SUT issues (``entry``: the op,
the dtype and shape of what this rank hands over, its bytes, the process group as global ranks, its position among
this rank's collectives on that group, and the phase and stage the rank was at). This module reads those records,
in the controller:

- ``deadlock``: a proof, from the ranks' live state (heartbeats) and the final state of the ranks that finished,
  that ranks wait in a collective a member of its group will never enter (it finished having issued fewer
  collectives on that group): the case fails at once, naming that rank and the collective, instead of waiting out
  the case timeout. ``waiting_text`` says the same, as far as the evidence goes, when the time runs out anyway.
- ``audit_checks``: exact checks of a finished case, as comparisons: the ranks of a group issued the same sequence
  of collectives at every phase (``collectives.sequence``), and every floating-point tensor they exchanged at a
  training or eval phase had at least the precision the semantics require (``collectives.precision``: float64 for
  float64 input, float32 otherwise; docs/semantics.md).
- ``cost`` and the yardstick ``torch_collectives``: collectives and bytes per training step and rank, against what
  torch's SyncBatchNorm issues for the same case (an extra collective is reported, never failed).

The audit sees calls through torch.distributed's Python functions (``torch.distributed.all_reduce`` or
``torch.distributed.distributed_c10d.all_reduce``, looked up when called); not a ProcessGroup's methods called
directly, functional collectives, or DDP's own communication (its C++ reducer, ``_broadcast_coalesced``).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, NamedTuple, Sequence

from .compare import Comparison, Tolerance

__all__ = ["P2P", "Proof", "Entry", "entry", "waits_in", "is_sut", "group_key", "describe", "describe_sequence",
           "snapshot", "deadlock",
           "waiting_text", "audit_checks", "required_precision", "cost", "torch_collectives", "per_step", "SEQUENCE",
           "PRECISION"]

Entry = dict[str, Any]
SEQUENCE = "collectives.sequence"
PRECISION = "collectives.precision"
_PRECISION_ORDER = {"float16": 1, "bfloat16": 1, "float32": 2, "float64": 3}


def group_key(members: Iterable[int]) -> str:
    """A process group as text: its global ranks, "0,1,2"."""
    return ",".join(map(str, members))


def entry(op: str, *, dtype: str, shape: Sequence[int], numel: int, nbytes: int, group: Sequence[int], index: int,
          phase: str, stage: str, source: str = "sut") -> Entry:
    """One collective as a rank issued it: what it handed over (``dtype``, ``shape``, ``numel``, ``nbytes``: this
    rank's input, not what it received), on which group (global ranks), its ``index`` among this rank's
    collectives on that group (from 0, per case), where the rank was (``phase``, ``stage``) and who issued it
    (``source``: "sut", or "ddp" for the model kind's gradient reduction, which is not the SUT's cost)."""
    return {"op": op, "dtype": dtype, "shape": list(shape), "numel": int(numel), "bytes": int(nbytes),
            "group": list(group), "index": int(index), "phase": phase, "stage": stage, "source": source}


# Point-to-point operations are no collectives: a send and its recv differ by design, and they are counted apart
# (harness.rank.audit numbers them on their own), logged and costed but never compared across ranks.
P2P = frozenset({"send", "recv", "isend", "irecv", "batch_isend_irecv"})
# Collectives whose ranks may legitimately hand over different sizes (uneven splits): compared by op and dtype.
_UNEVEN = frozenset({"all_to_all", "all_to_all_single"})


def _signature(e: Entry) -> tuple[Any, ...]:
    """What the ranks of a group must agree on, collective by collective."""
    return (e["op"], e["dtype"]) if e["op"] in _UNEVEN else (e["op"], e["dtype"], tuple(e["shape"]))


def _compared(e: Entry) -> bool:
    return e["op"] not in P2P


def _what(e: Entry) -> str:
    shape = "x".join(map(str, e["shape"])) or "scalar"
    return f"{e['op']} {e['dtype']} [{shape}]"


def describe(e: Entry) -> str:
    """'all_reduce float64 [2x3] #0 of group 0,1,2 at train0 (forward)'."""
    where = f"{e['phase']} ({e['stage']})" if e.get("stage") else e["phase"]
    return f"{_what(e)} #{e['index']} of group {group_key(e['group'])} at {where}"


def describe_sequence(entries: Sequence[Entry]) -> str:
    """'nothing' / 'all_gather float32 [7] (forward), all_reduce float32 [6] (backward)'."""
    if not entries:
        return "nothing"
    return ", ".join(_what(e) + (f" ({e['stage']})" if e.get("stage") else "") for e in entries)


def snapshot(log: Sequence[Entry], inside: Entry | None, pending: Sequence[Entry] = (), *,
             final: bool = False, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """A rank's audit state as its heartbeat carries it: collectives issued so far per group (``counts``, counted
    from ``log`` when not given), the one it is inside now (None: not in a collective) and the async ones in
    flight; ``final`` (the state a rank returns with) adds the whole log."""
    if counts is None:
        counts = defaultdict(int)
        for e in log:
            counts[group_key(e["group"])] += 1
    state = {"counts": dict(counts), "inside": inside, "pending": list(pending)}
    if final:
        state["log"] = list(log)
    return state


def is_sut(e: Entry) -> bool:
    """Issued by the SUT (not the harness's DDP): what the cost and the precision check count."""
    return e.get("source", "sut") == "sut"


def waits_in(state: dict[str, Any] | None) -> list[Entry]:
    """The collectives a rank waits in: the one it is inside and the async ones in flight."""
    state = state or {}
    return ([state["inside"]] if state.get("inside") else []) + list(state.get("pending") or [])


# -- hangs ------------------------------------------------------------------------------------------------------------
class Proof(NamedTuple):
    """What harness.collectives.deadlock proved: the statement, the rank at fault, the phase of the collective."""

    statement: str
    rank: int
    phase: str


def deadlock(finished: dict[int, dict[str, Any] | None], pending: dict[int, dict[str, Any] | None], *,
             settled: bool = False) -> Proof | None:
    """The proof (statement, the rank at fault, the phase) when the audit states show that ranks wait in a
    collective that cannot complete; None when the evidence proves nothing.

    ``finished``: the final audit state (``snapshot``) of every rank that returned or raised (None: not audited);
    ``pending``: the latest heartbeat state of every other rank. Two proofs: (1) a rank waits in collective #k of
    a group of which a finished member issued k collectives or fewer: that member will never enter it; (2) two
    ranks of a group issued their collective #k of that group with different ops, dtypes or shapes (one waits in
    it, or, ``settled``: once a rank died and nothing moves any more, any #k): the sequences differ. A waiting
    rank's state may be stale (it may have left the collective since), but a collective it left was entered by every
    member, and a stale #k is still its k-th collective, so neither proof depends on timing."""
    absent: dict[tuple[str, int], dict[str, Any]] = {}
    waits: dict[tuple[str, int], dict[int, Entry]] = defaultdict(dict)
    for rank, state in sorted(pending.items()):
        for inside in filter(_compared, waits_in(state)):
            key = group_key(inside["group"])
            waits[(key, inside["index"])][rank] = inside
            for member in inside["group"]:
                final = finished.get(member)
                if member == rank or final is None:
                    continue
                issued = final.get("counts", {}).get(key, 0)
                if issued <= inside["index"]:
                    slot = absent.setdefault((key, inside["index"]), {"entry": inside, "waiting": [], "absent": {}})
                    if rank not in slot["waiting"]:
                        slot["waiting"].append(rank)
                    slot["absent"][member] = issued
    for rank, state in sorted(finished.items()):  # what the finished ranks issued, at the slots that matter
        for e in filter(_compared, (state or {}).get("log") or []):
            slot = (group_key(e["group"]), e["index"])
            if settled or slot in waits:
                waits[slot].setdefault(rank, e)
    statements, culprits, phases = [], [], []
    for _, slot in sorted(absent.items(), key=lambda item: (item[0][1], item[0][0])):
        missing, waiting = sorted(slot["absent"]), sorted(slot["waiting"])
        never = "; ".join(f"rank {r} finished after issuing {slot['absent'][r]} collective"
                          f"{'' if slot['absent'][r] == 1 else 's'} on that group" for r in missing)
        statements.append(f"{_ranks(missing)} never entered {describe(slot['entry'])} that {_ranks(waiting)} "
                          f"wait{'' if len(waiting) > 1 else 's'} in ({never})")
        culprits += missing
        phases.append(slot["entry"]["phase"])
    for _, by_rank in sorted(waits.items(), key=lambda item: (item[0][1], item[0][0])):
        kinds: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for rank, e in sorted(by_rank.items()):
            kinds[_signature(e)].append(rank)
        if len(kinds) < 2:
            continue
        # The ranks most of the group agree with; between equals, those that issued it earlier in the program (a
        # rank that reached its k-th collective at a later phase or stage skipped one on the way).
        (_, most), *others = sorted(kinds.items(), key=lambda item: (-len(item[1]), _when(by_rank[item[1][0]]),
                                                                     item[1]))
        for _, ranks in others:
            mine, theirs = by_rank[ranks[0]], by_rank[most[0]]
            statements.append(f"{_ranks(ranks)} issued {describe(mine)}{_by(mine)} where {_ranks(most)} issued "
                              f"{describe(theirs)}{_by(theirs)}")
            culprits += ranks
            phases.append(theirs["phase"])
    if not statements:
        return None
    return Proof("collective mismatch: " + "; ".join(statements) + ": the ranks of a group must issue the same "
                 "collectives", culprits[0], phases[0])


_STAGES = {"construct": 0, "forward": 1, "backward": 2}


def _when(e: Entry) -> tuple[int, int, int]:
    """Where in a case's program a collective was issued: setup, then train0, train1, ..., eval0, ...; forward
    before backward (step phases count as training)."""
    phase = str(e.get("phase", ""))
    kind = phase.rstrip("0123456789")
    number = int(phase[len(kind):] or 0)
    return {"setup": 0, "train": 1, "step": 1, "eval": 2}.get(kind, 3), number, _STAGES.get(e.get("stage", ""), 3)


def _by(e: Entry) -> str:
    return "" if is_sut(e) else f" (issued by {e['source'].upper()}, not the SUT)"


def _ranks(ranks: Sequence[int]) -> str:
    return f"rank{'s' if len(ranks) > 1 else ''} {','.join(map(str, ranks))}"


def waiting_text(finished: dict[int, dict[str, Any] | None], live: dict[int, dict[str, Any] | None],
                 waiting: Iterable[int], positions: dict[int, Any]) -> tuple[str, list[int]]:
    """At a timeout (or beside a crash): which of the ``waiting`` ranks wait in which collective, and which members
    of its group are not in it and where they are instead, as far as the audit states tell (``finished``: the
    final state of the ranks that returned; ``live``: the last heartbeat state of the others), and those members;
    ("", []) when no waiting rank is known to be inside a collective."""
    by_collective: dict[tuple[str, int], list[int]] = defaultdict(list)
    entries: dict[tuple[str, int], Entry] = {}
    for rank in sorted(waiting):
        for inside in filter(_compared, waits_in(live.get(rank))):
            key = (group_key(inside["group"]), inside["index"])
            by_collective[key].append(rank)
            entries.setdefault(key, inside)
    parts, absent = [], []
    for key, ranks in by_collective.items():
        e = entries[key]
        others = []
        for member in e["group"]:
            if member in ranks:
                continue
            absent.append(member)
            state = finished.get(member) if member in finished else live.get(member)
            issued = state.get("counts", {}).get(key[0], 0) if state else None
            inside = waits_in(state)
            if member in finished:
                where = "returned"
            elif inside:
                where = f"waiting in {describe(inside[0])}"
            else:
                where = f"at {_position(positions.get(member))}, not in a collective"
            done = f", {issued} collective{'' if issued == 1 else 's'} issued on that group" if issued is not None \
                else ""
            others.append(f"rank {member} ({where}{done})")
        if others:
            parts.append(f"rank{'s' if len(ranks) > 1 else ''} {','.join(map(str, ranks))} "
                         f"wait{'' if len(ranks) > 1 else 's'} in {describe(e)}, which {'; '.join(others)} did not "
                         "enter")
    return "; ".join(parts), sorted(set(absent))


def _position(position: Any) -> str:
    if not position:
        return "an unknown position"
    phase, stage = position
    return f"{phase} ({stage})" if stage else phase


# -- exact checks of a finished case -----------------------------------------------------------------------------------
def required_precision(input_dtype: str) -> str:
    """The least precision a SyncBN's statistics and backward sums travel in (docs/semantics.md, "Collectives"):
    the accumulation dtype, float64 for float64 input, float32 otherwise."""
    return "float64" if input_dtype == "float64" else "float32"


def _check(quantity: str, phase: str, rank: int, ranks: tuple[int, ...], statement: str, reason: str,
           total: int = 1) -> Comparison:
    passed = not statement
    return Comparison(quantity=quantity, phase=phase, rank=rank, ranks=ranks, passed=passed, dtype="none",
                      shape=(), total=total, mismatched=0 if passed else 1, max_abs_err=0.0 if passed else math.inf,
                      max_rel_err=0.0 if passed else math.inf, error_ratio=0.0 if passed else math.inf,
                      tolerance=Tolerance(0.0, 0.0, reason), exact=True, statement=statement)


def _sequence_statement(phase: str, key: str, first: int, rank: int, mine: list[Entry], theirs: list[Entry]) -> str:
    if [_signature(e) for e in mine] == [_signature(e) for e in theirs]:
        return ""
    at = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if _signature(a) != _signature(b)),
              min(len(mine), len(theirs)))
    return (f"collectives on group {key} at {phase}: rank {rank} issued {len(mine)} ({describe_sequence(mine)}), "
            f"rank {first} issued {len(theirs)} ({describe_sequence(theirs)}); they first differ at #{at}")


def audit_checks(logs: dict[int, Sequence[Entry]], phases: Sequence[str], input_dtype: str) -> list[Comparison]:
    """The exact checks of the ranks' audit logs (rank -> entries, every rank of the case): per phase (``phases``,
    in order; "setup" first if anything was issued there) and process group, each rank's sequence against the
    group's first rank's; per phase and rank, the precision of every floating-point tensor exchanged at a training
    or eval phase."""
    checks: list[Comparison] = []
    by_phase: dict[str, dict[int, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for rank, log in logs.items():
        for e in log:
            by_phase[e["phase"]][rank].append(e)
    ordered = [p for p in ("setup", *phases) if p in by_phase] + sorted(set(by_phase) - {"setup", *phases})
    need = required_precision(input_dtype)
    for phase in ordered:
        per_rank = by_phase[phase]
        groups = {group_key(e["group"]): tuple(e["group"]) for entries in per_rank.values() for e in entries
                  if _compared(e)}
        for key, members in sorted(groups.items()):
            if len(members) < 2:
                continue
            first = members[0]
            theirs = [e for e in per_rank.get(first, []) if group_key(e["group"]) == key and _compared(e)]
            for rank in members[1:]:
                mine = [e for e in per_rank.get(rank, []) if group_key(e["group"]) == key and _compared(e)]
                checks.append(_check(SEQUENCE, phase, rank, (first, rank),
                                     _sequence_statement(phase, key, first, rank, mine, theirs),
                                     "the ranks of a group issue the same collectives, in the same order, with "
                                     "the same dtypes and shapes (docs/semantics.md)", total=len(theirs) or 1))
        if phase == "setup":
            continue
        for rank, entries in sorted(per_rank.items()):
            floating = [e for e in entries if e["dtype"] in _PRECISION_ORDER and is_sut(e)]
            if not floating:
                continue
            low = [e for e in floating if _PRECISION_ORDER[e["dtype"]] < _PRECISION_ORDER[need]]
            statement = (f"rank {rank} exchanged {describe(low[0])}: statistics travel in at least {need} for "
                         f"{input_dtype} input" + (f" ({len(low)} of {len(floating)} collectives narrower)"
                                                   if len(floating) > 1 else "")) if low else ""
            checks.append(_check(PRECISION, phase, rank, (rank,), statement,
                                 f"statistics and backward sums travel in at least {need} for {input_dtype} input "
                                 "(docs/semantics.md)", total=len(floating)))
    return checks


# -- cost -------------------------------------------------------------------------------------------------------------
def per_step(logs: dict[int, Sequence[Entry]], training_phases: Sequence[str]) -> tuple[float, float] | None:
    """(collectives, bytes) per training step and rank, averaged over the ranks; None without a training phase."""
    if not training_phases or not logs:
        return None
    phases = set(training_phases)
    count = sum(1 for log in logs.values() for e in log if e["phase"] in phases and is_sut(e))
    nbytes = sum(e["bytes"] for log in logs.values() for e in log if e["phase"] in phases and is_sut(e))
    steps = len(training_phases) * len(logs)
    return count / steps, nbytes / steps


def torch_collectives(channels: Sequence[int], group_sizes: Sequence[int], input_dtype: str) -> list[list[Entry]]:
    """What torch's SyncBatchNorm (torch/nn/modules/_functions.py) issues per training step, per rank: for every
    layer of ``channels`` C on a rank whose group (``group_sizes[rank]``) has more than one rank, one all_gather of
    (mean, invstd, count), 2C + 1 values, in the forward and one all_reduce of (sum_dy, sum_dy_xmu), 2C values, in
    the backward, in float64 for float64 input, float32 otherwise (NCCL gathers the same values with
    all_gather_single); nothing in eval, nothing on a rank alone in its group (plain BatchNorm)."""
    dtype = required_precision(input_dtype)
    size = 8 if dtype == "float64" else 4
    per_rank = []
    for group_size in group_sizes:
        entries = []
        if group_size > 1:
            for c in channels:
                entries.append(entry("all_gather", dtype=dtype, shape=(2 * c + 1,), numel=2 * c + 1,
                                     nbytes=(2 * c + 1) * size, group=(), index=0, phase="", stage="forward"))
                entries.append(entry("all_reduce", dtype=dtype, shape=(2 * c,), numel=2 * c, nbytes=2 * c * size,
                                     group=(), index=0, phase="", stage="backward"))
        per_rank.append(entries)
    return per_rank


def cost(logs: dict[int, Sequence[Entry]], training_phases: Sequence[str], yardstick: list[list[Entry]] | None,
         *, keep_log: bool) -> dict[str, Any]:
    """A case's communication as its record carries it: collectives and bytes per training step and rank (mean over
    the ranks), torch's SyncBatchNorm's for the same case, collectives at eval phases, and (``keep_log``: a failed
    case) every rank's log."""
    record: dict[str, Any] = {"per_step": None, "bytes_per_step": None, "torch_per_step": None,
                              "torch_bytes_per_step": None,
                              "eval": sum(1 for log in logs.values() for e in log
                                          if e["phase"].startswith("eval") and is_sut(e))}
    measured = per_step(logs, training_phases)
    if measured is not None:
        record["per_step"], record["bytes_per_step"] = measured
        if yardstick is not None:
            record["torch_per_step"] = sum(len(r) for r in yardstick) / len(yardstick)
            record["torch_bytes_per_step"] = sum(e["bytes"] for r in yardstick for e in r) / len(yardstick)
    if keep_log:
        record["log"] = {str(rank): list(log) for rank, log in sorted(logs.items())}
    return record
