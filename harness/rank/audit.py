"""The collective audit inside a rank: every torch.distributed collective the SUT issues, recorded without changing
what it does (harness.collectives reads the records in the controller).

``CollectiveAudit(ctx)`` is a context manager: while it is open, torch.distributed's collective functions are
wrapped, in ``torch.distributed`` and in ``torch.distributed.distributed_c10d`` alike (torch's SyncBatchNorm
Function calls ``dist.all_gather`` and ``torch.distributed.all_reduce``, both looked up when called), and each call
is recorded (harness.collectives.entry: op, dtype, shape, bytes, group, its index on that group, the phase and stage
``ctx.progress`` last set) before the original function runs with the same arguments. A collective called from
inside another (``all_gather_object`` calls ``all_gather``) is recorded once, as the outer one. While a rank is
inside a collective (or has an async one in flight: until its future completes), ``ctx.collectives`` says which
(``snapshot``), and the heartbeat reports it at once (harness.rank.worker), so the controller can prove a deadlock
(harness.collectives.deadlock) within a heartbeat. ``issued_by("ddp")`` marks collectives that are not the SUT's
(the model kind's DDP gradient reduction). Under --compile no audit runs (``audit_of_case``): dynamo would trace
the wrappers as user code (graph breaks at their locks, the harness's, not the SUT's), compile them as frames of
their own (the collective then a one-op graph the audit cannot see), and the collectives dynamo puts in a graph are
not Python calls at all; the compiled lane judges the numbers, the eager lane what the ranks exchange.
The log is ``audit.log``; rank entries return it with their result. On exit every function is restored.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import Any, Callable, Iterator

from ..collectives import P2P, Entry, entry, group_key, snapshot
from .worker import RankContext

__all__ = ["CollectiveAudit", "WRAPPED", "audit_of_case"]

# The collectives wrapped, each with the argument that holds what this rank hands over (None: nothing, a barrier).
WRAPPED: dict[str, str | None] = {
    "all_reduce": "tensor", "all_gather": "tensor", "all_gather_into_tensor": "input_tensor",
    "all_gather_single": "input_tensor", "_all_gather_base": "input_tensor",
    "all_gather_coalesced": "input_tensor_list",
    "all_reduce_coalesced": "tensors", "broadcast": "tensor", "reduce": "tensor", "gather": "tensor",
    "scatter": "tensor", "reduce_scatter": "input_list", "reduce_scatter_tensor": "input",
    "_reduce_scatter_base": "input", "all_to_all": "input_tensor_list", "all_to_all_single": "input",
    "barrier": None, "monitored_barrier": None, "all_gather_object": "obj", "broadcast_object_list": "object_list",
    "gather_object": "obj", "scatter_object_list": "scatter_object_input_list", "send": "tensor", "recv": "tensor",
    "isend": "tensor", "irecv": "tensor",
}
_DTYPE_NAMES: dict[Any, str] = {}


def _dtype_name(dtype: Any) -> str:
    if dtype not in _DTYPE_NAMES:
        _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return _DTYPE_NAMES[dtype]


def _payload(value: Any) -> tuple[str, list[int], int, int]:
    """(dtype, shape, numel, bytes) of what a rank hands over: a tensor, a list of tensors (shape [len, *first]),
    objects ("object", sizes unknown) or nothing ("-")."""
    import torch

    if isinstance(value, torch.Tensor):
        return _dtype_name(value.dtype), list(value.shape), value.numel(), value.numel() * value.element_size()
    if isinstance(value, (list, tuple)) and value and all(isinstance(t, torch.Tensor) for t in value):
        return (_dtype_name(value[0].dtype), [len(value), *value[0].shape], sum(t.numel() for t in value),
                sum(t.numel() * t.element_size() for t in value))
    if value is None:
        return "-", [], 0, 0
    return "object", [], 0, 0


@functools.lru_cache(maxsize=None)
def _positions(function: Callable[..., Any]) -> dict[str, int]:
    """Where each parameter of a collective sits among the positional arguments (read once per function)."""
    return {name: i for i, name in enumerate(inspect.signature(function).parameters)}


class CollectiveAudit:
    """Records the collectives issued on this rank while open (see the module's docstring)."""

    def __init__(self, ctx: RankContext) -> None:
        self.ctx = ctx
        self.log: list[Entry] = []
        self.inside: Entry | None = None
        self.pending: list[Entry] = []  # async collectives issued and not completed
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._nested = threading.local()
        self._saved: list[tuple[Any, str, Any]] = []
        self._groups: dict[int, list[int]] = {}
        self._source = "sut"

    def snapshot(self, *, final: bool = False) -> dict[str, Any]:
        """This rank's audit state now (harness.collectives.snapshot), for the heartbeat; ``final``, with the whole
        log, for the result."""
        with self._lock:
            return snapshot(self.log, self.inside, self.pending, final=final, counts=self._counts)

    @contextlib.contextmanager
    def issued_by(self, source: str) -> Iterator[None]:
        """Record the collectives issued inside as ``source``'s, not the SUT's (the harness's DDP: its gradient
        reduction is checked for agreement, not counted as the SUT's cost)."""
        previous, self._source = self._source, source
        try:
            yield
        finally:
            self._source = previous

    def _members(self, group: Any) -> list[int]:
        import torch.distributed as dist

        key = id(group)
        if key not in self._groups:
            if group is None or group is dist.group.WORLD:
                self._groups[key] = list(range(dist.get_world_size()))
            else:
                self._groups[key] = list(dist.get_process_group_ranks(group))
        return self._groups[key]

    def _record(self, op: str, positions: dict[str, int], args: tuple, kwargs: dict) -> Entry:
        def argument(name: str | None) -> Any:
            if name is None:
                return None
            if name in kwargs:
                return kwargs[name]
            position = positions.get(name, len(args))
            return args[position] if position < len(args) else None

        dtype, shape, numel, nbytes = _payload(argument(WRAPPED[op]))
        members = self._members(argument("group"))
        key = ("p2p " if op in P2P else "") + group_key(members)  # point-to-point numbered apart from collectives
        phase, stage = self.ctx.position
        with self._lock:
            index = self._counts.get(key, 0)
            self._counts[key] = index + 1
            record = entry(op, dtype=dtype, shape=shape, numel=numel, nbytes=nbytes, group=members, index=index,
                           phase=phase, stage=stage, source=self._source)
            self.log.append(record)
            self.inside = record
        return record

    def _wrap(self, op: str, original: Callable[..., Any]) -> Callable[..., Any]:
        positions = _positions(original)

        def audited(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._nested, "depth", 0):
                return original(*args, **kwargs)
            record = self._record(op, positions, args, kwargs)
            if self.ctx.on_progress is not None:
                self.ctx.on_progress()  # the heartbeat says at once that this rank is inside the collective
            self._nested.depth = 1
            try:
                work = original(*args, **kwargs)
            finally:
                self._nested.depth = 0
                with self._lock:
                    self.inside = None
            self._track(record, work)
            return work

        audited.__wrapped__ = original  # type: ignore[attr-defined]
        audited.__name__ = audited.__qualname__ = op
        return audited

    def _track(self, record: Entry, work: Any) -> None:
        """An async collective (a work handle) counts as waited in until its future completes."""
        future = getattr(work, "get_future", None)
        if future is None:
            return
        with self._lock:
            self.pending.append(record)

        def done(_: Any) -> None:
            with self._lock:
                if record in self.pending:
                    self.pending.remove(record)

        try:
            future().add_done_callback(done)
        except RuntimeError:  # a backend without futures: no way to tell when it completes
            done(None)

    def __enter__(self) -> CollectiveAudit:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d

        for op in WRAPPED:
            original = getattr(distributed_c10d, op, None)
            if original is None:  # not in this torch
                continue
            wrapper = self._wrap(op, original)
            for module in (distributed_c10d, dist):
                if getattr(module, op, None) is original:
                    self._saved.append((module, op, original))
                    setattr(module, op, wrapper)
        self.ctx.collectives = self
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for module, op, original in reversed(self._saved):
            setattr(module, op, original)
        self._saved.clear()


class _NoAudit:
    """What a compiled case has instead of an audit: nothing wrapped, no log."""

    log = None

    def __enter__(self) -> _NoAudit:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None


def audit_of_case(ctx: RankContext, *, compiled: bool) -> CollectiveAudit | _NoAudit:
    """The case's collective audit, or none under --compile (module docstring); its ``log`` goes with the result."""
    return _NoAudit() if compiled else CollectiveAudit(ctx)
