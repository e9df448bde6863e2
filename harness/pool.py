"""Controller side of the simulated ranks: persistent pools of rank processes joined by torch.distributed.

A pool starts W processes (spawn) once; they join one process group through a FileStore in a private temporary
directory (no ports to clash, so pytest-xdist workers each own their pools safely) and then serve every case of that
world size. Every rank sends a heartbeat each HEARTBEAT_S with how far it got (harness.rank.worker), also while it
waits inside a collective, so the controller tells apart:
- a rank that crashed (its process died: exit code), reported first, its peers' "connection closed" errors after it;
- a rank that stalled (no heartbeat for STALL_S: stopped, or stuck in native code holding the interpreter);
- ranks that are alive but did not finish in time, each with the phase it reached (a deadlock: some rank skipped a
  collective the others wait in), and, where the ranks run a collective audit (harness.rank.audit), which collective
  they wait in and which rank of its group did not enter it;
- ranks whose collectives disagree: a rank that returned without entering the collective the others wait in, or
  ranks waiting in their k-th collective of a group with different ops, dtypes or shapes (harness.collectives.
  deadlock, from the heartbeats' audit states): the call stops at once, not at its timeout, naming that rank.
A rank silent for SILENT_S when the time runs out is reported as stopped answering, apart from those waiting.
Time a rank spends compiling (``--compile``: its heartbeat's stage is harness.rank.worker.COMPILING) does not count
against the case's timeout, up to COMPILE_ALLOWANCE_S per case: a cold inductor compile is not a hang.
Start-up is bounded by ``start_timeout_s`` (the ``--start-timeout`` option): a start fails after that long, or
after STALL_S if a rank stops answering sooner. A pool with a crashed, stalled or hung rank is torn down and
rebuilt on next use; every pool is closed at exit (a busy one at once: its ranks are killed), and ranks whose
controller died remove the pool's directory and exit.
"""
from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any, Callable

from . import collectives
from .errors import HarnessError, RankFailure
from .rank.worker import COMPILING

__all__ = ["RankPool", "PoolManager", "default_manager", "resolve_backend", "HEARTBEAT_S", "STALL_S", "SILENT_S",
           "COMPILE_ALLOWANCE_S"]

HEARTBEAT_S = 0.5  # how often a rank says where it is
STALL_S = 30.0  # no heartbeat for this long: the rank stopped answering (generous: a loaded CI box starves threads)
SILENT_S = 5.0  # at a timeout, a rank silent this long is reported as stopped answering, not as waiting
_ERROR_GRACE_S = 10.0  # after one rank raised or crashed, how long the others get to finish or raise too
_QUICK_GRACE_S = 1.0  # the same after a stall, while starting, or after a rank declared the case unsupported
# (``releases``): the others cannot finish without that rank, and any that would declare too do it at once
COMPILE_ALLOWANCE_S = 600.0  # compiling time a case may add to its timeout (a compile longer than this is a hang)


# What the forkserver imports once, so that a rank forked from it starts without importing torch again.
_PRELOAD = ["torch", "torch.distributed", "torch.distributed.nn", "numpy", "harness.rank.worker"]


def _start_context(device: str, preload: tuple[str, ...] = ()) -> tuple[Any, str | None]:
    """How rank processes start, and the forkserver's directory (None without one): forked from a server that has
    torch imported already (multiprocessing's forkserver, itself a fresh process: no state of the controller leaks
    into ranks; each rank takes the controller's environment of the moment), or spawned where there is no
    forkserver (SYNCBN_START_METHOD=spawn forces it). Importing torch costs a rank about a CPU second: a run that
    starts pools of world sizes 1-4 (and restarts one after every crash or hang) spends 10 or more of them with
    spawn, one with the forkserver (the quick profile: 31 s with spawn, 16 s forked, on 2 cores). CUDA pools are
    spawned, as they were on the GPUs this was checked on: a rank must initialise CUDA itself, and nothing of the
    GPU path depends on start-up speed. ``preload``: more modules for the forkserver to import, where this call
    starts it (torch's compilers for a compiled run); a server already running keeps what it has."""
    method = os.environ.get("SYNCBN_START_METHOD", "forkserver" if device == "cpu" else "spawn")
    if method == "forkserver" and method in multiprocessing.get_all_start_methods():
        from multiprocessing import forkserver, util

        context = multiprocessing.get_context(method)
        context.set_forkserver_preload(_PRELOAD + [m for m in preload if m not in _PRELOAD])
        try:
            forkserver.ensure_running()
            return context, util.get_temp_dir()  # where the forkserver's socket lives
        except OSError:  # e.g. "AF_UNIX path too long" under a deep TMPDIR: start ranks the slow, sure way
            return multiprocessing.get_context("spawn"), util.get_temp_dir()  # made by the try: ranks clean it up
    return multiprocessing.get_context("spawn"), None


def resolve_backend(device: str, world_size: int, backend: str | None = None) -> str:
    """gloo on CPU; on CUDA, NCCL when there is one GPU per rank, else gloo with ranks sharing GPUs."""
    if backend not in (None, "auto"):
        if backend not in ("gloo", "nccl"):
            raise HarnessError(f"backend={backend!r}: must be 'gloo', 'nccl' or 'auto'")
        return backend
    if device != "cuda":
        return "gloo"
    import torch

    return "nccl" if torch.cuda.device_count() >= world_size else "gloo"


def _where(position: tuple[str, str] | None) -> str:
    if not position:
        return "not heard from"
    phase, stage = position
    return f"{phase} ({stage})" if stage else phase


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class RankPool:
    """W rank processes in one process group, started once and reused for every request."""

    def __init__(self, world_size: int, *, device: str = "cpu", backend: str = "gloo",
                 collective_timeout_s: float = 300.0, start_timeout_s: float = 120.0,
                 preload: tuple[str, ...] = ()) -> None:
        if world_size < 1:
            raise HarnessError(f"world_size={world_size}: must be >= 1")
        self.world_size = world_size
        self.device = device
        self.backend = backend
        self._dir = tempfile.mkdtemp(prefix=f"syncbn-pool-w{world_size}-")
        context, server_dir = _start_context(device, preload)
        self._conns: list[multiprocessing.connection.Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._positions: dict[int, tuple[str, str]] = {}
        self._audits: dict[int, Any] = {}  # rank -> its collective audit state (harness.collectives.snapshot)
        self._heard: dict[int, float] = {}
        self._busy = True  # a call (or the start) is under way: close() kills rather than asks
        from .rank import worker as rank_worker

        try:
            for rank in range(world_size):
                parent_end, child_end = context.Pipe()
                proc = context.Process(
                    target=rank_worker.main,
                    args=(rank, world_size, os.path.join(self._dir, "store"), child_end, device, backend, os.getpid(),
                          collective_timeout_s, list(sys.path), HEARTBEAT_S, dict(os.environ), server_dir),
                    name=f"syncbn-rank{rank}-of-{world_size}",
                    daemon=True,
                )
                proc.start()
                child_end.close()
                self._conns.append(parent_end)
                self._procs.append(proc)
            self.started_at = time.monotonic()
            self._gather("ready", timeout=start_timeout_s, what="start and join the process group", starting=True)
        except BaseException:  # a failed or interrupted start: the ranks that did start are killed
            self._busy = True
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def run(self, target: str | Callable[..., Any], kwargs: dict[str, Any] | list[dict[str, Any]], *,
            timeout: float, is_failure: Callable[[Any], bool] | None = None,
            releases: Callable[[Any], bool] | None = None) -> list[Any]:
        """Call ``target`` (a function of a module the ranks can import, or its "module:function" name) in every
        rank with ``kwargs`` (one dict, or one per rank) and return the ranks' return values. Raises RankFailure
        (the pool is then closed unless every rank answered). ``is_failure(value)`` marks a returned value as a
        failure that may leave the other ranks hanging: they then get only a short grace period instead of the
        full timeout. ``releases(value)`` marks one after which the others are released at once: they get the
        quick grace (_QUICK_GRACE_S), then the ranks still waiting are stopped (a declaration of unsupported by one
        rank: the others may wait for it in a collective that never completes)."""
        self.submit(target, kwargs)
        return self.collect(timeout=timeout, is_failure=is_failure, releases=releases)

    def submit(self, target: str | Callable[..., Any], kwargs: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Start ``target`` on every rank without waiting (the controller can work meanwhile); then ``collect``."""
        if not self.alive:
            raise HarnessError("this pool is closed")
        name = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
        per_rank = kwargs if isinstance(kwargs, list) else [kwargs] * self.world_size
        for conn, rank_kwargs in zip(self._conns, per_rank):
            conn.send(("call", {"target": name, "kwargs": rank_kwargs}))
        self._submitted = (name, time.monotonic())
        self._busy = True

    def collect(self, target: str | None = None, *, timeout: float,
                is_failure: Callable[[Any], bool] | None = None,
                releases: Callable[[Any], bool] | None = None) -> list[Any]:
        """The ranks' return values for the last ``submit``; ``timeout`` counts from the submission (``is_failure``,
        ``releases``: see ``run``)."""
        name, submitted_at = self._submitted
        remaining = timeout - (time.monotonic() - submitted_at)
        return self._gather("result", timeout=max(remaining, 0.0), what=f"finish {target or name}",
                            is_failure=is_failure, releases=releases, nominal_timeout=timeout)

    def _receive(self, rank: int, conn) -> tuple[str, dict] | None:
        """The next event of ``rank`` that is not a heartbeat (heartbeats update its position), or None."""
        while conn.poll():
            try:
                name, payload = conn.recv()
            except (EOFError, OSError):
                return "crashed", {}
            self._heard[rank] = time.monotonic()
            if name == "beat":
                self._positions[rank] = tuple(payload["position"])
                if "collectives" in payload:
                    self._audits[rank] = payload["collectives"]
                continue
            return name, payload
        return None

    @staticmethod
    def _finished_audits(replies: dict[int, tuple[str, dict]]) -> dict[int, Any]:
        """The final collective audit state of every rank that returned or raised (None: no audit ran)."""
        return {r: payload.get("collectives") for r, (name, payload) in replies.items() if name in ("result", "error")}

    def _gather(self, expected: str, *, timeout: float, what: str, is_failure: Callable[[Any], bool] | None = None,
                releases: Callable[[Any], bool] | None = None, nominal_timeout: float | None = None,
                starting: bool = False) -> list[Any]:
        start = time.monotonic()
        deadline = start + timeout
        replies: dict[int, tuple[str, dict]] = {}
        first_error: int | None = None
        pending = dict(enumerate(self._conns))
        self._heard = {rank: start for rank in pending}  # a busy rank beats; silence counts from now
        self._positions = {}  # where each rank got in this call (a rank not heard from has none)
        self._audits = {}  # which collectives each rank issued in this call, and the one it is inside
        proof: collectives.Proof | None = None
        compiling_s, last = 0.0, start  # time a pending rank spent compiling: added to the deadline (capped)

        def failed(rank: int, quick: bool) -> None:
            nonlocal first_error, deadline
            if first_error is None:
                first_error = rank
                grace = _QUICK_GRACE_S if (quick or starting) else _ERROR_GRACE_S
                deadline = min(deadline, time.monotonic() + grace)

        while pending:
            now = time.monotonic()
            if first_error is None and any(self._positions.get(r, ("", ""))[1] == COMPILING for r in pending):
                extension = min(now - last, COMPILE_ALLOWANCE_S - compiling_s)
                compiling_s, deadline = compiling_s + extension, deadline + extension
            last = now
            if now >= deadline:
                break
            ready = multiprocessing.connection.wait(list(pending.values()), timeout=min(0.5, deadline - now))
            for rank, conn in list(pending.items()):
                if conn not in ready:
                    continue
                event = self._receive(rank, conn)
                if event is None:
                    continue
                replies[rank] = event
                del pending[rank]
                name, payload = event
                value = payload.get("value")
                if name != expected or (is_failure is not None and is_failure(value)):
                    failed(rank, quick=releases is not None and name == expected and releases(value))
            now = time.monotonic()
            for rank in list(pending):
                if not self._procs[rank].is_alive():  # died without closing its pipe cleanly (killed by a signal)
                    replies[rank] = ("crashed", {})
                    del pending[rank]
                    failed(rank, quick=False)
                elif now - self._heard.get(rank, start) > STALL_S:  # alive, but not a word: stopped or stuck
                    replies[rank] = ("stalled", {"silent_s": now - self._heard[rank]})
                    del pending[rank]
                    failed(rank, quick=True)
            if pending and (self._audits or any("collectives" in payload for _, payload in replies.values())):
                proof = collectives.deadlock(self._finished_audits(replies), {r: self._audits.get(r) for r in pending})
                if proof is not None:  # ranks wait in a collective that cannot complete: no use waiting
                    break
        self._busy = False
        now = time.monotonic()
        finished_audits = self._finished_audits(replies)
        live_audits = {r: self._audits.get(r) for r in range(self.world_size) if r not in finished_audits}
        crashed = sorted(r for r, (name, _) in replies.items() if name == "crashed")
        stalled = sorted(r for r, (name, _) in replies.items() if name == "stalled")
        raised = [r for r, (name, _) in replies.items() if name == "error"]
        hung = sorted(pending)
        if not (crashed or stalled or raised or hung):
            return [replies[r][1].get("value", replies[r][1]) for r in range(self.world_size)]
        for rank in crashed:
            self._procs[rank].join(timeout=2.0)  # reap it, so its exit code is known
        codes = {r: _how_it_ended(self._procs[r].exitcode) for r in crashed}
        positions = {r: self._positions.get(r) for r in range(self.world_size)}
        silent_s = {r: now - self._heard.get(r, start) for r in hung}
        # At the deadline, a rank silent for SILENT_S stopped answering; the others are alive and waiting.
        silent = [r for r in hung if silent_s[r] >= SILENT_S]
        waiting = [r for r in hung if r not in silent]
        partial = {r: payload.get("value") for r, (name, payload) in replies.items() if name == expected}
        if crashed or stalled or hung:  # ranks that cannot read an "exit": killed at once, not asked
            self._busy = True
            self.close()
        context = dict(partial=partial, stalled=tuple(stalled or silent), waiting=tuple(waiting),
                       crashed=tuple(crashed), collectives={**finished_audits, **live_audits})
        if proof is not None and not (crashed or stalled or raised):
            raise RankFailure(f"{proof.statement}; rank(s) {hung} had not returned and were stopped at once (not "
                              "after the case timeout); the pool was restarted", rank=proof.rank, kind="deadlock",
                              phase=proof.phase, **context)
        if proof is None and (crashed or stalled):  # did the ranks' collectives disagree before one died?
            proof = collectives.deadlock(finished_audits, live_audits, settled=True)
        in_collective, absent = collectives.waiting_text(finished_audits, live_audits, hung, positions)

        def fail(message: str, *, rank: int | None, kind: str, traceback: str = "") -> RankFailure:
            """The failure; when the audit proved a collective mismatch, that is the cause and the rest follows."""
            if proof is not None:
                return RankFailure(f"{proof.statement}; then {message}", rank=proof.rank, kind="deadlock",
                                   phase=proof.phase, traceback=traceback, **context)
            return RankFailure(message, rank=rank, kind=kind, traceback=traceback, **context)

        def silence(r: int, seconds: float) -> str:
            if positions[r] is None:
                return f"rank {r}: not heard from in {seconds:.0f} s"
            return f"rank {r}: no heartbeat for {seconds:.0f} s, last at {_where(positions[r])}"

        waiting_text = (f"; rank(s) {waiting} were alive and waiting (at "
                        + ", ".join(f"rank {r}: {_where(positions[r])}" for r in waiting) + ")") if waiting else ""
        waiting_text += f"; {in_collective}" if in_collective else ""
        silent_text = (f"; rank(s) {silent} stopped answering too ("
                       + ", ".join(silence(r, silent_s[r]) for r in silent) + ")") if silent else ""
        restarted = "; the pool was restarted" if (crashed or stalled or hung) else ""
        if crashed:  # the cause first: a dead process; the others' errors are its consequences
            rank = crashed[0]
            also = "".join(f"; rank {r} crashed too ({codes[r]})" for r in crashed[1:])
            others = f"; rank(s) {[r for r in raised if r != rank]} raised after it (connection errors)" \
                if raised else ""
            raise fail(f"rank {rank} crashed ({codes[rank]}) while trying to {what}, at "
                       f"{_where(positions[rank])}{also}{others}{silent_text}{waiting_text}{restarted}",
                       rank=rank, kind="crashed")
        if stalled:
            silences = ", ".join(silence(r, replies[r][1]["silent_s"]) for r in stalled)
            raise fail(f"rank(s) {stalled} stopped answering while trying to {what} (process stopped, or stuck in "
                       f"native code holding the interpreter): {silences}{silent_text}{waiting_text}{restarted}",
                       rank=stalled[0], kind="stalled")
        if raised:
            rank = raised[0] if first_error not in raised else first_error
            info = replies[rank][1]
            extra = f"; rank(s) {[r for r in raised if r != rank]} raised too" if len(raised) > 1 else ""
            raise fail(f"rank {rank} raised {info['type']} while trying to {what}: {info['message']}{extra}"
                       f"{silent_text}{waiting_text}{restarted}", rank=rank, kind="raised",
                       traceback=info.get("traceback", ""))
        answered = sorted(replies)
        limit = nominal_timeout or timeout
        within = f"within the start timeout of {limit:g} s" if starting else f"within {limit:g} s"
        if compiling_s:
            within += f" (not counting {compiling_s:.0f} s of compiling)"
        parts = [f"rank(s) {hung} did not {what} {within}"]
        if silent:
            parts.append(f"rank(s) {silent} stopped answering (" + ", ".join(silence(r, silent_s[r]) for r in silent)
                         + ")")
        if waiting:
            parts.append(f"rank(s) {waiting} alive and waiting (at " + ", ".join(
                f"rank {r}: {_where(positions[r])}" for r in waiting) + ")")
        if in_collective:
            parts.append(in_collective)
        if starting:
            if answered:
                parts.append(f"rank(s) {answered} were ready")
            parts.append("set --start-timeout to wait longer")
        elif answered:
            parts.append(f"rank(s) {answered} had already returned" + (
                "" if silent else ": a rank that skips a collective (e.g. on an empty shard) leaves the others "
                "waiting"))
        elif not silent:
            parts.append("every rank is alive: a deadlock, or too slow for --case-timeout")
        single = silent if silent else (absent or hung)  # the rank the others wait for, when the audit names it
        raise fail("; ".join(parts) + restarted, rank=single[0] if len(single) == 1 else None,
                   kind="start" if starting else "timeout")

    def close(self) -> None:
        """End the ranks: asked to exit when idle, killed at once when busy (a call or the start under way)."""
        if not self._busy:
            for conn in self._conns:
                try:
                    conn.send(("exit", {}))
                except (OSError, ValueError):
                    pass
            deadline = time.monotonic() + 2.0
            for proc in self._procs:
                proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5.0)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []
        shutil.rmtree(self._dir, ignore_errors=True)


class PoolManager:
    """One pool per (world size, device, backend), started on first use, replaced when it broke."""

    def __init__(self) -> None:
        self._pools: dict[tuple[int, str, str], RankPool] = {}

    def get(self, world_size: int, device: str = "cpu", backend: str | None = None, *,
            start_timeout: float = 120.0, preload: tuple[str, ...] = ()) -> RankPool:
        resolved = resolve_backend(device, world_size, backend)
        key = (world_size, device, resolved)
        pool = self._pools.get(key)
        if pool is not None and not pool.alive:
            pool.close()
            pool = None
        if pool is None:
            pool = self._pools[key] = RankPool(world_size, device=device, backend=resolved,
                                               start_timeout_s=start_timeout, preload=preload)
        return pool

    def close_all(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


_DEFAULT: PoolManager | None = None


def default_manager() -> PoolManager:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PoolManager()
        atexit.register(_DEFAULT.close_all)
    return _DEFAULT
