"""The rank pool: persistent, fast, and a raising, crashing or hanging rank becomes a failure naming the rank."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness.errors import RankFailure
from harness.pool import PoolManager, RankPool
from harness.kinds import run_case
from harness.kinds import RunConfig
from harness.spec import ModelSpec, ModuleSpec

pytestmark = pytest.mark.processes  # every test here starts rank pools or subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTY = os.path.join(os.path.dirname(__file__), "suts_faulty.py")


@pytest.fixture(scope="module")
def manager():
    pools = PoolManager()
    yield pools
    pools.close_all()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_pool_serves_many_calls_without_restarting(manager):
    pool = manager.get(2)
    pids = pool.run("rank_probes:pid", {}, timeout=30)
    for offset in range(20):
        assert pool.run("rank_probes:all_reduce_rank", {"offset": offset}, timeout=30) == [1.0 + 2 * offset] * 2
    assert pool.run("rank_probes:pid", {}, timeout=30) == pids
    assert manager.get(2) is pool


def test_raising_rank_is_named_with_its_traceback_and_pool_survives(manager):
    pool = manager.get(2)
    with pytest.raises(RankFailure) as info:
        pool.run("rank_probes:raise_on", {"rank": 1}, timeout=30)
    assert info.value.rank == 1 and info.value.kind == "raised"
    assert "deliberate failure on rank 1" in str(info.value)
    assert "raise_on" in info.value.traceback
    assert pool.alive and pool.run("rank_probes:all_reduce_rank", {}, timeout=30) == [1.0, 1.0]


def test_raise_that_leaves_others_hanging_restarts_the_pool(manager, monkeypatch):
    import harness.pool

    monkeypatch.setattr(harness.pool, "_ERROR_GRACE_S", 1.0)
    pool = manager.get(2)
    with pytest.raises(RankFailure) as info:
        pool.run("rank_probes:raise_then_hang", {"rank": 0}, timeout=30)
    assert info.value.rank == 0 and "alive and waiting" in str(info.value)
    assert not pool.alive
    fresh = manager.get(2)
    assert fresh is not pool and fresh.run("rank_probes:all_reduce_rank", {}, timeout=30) == [1.0, 1.0]


def test_crashed_rank_is_named_and_pool_is_rebuilt(manager):
    pool = manager.get(2)
    with pytest.raises(RankFailure) as info:
        pool.run("rank_probes:crash_on", {"rank": 1}, timeout=30)
    assert info.value.rank == 1 and info.value.kind == "crashed" and "exit code 17" in str(info.value)
    assert manager.get(2).run("rank_probes:all_reduce_rank", {}, timeout=30) == [1.0, 1.0]


def test_hang_times_out_naming_the_rank_that_did_not_answer(manager):
    pool = manager.get(2)
    start = time.monotonic()
    with pytest.raises(RankFailure) as info:
        pool.run("rank_probes:skip_collective_on", {"rank": 1}, timeout=2.0)
    assert time.monotonic() - start < 10
    assert info.value.kind == "timeout" and info.value.rank == 0
    assert "[0]" in str(info.value) and "did not" in str(info.value)


def test_closed_pool_leaves_no_process_behind():
    pool = RankPool(2)
    pids = pool.run("rank_probes:pid", {}, timeout=30)
    pool.close()
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_ranks_exit_when_the_controller_is_killed(tmp_path):
    script = tmp_path / "controller.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = {[os.getcwd(), os.path.dirname(__file__)]!r}
        from harness.pool import RankPool
        if __name__ == "__main__":
            pool = RankPool(2)
            print(*pool.run("rank_probes:pid", {{}}, timeout=60), flush=True)
            time.sleep(60)
    """))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "rank processes outlived their controller"
        assert not list(tmp.iterdir()), "the pool's directory outlived its ranks"
    finally:
        proc.kill()


# -- through run_case: a faulty SUT becomes a failed case, and the next case still runs ----------------------------
def test_sut_deadlocking_on_empty_shard_fails_the_case_after_the_timeout(manager):
    spec = ModuleSpec(shard_sizes=(3, 0), channels=2, steps=1)
    config = RunConfig.of(sut=f"{FAULTY}:deadlock_on_empty", case_timeout=3.0, manager=manager)
    start = time.monotonic()
    result = run_case(spec, config)
    assert not result.passed and time.monotonic() - start < 20
    report = result.report()
    assert "did not finish" in report and "[0]" in report and "--case" in report, report
    healthy = run_case(ModuleSpec(shard_sizes=(3, 2), channels=2, steps=1), RunConfig.of(manager=manager))
    assert healthy.passed, healthy.report()


def test_sut_raising_on_one_rank_reports_that_rank_and_traceback(manager):
    spec = ModuleSpec(shard_sizes=(3, 2), channels=2, steps=1)
    result = run_case(spec, RunConfig.of(sut=f"{FAULTY}:raise_on_rank1", case_timeout=5.0, manager=manager))
    report = result.report()
    assert not result.passed
    assert "rank 1 raised RuntimeError" in report and "kernel launch failed" in report
    assert "Traceback" in report


def test_sut_crashing_a_rank_reports_that_rank(manager):
    spec = ModuleSpec(shard_sizes=(3, 2), channels=2, steps=1)
    result = run_case(spec, RunConfig.of(sut=f"{FAULTY}:crash_rank0", case_timeout=10.0, manager=manager))
    assert not result.passed
    assert "rank 0 crashed (exit code 139)" in result.report()
    assert run_case(spec, RunConfig.of(manager=manager)).passed


def test_closing_a_busy_pool_kills_its_ranks_at_once():
    """What an interrupted run does with the pool of the case it was running: no waiting for the call to end."""
    pool = RankPool(2)
    pids = pool.run("rank_probes:pid", {}, timeout=30)
    pool.submit("rank_probes:sleep", {"seconds": 60.0})
    start = time.monotonic()
    pool.close()
    assert time.monotonic() - start < 2.0
    assert not any(_alive(p) for p in pids)


@pytest.mark.slow
def test_a_pytest_session_leaves_nothing_in_tmpdir(tmp_path):
    """`pytest -n 2` over cases (pools in each worker), torchrun (torchelastic_* directories) and a killed
    controller: no syncbn-* or torchelastic_* entry is left in TMPDIR."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q", "--profile", "quick", "-k",
         "eps or test_case_of_another_world_size or test_ranks_exit_when_the_controller_is_killed",
         "cases/test_catalogue.py", "tests/test_launch.py", "tests/test_pool.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1]
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith(("syncbn-", "torchelastic_")))
    assert not left, left


def test_a_model_case_honours_the_case_timeout(manager):
    """--case-timeout is every case's limit, a model case's too (it used to get three of them)."""
    config = RunConfig.of(sut=f"{FAULTY}:sleep_on_rank1", case_timeout=3.0, manager=manager)
    start = time.monotonic()
    result = run_case(ModelSpec((4, 4)), config)
    seconds = time.monotonic() - start
    assert not result.passed and seconds < 3.0 + 4.0, seconds
    assert "within 3 s" in result.report(), result.report()


def test_a_model_sut_that_refuses_the_conversion_is_blamed_not_the_harness(manager):
    result = run_case(ModelSpec((4, 4)), RunConfig.of(sut=f"{FAULTY}:refuses_shared_weight", manager=manager))
    kinds = {f.kind for f in result.failures}
    assert kinds == {"raised"}, result.report()
    assert "rank 0 raised TypeError at setup (convert): model cases convert a network's BatchNorm layers" \
           in result.report(), result.report()
    assert "setting weight on the ReadOnlyWeight the factory returned raised KeyError" in result.report()
