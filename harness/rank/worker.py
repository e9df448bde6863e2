"""The code that runs inside one rank process (the controller side is harness.pool).

A rank joins the process group once, then serves ``(name, kwargs)`` events from the controller until told to exit:
``call`` runs ``module:function(ctx, **kwargs)`` and sends its return value back. Exceptions become an ``error``
event carrying the traceback, so the controller can name the rank that raised. While a rank is busy (starting, or
running a call) a heartbeat thread sends ``beat`` events with the position the rank reached last
(``RankContext.progress``; a new position at once), also while the main thread waits inside a collective (a gloo
wait releases the interpreter; tests/test_faults.py checks it), so the controller can tell a rank that stopped
answering from one that waits on the others; while a collective audit runs (harness.rank.audit), a beat also
carries its state (the collectives issued, the one waited in), and a result or error its final state, from which the
controller can prove a deadlock. A watchdog thread ends the rank if the controller disappears
(removing the pool's directory), so no rank or file outlives it. Ranks ignore SIGINT: a Ctrl-C reaches the whole
process group, and the controller, which ends its pools, decides what an interrupt means.
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

__all__ = ["RankContext", "main", "COMPILING"]

# The stage a rank reports while torch.compile compiles (harness.rank.compiled): the controller does not count that
# time against the case timeout (harness.pool), up to its own limit.
COMPILING = "compiling"


@dataclass
class RankContext:
    """What a function called inside a rank gets: its rank, the world, the device, and caches that live as long
    as the process (process groups by member tuple, loaded implementations by spec)."""

    rank: int
    world_size: int
    device: str
    backend: str
    groups: dict[tuple[int, ...], Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)
    local_rank: int | None = None  # torchrun: the GPU is chosen by the local rank; None: by the rank
    position: tuple[str, str] = ("idle", "")  # (phase, stage) this rank reached last, for hang reports
    on_progress: Any = None  # called after each progress (the heartbeat thread then reports it at once)
    collectives: Any = None  # the call's collective audit (harness.rank.audit), if one ran: its ``snapshot()``
    shared_dir: str | None = None  # a directory every rank of the pool shares (None under torchrun)

    def progress(self, phase: str, stage: str) -> None:
        """Record how far this rank got (the heartbeat reports it to the controller at once)."""
        self.position = (phase, stage)
        if self.on_progress is not None:
            self.on_progress()

    def process_group(self, members: tuple[int, ...] | None):
        """The process group of ``members`` (None or all ranks: the default group). Every rank must ask for the
        same groups in the same order: ``new_group`` is collective."""
        import torch.distributed as dist

        if members is None or tuple(members) == tuple(range(self.world_size)):
            return dist.group.WORLD
        members = tuple(members)
        if members not in self.groups:
            self.groups[members] = dist.new_group(list(members))
        return self.groups[members]

    def device_for_rank(self) -> str:
        if self.device != "cuda":
            return "cpu"
        import torch

        index = self.rank if self.local_rank is None else self.local_rank
        return f"cuda:{index % max(1, torch.cuda.device_count())}"


class _Channel:
    """The pipe to the controller, shared by the main thread and the heartbeat (sends are serialised)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.busy = True  # starting counts as busy
        self.position: tuple[str, str] = ("start", "import")
        self.context: RankContext | None = None
        self.moved = threading.Event()  # set on progress: beat now rather than at the next interval
        self.moved.set()  # first beat at once, before the import of torch (loaded box: it starves this thread)

    def send(self, name: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.conn.send((name, payload))

    def audit_state(self, *, final: bool = False) -> dict[str, Any]:
        """{"collectives": the call's audit state (``final``: with its whole log)} when a collective audit ran in
        it, else {}."""
        audit = self.context.collectives if self.context is not None else None
        return {"collectives": audit.snapshot(final=final)} if audit is not None else {}

    def heartbeat(self, interval: float) -> None:
        while True:
            self.moved.wait(interval)
            self.moved.clear()
            if self.busy:
                position = self.context.position if self.context is not None else self.position
                try:
                    self.send("beat", {"position": position, **self.audit_state()})
                except (OSError, ValueError, BrokenPipeError):
                    return


def _watch_parent(controller_pid: int, directories: tuple[str, ...]) -> None:
    """End this rank when the controller is gone: its process no longer exists, or this rank was orphaned (its
    parent, the controller or the forkserver that forked it for the controller, exited). The controller's
    directories (the pool's, the forkserver's) are removed first: nobody else is left to."""
    parent = os.getppid()
    while True:
        try:
            os.kill(controller_pid, 0)
            alive = os.getppid() == parent
        except ProcessLookupError:
            alive = False
        except PermissionError:  # exists, owned by someone else: not ours to judge
            alive = os.getppid() == parent
        if not alive:  # the controller died without closing the pool: clean up after it
            _remove(directories)
            os._exit(3)
        time.sleep(0.5)


def _remove(directories: tuple[str, ...]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def _resolve(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def main(rank: int, world_size: int, init_file: str, conn, device: str, backend: str, parent_pid: int,
         collective_timeout_s: float, sys_path: list[str], heartbeat_s: float = 0.5,
         environ: dict[str, str] | None = None, server_dir: str | None = None) -> None:
    """Entry point of a rank process (forked by harness.pool's forkserver, or spawned). ``environ``: the
    controller's environment now (a forked rank inherits the forkserver's, which may be older); ``server_dir``: the
    forkserver's directory, removed with the pool's if the controller dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    directories = (os.path.dirname(init_file),) + ((server_dir,) if server_dir else ())
    threading.Thread(target=_watch_parent, args=(parent_pid, directories), daemon=True).start()
    channel = _Channel(conn)
    threading.Thread(target=channel.heartbeat, args=(heartbeat_s,), daemon=True).start()
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if os.path.isdir("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        import torch
        import torch.distributed as dist
        import torch.distributed.nn  # noqa: F401 - before the group exists: see harness.launch.main

        from ..tf32 import set_tf32

        torch.set_num_threads(1)
        set_tf32(False)  # float32 means float32 (harness.tf32); a TF32 case switches it on for itself
        if device == "cuda":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        channel.position = ("start", "init_process_group")
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=collective_timeout_s))
        ctx = RankContext(rank=rank, world_size=world_size, device=device, backend=backend,
                          on_progress=channel.moved.set, shared_dir=os.path.dirname(init_file))
        channel.context = ctx
        channel.busy = False
        channel.send("ready", {"rank": rank, "pid": os.getpid()})
    except BaseException as exc:  # noqa: BLE001 - reported to the controller, which names this rank
        channel.send("error", {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()})
        return
    while True:
        try:
            name, kwargs = conn.recv()
        except (EOFError, OSError):  # the controller went away without closing the pool: clean up after it
            _remove(directories)
            break
        if name == "exit":
            break
        channel.busy = True
        ctx.collectives = None
        ctx.progress("call", kwargs.get("target", ""))
        try:
            result = _resolve(kwargs["target"])(ctx, **kwargs.get("kwargs", {}))
            channel.busy = False
            channel.send("result", {"value": result, **channel.audit_state(final=True)})
        except BaseException as exc:  # noqa: BLE001
            channel.busy = False
            channel.send("error", {"type": type(exc).__name__, "message": str(exc),
                                   "traceback": traceback.format_exc(), **channel.audit_state(final=True)})
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
