"""harness.collectives and harness.rank.audit in one process: the audit records every collective (torch's own
SyncBatchNorm Function's included) without changing it, the deadlock proofs name the rank that never entered the
collective and prove nothing from stale or partial evidence, the exact checks fail on a differing sequence and on
narrow statistics, and the cost is counted per training step against torch's."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from harness import collectives
from harness.collectives import (audit_checks, cost, deadlock, entry, is_sut, snapshot, torch_collectives,
                                 waiting_text)
from harness.kinds import RunConfig, run_case
from harness.kinds.model import bn_channels
from harness.rank.audit import CollectiveAudit
from harness.rank.worker import RankContext
from harness.spec import ModelSpec, ModuleSpec


def _e(op="all_reduce", dtype="float64", shape=(2, 3), group=(0, 1, 2), index=0, phase="train0", stage="forward",
       source="sut"):
    numel = 1
    for n in shape:
        numel *= n
    return entry(op, dtype=dtype, shape=shape, numel=numel, nbytes=numel * 8, group=group, index=index,
                 phase=phase, stage=stage, source=source)


# -- what the rank records --------------------------------------------------------------------------------------------
def test_the_audit_records_torch_syncbatchnorms_collectives_and_restores_torch_distributed(world_of_one,
                                                                                          builtin_kernels):
    """torch's Function calls ``dist.all_gather`` and ``torch.distributed.all_reduce``; a call through
    torch.distributed.distributed_c10d is seen too, an object collective once (not the all_gather inside it), an
    async one is waited in until its future completes; every function is torch's own again afterwards."""
    from torch.nn.modules._functions import SyncBatchNorm as Function

    originals = {name: getattr(dist.distributed_c10d, name) for name in ("all_reduce", "all_gather")}
    ctx = RankContext(rank=0, world_size=1, device="cpu", backend="gloo")
    x = torch.randn(4, 3, 2, requires_grad=True)
    with CollectiveAudit(ctx) as audit:
        ctx.progress("train0", "forward")
        y = Function.apply(x, torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), 1e-5, 0.1,
                           dist.group.WORLD, 1)
        ctx.progress("train0", "backward")
        y.backward(torch.ones_like(y))
        ctx.progress("train1", "forward")
        dist.distributed_c10d.all_reduce(torch.zeros(5, dtype=torch.float16))
        dist.all_gather_object([None], {"a": 1})
        work = dist.all_reduce(torch.zeros(2), async_op=True)
        work.wait()
        state = audit.snapshot(final=True)
    assert [(e["op"], e["dtype"], e["shape"], e["index"], e["phase"], e["stage"]) for e in audit.log] == [
        ("all_gather", "float32", [7], 0, "train0", "forward"), ("all_reduce", "float32", [6], 1, "train0", "backward"),
        ("all_reduce", "float16", [5], 2, "train1", "forward"), ("all_gather_object", "object", [], 3, "train1",
                                                                 "forward"),
        ("all_reduce", "float32", [2], 4, "train1", "forward")]
    assert audit.log[0]["group"] == [0] and audit.log[0]["bytes"] == 28 and audit.log[1]["bytes"] == 24
    assert state["counts"] == {"0": 5} and state["inside"] is None and len(state["log"]) == 5
    assert all(getattr(dist.distributed_c10d, name) is fn and getattr(dist, name) is fn
               for name, fn in originals.items())
    assert ctx.collectives is audit


def test_a_collective_that_raises_is_recorded_and_left(world_of_one):
    ctx = RankContext(rank=0, world_size=1, device="cpu", backend="gloo")
    with CollectiveAudit(ctx) as audit:
        with pytest.raises(TypeError):
            dist.all_reduce("not a tensor")
    assert audit.log[0]["op"] == "all_reduce" and audit.inside is None


# -- what the controller proves ---------------------------------------------------------------------------------------
def test_a_rank_that_finished_without_entering_the_collective_is_named():
    waiting = snapshot([], _e(index=0))
    proof = deadlock({1: snapshot([], None, final=True)}, {0: waiting, 2: waiting})
    assert proof == ("collective mismatch: rank 1 never entered all_reduce float64 [2x3] #0 of group 0,1,2 at train0 "
                     "(forward) that ranks 0,2 wait in (rank 1 finished after issuing 0 collectives on that group): "
                     "the ranks of a group must issue the same collectives", 1, "train0")
    # Ranks of another group may be further on: the phase is the collective's, not theirs.
    ahead = snapshot([], _e(group=(3, 4), index=2, phase="train1"))
    assert deadlock({1: snapshot([], None, final=True)}, {0: waiting, 3: ahead}).phase == "train0"


def test_nothing_is_proved_from_stale_or_partial_evidence():
    """A waiting state that is stale (the finished member did issue that collective), a member still running, a
    rank not audited, ranks at different indices: no proof."""
    stale = snapshot([_e()], _e(index=0))
    assert deadlock({1: snapshot([_e()], None, final=True)}, {0: stale}) is None
    assert deadlock({}, {0: stale, 1: snapshot([], None)}) is None
    assert deadlock({1: None}, {0: stale}) is None
    assert deadlock({}, {0: snapshot([], _e(index=0)), 1: snapshot([], _e(op="all_gather", index=1))}) is None


def test_ranks_waiting_in_the_same_collective_with_different_signatures_are_a_mismatch():
    """Rank 1 waits in DDP's all_reduce (async, in flight) where ranks 0 and 2 wait in the SUT's all_gather: the
    minority is named; a finished rank's log counts only once nothing moves any more (``settled``)."""
    ddp = _e(dtype="float32", shape=(565,), stage="backward", source="ddp")
    gather = _e(op="all_gather", dtype="float16", shape=(3, 4))
    proof = deadlock({}, {0: snapshot([], gather), 1: snapshot([ddp], None, [ddp]), 2: snapshot([], gather)})
    assert proof is not None and proof[1] == 1
    assert proof[0].startswith("collective mismatch: rank 1 issued all_reduce float32 [565] #0 of group 0,1,2 at "
                               "train0 (backward) (issued by DDP, not the SUT) where ranks 0,2 issued all_gather "
                               "float16 [3x4] #0")
    # Between equals, the rank that reached its #0 later in the program (backward) skipped one: it is named.
    proof = deadlock({}, {1: snapshot([ddp], None, [ddp]), 2: snapshot([], gather)})
    assert proof[1] == 1 and proof[0].startswith("collective mismatch: rank 1 issued all_reduce"), proof
    finished = {1: snapshot([ddp], None, final=True)}
    assert deadlock(finished, {0: snapshot([], None)}) is None
    assert deadlock(finished, {0: snapshot([gather], None)}, settled=True) is None  # 0's log is unknown: its
    assert deadlock(finished, {0: snapshot([], gather)}, settled=True)[1] == 1      # waiting state is known


def test_point_to_point_and_uneven_all_to_all_are_no_false_alarm():
    """A send and its recv differ by design (logged, never compared); all_to_all may hand over uneven splits
    (compared by op and dtype only). A rank waiting in its recv proves nothing either."""
    send = [_e("send", shape=(4,), group=(0, 1), phase="train0")]
    recv = [_e("recv", shape=(4,), group=(0, 1), phase="train0")]
    assert all(c.passed for c in audit_checks({0: send, 1: recv}, ["train0"], "float32"))
    uneven = [_e("all_to_all_single", shape=(n,), group=(0, 1), phase="train0") for n in (3, 5)]
    assert all(c.passed for c in audit_checks({0: uneven[:1], 1: uneven[1:]}, ["train0"], "float32"))
    assert not all(c.passed for c in audit_checks({0: uneven[:1], 1: [_e("all_reduce", shape=(3,), group=(0, 1))]},
                                                  ["train0"], "float32"))
    assert deadlock({1: snapshot([], None, final=True)}, {0: snapshot([], recv[0])}) is None


def test_a_hang_names_the_rank_not_in_the_collective():
    text, absent = waiting_text({}, {0: snapshot([], _e(group=(0, 1))), 1: snapshot([], None)}, [0, 1],
                                {1: ("train0", "forward")})
    assert text == ("rank 0 waits in all_reduce float64 [2x3] #0 of group 0,1 at train0 (forward), which rank 1 (at "
                    "train0 (forward), not in a collective, 0 collectives issued on that group) did not enter")
    assert absent == [1]
    assert waiting_text({}, {0: None, 1: None}, [0, 1], {}) == ("", [])


# -- exact checks and cost of a finished case --------------------------------------------------------------------------
def _torch_like(rank_entries: int = 2, dtype: str = "float32", phases=("train0", "train1")) -> list:
    log = []
    for phase in phases:
        log.append(_e("all_gather", dtype=dtype, shape=(7,), group=(0, 1), index=len(log), phase=phase))
        if rank_entries > 1:
            log.append(_e("all_reduce", dtype=dtype, shape=(6,), group=(0, 1), index=len(log), phase=phase,
                          stage="backward"))
    return log


def test_equal_sequences_pass_and_a_missing_collective_is_a_statement_naming_rank_and_phase():
    checks = audit_checks({0: _torch_like(), 1: _torch_like()}, ["train0", "train1"], "float32")
    assert [(c.quantity, c.phase, c.rank, c.passed) for c in checks] == [
        ("collectives.sequence", "train0", 1, True), ("collectives.precision", "train0", 0, True),
        ("collectives.precision", "train0", 1, True), ("collectives.sequence", "train1", 1, True),
        ("collectives.precision", "train1", 0, True), ("collectives.precision", "train1", 1, True)]
    skipped = [e for e in _torch_like() if not (e["phase"] == "train1" and e["stage"] == "backward")]
    checks = audit_checks({0: _torch_like(), 1: skipped}, ["train0", "train1"], "float32")
    (failed,) = [c for c in checks if not c.passed]
    assert failed.quantity == collectives.SEQUENCE and failed.phase == "train1" and failed.rank == 1
    assert failed.statement == ("collectives on group 0,1 at train1: rank 1 issued 1 (all_gather float32 [7] "
                                "(forward)), rank 0 issued 2 (all_gather float32 [7] (forward), all_reduce float32 "
                                "[6] (backward)); they first differ at #1")


@pytest.mark.parametrize(("payload", "input_dtype", "passes"), [
    ("float32", "float16", True), ("float32", "bfloat16", True), ("float16", "float16", False),
    ("bfloat16", "float32", False), ("float32", "float64", False), ("float64", "float32", True)])
def test_statistics_travel_in_at_least_the_precision_the_semantics_require(payload, input_dtype, passes):
    log = _torch_like(dtype=payload, phases=("train0",))
    checks = [c for c in audit_checks({0: log, 1: log}, ["train0"], input_dtype) if c.quantity == collectives.PRECISION]
    assert len(checks) == 2 and all(c.passed == passes for c in checks), [c.statement for c in checks]
    if not passes:
        assert checks[0].statement.startswith(f"rank 0 exchanged all_gather {payload} [7] #0 of group 0,1 at train0 "
                                              f"(forward): statistics travel in at least")


def test_ddp_gradients_are_checked_for_agreement_not_counted_as_the_suts():
    ddp = _e(dtype="float16", shape=(565,), group=(0, 1), index=2, phase="step0", stage="backward", source="ddp")
    log = _torch_like(phases=("step0",)) + [ddp]
    checks = audit_checks({0: log, 1: log}, ["step0"], "float32")
    assert all(c.passed for c in checks)
    assert not audit_checks({0: log, 1: log[:2]}, ["step0"], "float32")[0].passed
    counts = _e(dtype="int64", shape=(1,), group=(0, 1), phase="step0")  # not floating: no precision to check
    assert not [c for c in audit_checks({0: [counts], 1: [counts]}, ["step0"], "float64")
                if c.quantity == collectives.PRECISION]
    assert cost({0: log, 1: log}, ["step0"], None, keep_log=False)["per_step"] == 2


def test_cost_per_training_step_against_torchs_syncbatchnorm():
    """torch's SyncBatchNorm per training step and rank: an all_gather of 2C + 1 and an all_reduce of 2C values in
    the accumulation dtype, nothing for a rank alone in its group; an extra collective per step shows."""
    yardstick = torch_collectives([3], [2, 2, 1], "float16")
    assert [[(e["op"], e["dtype"], e["numel"], e["bytes"]) for e in r] for r in yardstick] == [
        [("all_gather", "float32", 7, 28), ("all_reduce", "float32", 6, 24)]] * 2 + [[]]
    log = _torch_like()
    extra = log + [_e("all_reduce", shape=(3,), group=(0, 1), index=4, phase="train1")]
    record = cost({0: log, 1: extra, 2: []}, ["train0", "train1"], yardstick, keep_log=True)
    assert record["per_step"] == pytest.approx(9 / 6) and record["torch_per_step"] == pytest.approx(4 / 3)
    assert record["log"]["1"] == extra and record["eval"] == 0
    assert cost({0: log}, [], yardstick, keep_log=False)["per_step"] is None  # no training phase: no cost


# -- live: torch's SyncBatchNorm is the yardstick ---------------------------------------------------------------------
@pytest.mark.processes
@pytest.mark.parametrize("spec", [
    ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(2,), steps=2, eval_steps=1),
    ModuleSpec(shard_sizes=(3, 0, 2), channels=4, spatial=(2,), dtype="float64", steps=1),
    ModuleSpec(shard_sizes=(3, 2), channels=2, spatial=(2, 2), dtype="float16", param_dtype="float32", steps=1),
    ModuleSpec(shard_sizes=(2, 3, 1), channels=3, spatial=(2,), groups=((0, 2), (1,)), steps=1),
    ModelSpec(shard_sizes=(4, 3), steps=2),
], ids=lambda spec: spec.id)
def test_torchs_syncbatchnorm_issues_exactly_what_the_yardstick_says(spec):
    """What the README and the cost column say torch's SyncBatchNorm issues per training step (torch_collectives)
    is what the audit records of the real Function: the same ops, dtypes and sizes, rank by rank; it passes every
    audit check."""
    result = run_case(spec, RunConfig.of(sut="torch"))
    assert result.passed, result.report()
    cost = result.collectives
    if isinstance(spec, ModelSpec):
        phases = [f"step{k}" for k in range(spec.steps)]
        yardstick = torch_collectives(bn_channels(), [spec.world_size] * spec.world_size, spec.dtype)
    else:
        phases = [spec.phase_name(k) for k in range(spec.steps)]
        yardstick = torch_collectives([spec.channels], [len(next(g for g in spec.rank_groups if r in g))
                                                        for r in range(spec.world_size)], spec.dtype)
    for rank, log in cost["log"].items():
        for phase in phases:
            issued = sorted((e["op"], e["dtype"], e["numel"]) for e in log if e["phase"] == phase and is_sut(e))
            assert issued == sorted((e["op"], e["dtype"], e["numel"]) for e in yardstick[int(rank)]), (rank, phase)
    assert cost["per_step"] == cost["torch_per_step"] and cost["bytes_per_step"] == cost["torch_bytes_per_step"]
    assert cost["eval"] == 0 and "log" not in result.record()["collectives"]
    assert any(c.quantity == collectives.SEQUENCE for c in result.comparisons) or spec.world_size == 1 or spec.groups
