"""Functions the pool tests run inside rank processes (imported there by name: the tests directory is on sys.path)."""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def all_reduce_rank(ctx, offset: float = 0.0) -> float:
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
    dist.all_reduce(torch.zeros(1))
    return ctx.rank


def crash_on(ctx, rank: int) -> int:
    if ctx.rank == rank:
        os._exit(17)
    return ctx.rank


def skip_collective_on(ctx, rank: int) -> int:
    if ctx.rank != rank:
        dist.all_reduce(torch.zeros(1))
    return ctx.rank


def pid(ctx) -> int:
    return os.getpid()


def sleep(ctx, seconds: float) -> int:
    time.sleep(seconds)
    return ctx.rank
