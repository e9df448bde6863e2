"""Functions the pool tests run inside rank processes (imported there by name: the tests directory is on sys.path).

torch is imported inside the functions, not here: a pool that spawns ``slow_start_main`` imports this module while
unpickling its target, before harness.rank.worker.main starts the heartbeat, so an import of torch here would keep
every rank silent for as long as torch takes to import (seconds on a loaded box), unlike the ranks the pools spawn.
"""
from __future__ import annotations

import os
import time


def all_reduce_rank(ctx, offset: float = 0.0) -> float:
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(ctx.rank) + offset])
    dist.all_reduce(value)
    return value.item()


def raise_on(ctx, rank: int) -> int:
    if ctx.rank == rank:
        raise RuntimeError(f"deliberate failure on rank {rank}")
    return ctx.rank


def raise_then_hang(ctx, rank: int) -> int:
    """One rank raises before a collective the others then wait in forever."""
    if ctx.rank == rank:
        raise RuntimeError("raised before the collective")
    import torch
    import torch.distributed as dist

    dist.all_reduce(torch.zeros(1))
    return ctx.rank


def crash_on(ctx, rank: int) -> int:
    if ctx.rank == rank:
        os._exit(17)
    return ctx.rank


def skip_collective_on(ctx, rank: int) -> int:
    import torch
    import torch.distributed as dist

    if ctx.rank != rank:
        dist.all_reduce(torch.zeros(1))
    return ctx.rank


def pid(ctx) -> int:
    return os.getpid()


def sleep(ctx, seconds: float) -> int:
    time.sleep(seconds)
    return ctx.rank


def _mark(marker: str | None, rank: int) -> None:
    """Tell the test this rank got here: creates ``<marker>.rank<r>``."""
    if marker:
        open(f"{marker}.rank{rank}", "w").close()


def sleep_then_all_reduce(ctx, sleepers: list[int], seconds: float, marker: str | None = None) -> float:
    """The ranks in ``sleepers`` sleep (collective-free), then every rank enters one all_reduce."""
    if ctx.rank in sleepers:
        ctx.progress("probe", "sleep")
        time.sleep(0.2)  # the heartbeat thread reports the new position meanwhile
        _mark(marker, ctx.rank)
        time.sleep(seconds)
    ctx.progress("probe", "all_reduce")
    return all_reduce_rank(ctx)


def wait_in_collective(ctx, skipper: int) -> int:
    """Every rank but ``skipper`` waits in an all_reduce that never completes (a deadlock)."""
    import torch
    import torch.distributed as dist

    if ctx.rank != skipper:
        ctx.progress("probe", "all_reduce")
        dist.all_reduce(torch.zeros(1))
    return ctx.rank


def slow_start_main(*args):
    """harness.rank.worker.main, after sleeping SYNCBN_TEST_SLOW_S seconds on rank SYNCBN_TEST_SLOW_RANK (a rank
    slow to start: silent, since it has not reached the code that sends heartbeats)."""
    from harness.rank import worker as rank_worker

    environ = args[10] if len(args) > 10 and args[10] is not None else os.environ  # the controller's, as main takes
    if args[0] == int(environ.get("SYNCBN_TEST_SLOW_RANK", "-1")):
        time.sleep(float(environ.get("SYNCBN_TEST_SLOW_S", "60")))
    return rank_worker.main(*args)
