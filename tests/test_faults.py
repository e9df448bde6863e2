"""Faults injected into real rank processes: a rank stopped (SIGSTOP) while its pool starts or mid-case, a rank
waiting in a gloo collective, a rank killed (SIGKILL) mid-case, a rank too slow to start. Each ends in bounded time
with a message naming the rank that stopped answering or died, apart from the ranks that were waiting on it."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

import harness.pool
import harness.rank.worker
from harness.errors import RankFailure
from harness.kinds import run_case
from harness.pool import PoolManager, RankPool
from harness.kinds import RunConfig
from harness.spec import ModuleSpec

pytestmark = pytest.mark.processes  # every test here starts rank pools or subprocesses

FAULTY = os.path.join(os.path.dirname(__file__), "suts_faulty.py")
SPEC = ModuleSpec(shard_sizes=(3, 2), channels=2, steps=1)


def _rank_process(rank: int, world_size: int = 2, timeout: float = 30.0):
    """The live child process of ``rank`` (by its name, syncbn-rank<r>-of-<w>)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in multiprocessing.active_children():
            if child.name == f"syncbn-rank{rank}-of-{world_size}":
                return child
        time.sleep(0.005)
    raise AssertionError(f"no process syncbn-rank{rank}-of-{world_size} within {timeout} s")


def _release(pid: int | None) -> None:
    """Leave nothing behind: continue and kill a process this test stopped (if it still exists)."""
    if pid is None:
        return
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return


def _wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def short_stall(monkeypatch):
    """STALL_S of 5 s: a rank silent that long stopped answering (the default, 30 s, is for loaded CI boxes)."""
    monkeypatch.setattr(harness.pool, "STALL_S", 5.0)
    return 5.0


def test_rank_stopped_while_the_pool_starts_is_named_within_the_stall_limit(monkeypatch):
    stall = 10.0  # the rank that is not stopped must start within it (a spawned rank: seconds on a loaded box)
    monkeypatch.setattr(harness.pool, "STALL_S", stall)
    # Rank 1 is held before it starts (a forked rank is ready in well under a second, before a SIGSTOP from here
    # could reach it), then stopped there: it never reaches the process group.
    import rank_probes

    monkeypatch.setattr(harness.rank.worker, "main", rank_probes.slow_start_main)
    monkeypatch.setenv("SYNCBN_TEST_SLOW_RANK", "1")
    monkeypatch.setenv("SYNCBN_TEST_SLOW_S", "60")
    outcome: dict[str, object] = {}

    def start() -> None:
        began = time.monotonic()
        try:
            outcome["pool"] = RankPool(2, start_timeout_s=120.0)
        except RankFailure as failure:
            outcome["failure"] = failure
        outcome["seconds"] = time.monotonic() - began

    thread = threading.Thread(target=start)
    thread.start()
    pid = None
    try:
        pid = _rank_process(1).pid
        os.kill(pid, signal.SIGSTOP)  # while it is held, before it could be ready
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        _release(pid)
        thread.join(timeout=30)
        if "pool" in outcome:
            outcome["pool"].close()
    failure = outcome.get("failure")
    assert isinstance(failure, RankFailure), outcome
    assert failure.kind == "stalled" and failure.rank == 1 and failure.stalled == (1,), str(failure)
    assert stall <= outcome["seconds"] < stall + 6, outcome["seconds"]
    message = str(failure)
    assert message.startswith("rank(s) [1] stopped answering while trying to start and join the process group")
    assert "rank(s) [0] were alive and waiting (at rank 0: start (init_process_group))" in message


@pytest.mark.parametrize("limit", ["stall", "case timeout"])
def test_rank_stopped_mid_case_is_named_apart_from_the_rank_waiting_on_it(short_stall, monkeypatch, tmp_path,
                                                                          limit):
    if limit == "case timeout":  # the case's time runs out before STALL_S: the silent rank is still named
        monkeypatch.setattr(harness.pool, "STALL_S", 30.0)
        monkeypatch.setattr(harness.pool, "SILENT_S", 2.0)
    pool = RankPool(2)
    pid = pool.run("rank_probes:pid", {}, timeout=30)[1]
    marker = str(tmp_path / "asleep")
    try:
        pool.submit("rank_probes:sleep_then_all_reduce", {"sleepers": [1], "seconds": 3.0, "marker": marker})
        _wait_for(marker + ".rank1")
        os.kill(pid, signal.SIGSTOP)
        began = time.monotonic()
        with pytest.raises(RankFailure) as info:
            pool.collect("rank_probes:sleep_then_all_reduce", timeout=8.0)
        seconds = time.monotonic() - began
    finally:
        _release(pid)
        pool.close()
    failure, message = info.value, str(info.value)
    assert failure.rank == 1 and failure.stalled == (1,) and failure.waiting == (0,), message
    assert "rank 1: no heartbeat for" in message and "last at probe (sleep)" in message
    assert "rank(s) [0] " in message and "alive and waiting (at rank 0: probe (all_reduce))" in message
    if limit == "stall":
        assert failure.kind == "stalled" and seconds < short_stall + 6, (seconds, message)
        assert message.startswith("rank(s) [1] stopped answering while trying to finish")
    else:
        assert failure.kind == "timeout" and seconds < 8 + 6, (seconds, message)
        assert "did not finish rank_probes:sleep_then_all_reduce within 8 s; rank(s) [1] stopped answering" in message


def test_rank_waiting_in_a_gloo_collective_keeps_sending_heartbeats(short_stall):
    """The GIL is released while gloo waits, so the heartbeat thread runs: a rank waiting twice STALL_S in a
    collective is reported as alive and waiting when the case times out, not as stalled."""
    pool = RankPool(2)
    began = time.monotonic()
    try:
        with pytest.raises(RankFailure) as info:
            pool.run("rank_probes:wait_in_collective", {"skipper": 1}, timeout=2 * short_stall)
    finally:
        pool.close()
    failure, message = info.value, str(info.value)
    assert time.monotonic() - began >= 2 * short_stall
    assert failure.kind == "timeout" and failure.stalled == () and failure.waiting == (0,), message
    assert "rank(s) [0] alive and waiting (at rank 0: probe (all_reduce))" in message
    assert "rank(s) [1] had already returned" in message


def test_rank_killed_mid_case_comes_first_and_its_peers_error_after_it(monkeypatch, tmp_path):
    marker = str(tmp_path / "rank")
    monkeypatch.setenv("SYNCBN_TEST_MARKER", marker)  # inherited by the ranks this test's pool spawns
    manager = PoolManager()
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["result"] = run_case(SPEC, RunConfig.of(sut=f"{FAULTY}:sleep_on_rank1", case_timeout=60.0,
                                                        manager=manager))

    thread = threading.Thread(target=run)
    began = time.monotonic()
    thread.start()
    try:
        _wait_for(marker + ".rank1")
        time.sleep(1.0)  # rank 0 is in the layer's first collective by now
        os.kill(_rank_process(1).pid, signal.SIGKILL)
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        thread.join(timeout=30)
        manager.close_all()
    assert time.monotonic() - began < 40
    result = outcome["result"]
    kinds = [(f.kind, f.rank) for f in result.failures]
    assert kinds == [("crashed", 1), ("peer", 0)], result.report()
    assert "rank 1 crashed (killed by SIGKILL)" in result.failures[0].message
    assert "a consequence: a peer rank died" in result.failures[1].message
    report = result.report()
    assert report.index("rank 1 crashed") < report.index("rank 0 raised")


def test_start_timeout_is_respected_by_a_rank_slow_to_start(monkeypatch):
    import rank_probes

    monkeypatch.setattr(harness.rank.worker, "main", rank_probes.slow_start_main)  # what the pool spawns
    monkeypatch.setenv("SYNCBN_TEST_SLOW_RANK", "1")
    monkeypatch.setenv("SYNCBN_TEST_SLOW_S", "60")
    manager = PoolManager()
    began = time.monotonic()
    try:
        result = run_case(SPEC, RunConfig.of(start_timeout=5.0, manager=manager))
    finally:
        manager.close_all()
    seconds = time.monotonic() - began
    assert 5 <= seconds < 5 + 6, seconds
    (failure,) = result.failures
    assert failure.kind == "harness"
    assert failure.message.startswith(
        "rank(s) [0, 1] did not start and join the process group within the start timeout of 5 s"), failure.message
    assert "rank(s) [1] stopped answering (rank 1: not heard from in 5 s)" in failure.message
    assert "rank(s) [0] alive and waiting (at rank 0: start (init_process_group))" in failure.message
    assert "set --start-timeout to wait longer" in failure.message
