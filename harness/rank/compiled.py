"""The compiled lane inside a rank (``--compile BACKEND``): the implementation under ``torch.compile``, and what
compiling it took, returned as plain data with the rank's result (docs/compile.md).

``lane(options)`` is None with ``--compile off``; else the process's ``CompiledLane``. Per case a rank entry calls
``start()``, runs what ``compile(fn)`` returns in place of ``fn`` (forward and backward, every phase), and returns
``report()`` under its result's ``"compile"`` key:

    {"backend", "graphs", "graph_breaks": [{"reason", "detail", "where", "count"}], "recompiles": [{"reason",
     "where", "count"}], "compile_s", "run_s", "cache_hits", "cache_misses"}

An exception is classified by ``compile_error`` (a compile error of dynamo, AOTAutograd or inductor, as the
"compile failed" outcome) before anything else reads it: dynamo's own ``Unsupported`` is not the SUT's.

How a case is compiled, and why:
- ``torch._dynamo.reset()`` at every ``start``: a case traces exactly what it runs, so its graph breaks and
  recompilations are its own and a rerun (``--case ID``) compiles what the suite compiled, whatever ran before it
  in the rank. The compiled graphs are reused all the same: AOTAutograd's and inductor's caches (in memory and in
  TORCHINDUCTOR_CACHE_DIR) are keyed by the graph and its inputs' metadata, i.e. by what forces a recompile (dtype,
  dimensions, layout, affine, running statistics, training or eval, constants such as eps and momentum, sizes 0 and
  1), and serve every case of that class, in every rank and every run.
- ``dynamic=True`` and no duck sizing: sizes are symbolic (only 0 and 1 specialise), each dimension its own symbol,
  so one graph serves every size of its class and a case's graphs do not depend on which sizes happen to coincide.
  Static-shape code (what a fixed-size training loop gets after its first step) is not what this lane generates.
- ``fail_on_recompile_limit_hit``: a frame that recompiles past dynamo's limit raises (a compile failure) instead
  of silently running eagerly, which would judge the eager code under the compiled lane's name.
- inductor compiles in the rank's own process (``compile_threads = 1``): no compile worker pool per rank.
- the ranks of a pool compile one at a time (a file lock in the pool's directory, held from dynamo's compile start
  to its end: no collective runs while a frame compiles): the ranks trace the same graphs, so the first compiles
  each and the others load it from inductor's cache instead of compiling it again at the same moment.
- the harness's Python CPU kernels run under ``torch.compiler.disable`` (harness.kernel_table): opaque calls, as a
  native kernel is.

Graph breaks come from ``torch._dynamo.utils.graph_break_reasons`` (the reason and the user frame of each break,
as ``torch._dynamo.explain`` reads them), recompilations from dynamo's "recompiles" log (one record per
recompilation, with the guard that failed), compile seconds from dynamo's timers (frame compiles, and the lazy
backward compile): internals of torch._dynamo, kept in this module alone.
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from typing import Any, Callable

from ..options import RankOptions
from .worker import COMPILING, RankContext

__all__ = ["CompiledLane", "lane", "report", "compile_error", "rank_error", "COMPILE_STAGE"]

COMPILE_STAGE = "compile"  # the stage of a compile error (a harness.errors.RankError)
_RECOMPILES_LOGGER = "torch._dynamo.guards.__recompiles"
_TIMERS = ("_compile.compile_inner", "backward._backward_impl")  # frame compiles; the lazy backward compile
_CACHE_HITS = (("inductor", "fxgraph_cache_hit"), ("aot_autograd", "autograd_cache_hit"))
_CACHE_MISSES = (("inductor", "fxgraph_cache_miss"), ("aot_autograd", "autograd_cache_miss"))
_lanes: dict[str, CompiledLane] = {}
_records: _Records | None = None  # the recompile log's messages, captured once per process


def lane(options: RankOptions) -> CompiledLane | None:
    """The compiled lane of ``options.compile`` (None: off), configured once per process."""
    backend = getattr(options, "compile", "off") or "off"
    if backend == "off":
        return None
    if backend not in _lanes:
        _lanes[backend] = CompiledLane(backend)
    return _lanes[backend]


def report(lane: CompiledLane | None) -> dict[str, Any]:
    """What a rank adds to its result for the case just run: ``{"compile": lane.report()}``, ``{}`` with no lane."""
    return {} if lane is None else {"compile": lane.report()}


class _Records(logging.Handler):
    """Keeps the messages of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a message that cannot be formatted is not worth failing a case
            self.messages.append(str(record.msg))


def _configure() -> _Records:
    """Once per process: dynamo's configuration for the lane, the kernels opaque, the recompile log captured."""
    global _records
    if _records is not None:
        return _records
    import torch
    import torch._dynamo
    import torch._inductor.config
    import torch.fx.experimental._config
    from torch._logging import _internal as torch_logging

    from .. import kernel_table

    torch._dynamo.config.fail_on_recompile_limit_hit = True
    torch.fx.experimental._config.use_duck_shape = False
    torch._inductor.config.compile_threads = 1
    kernel_table.kernels_opaque_to_compiler()
    records = _Records()
    torch_logging.log_state.enable_artifact("recompiles")
    logger = logging.getLogger(_RECOMPILES_LOGGER)
    logger.setLevel(logging.DEBUG)
    logger.addHandler(records)
    if not os.environ.get("TORCH_LOGS"):  # the user asked for torch's own log output: leave it alone
        logger.propagate = False
    _records = records
    return records


class CompiledLane:
    """``torch.compile`` with one backend in this rank process, and the facts of the case being run."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._records = _configure()
        self._start = 0.0
        self._timers: dict[str, float] = {}
        self._counters: Counter = Counter()

    def start(self, ctx: RankContext) -> None:
        """A new case: dynamo's caches cleared (see the module docstring), the counters read; while dynamo
        compiles, the rank's heartbeat says so (harness.rank.worker.COMPILING: not counted as hanging)."""
        import torch._dynamo
        from torch._dynamo.callback import callback_handler

        torch._dynamo.reset()  # also drops the callbacks registered for the case before
        stages: list[tuple[str, str]] = []
        lock = _CompileLock(os.path.join(ctx.shared_dir, "compile.lock") if ctx.shared_dir else None)

        def compiling(args: Any) -> None:
            stages.append(ctx.position)
            ctx.progress(ctx.position[0], COMPILING)
            lock.acquire()

        def compiled(args: Any) -> None:
            lock.release()
            if stages:
                ctx.progress(*stages.pop())

        callback_handler.register_start_callback(compiling)
        callback_handler.register_end_callback(compiled)
        self._records.messages.clear()
        self._timers, self._counters = _timers(), _counters()
        self._start = time.monotonic()

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a module, a function) under torch.compile with this lane's backend and dynamic shapes."""
        import torch

        return torch.compile(fn, backend=self.backend, dynamic=True)

    def report(self) -> dict[str, Any]:
        """What compiling this case took (see the module docstring)."""
        from torch._dynamo.utils import graph_break_reasons

        counters = _counters() - self._counters
        timers = _timers()
        compile_s = sum(timers.get(k, 0.0) - self._timers.get(k, 0.0) for k in _TIMERS)
        total_s = time.monotonic() - self._start
        breaks: Counter = Counter()
        for reason in graph_break_reasons:
            breaks[_graph_break(reason.reason, reason.user_stack)] += 1
        recompiles: Counter = Counter(_recompile(message) for message in self._records.messages)
        return {"backend": self.backend, "graphs": counters[("stats", "unique_graphs")],
                "graph_breaks": [{"reason": r, "detail": d, "where": w, "count": n}
                                 for (r, d, w), n in breaks.items()],
                "recompiles": [{"reason": r, "where": w, "count": n} for (r, w), n in recompiles.items()],
                "compile_s": round(compile_s, 4), "run_s": round(max(total_s - compile_s, 0.0), 4),
                "cache_hits": sum(counters[k] for k in _CACHE_HITS),
                "cache_misses": sum(counters[k] for k in _CACHE_MISSES)}


class _CompileLock:
    """An exclusive lock on ``path`` shared by the ranks of a pool (none without a path: torchrun)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None or self._fd is not None:
            return
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _counters() -> Counter:
    from torch._dynamo.utils import counters

    return Counter({(group, name): n for group, values in counters.items() for name, n in values.items()})


def _timers() -> dict[str, float]:
    from torch._dynamo.utils import compilation_time_metrics

    return {k: sum(compilation_time_metrics.get(k, ())) for k in _TIMERS}


def _where(filename: str, lineno: int | None) -> str:
    """A source location, short: from torch/... or harness/... (or the file's name) on."""
    path = filename.replace(os.sep, "/")
    for anchor in ("/site-packages/", "/dist-packages/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    else:
        match = re.search(r"/((?:harness|reference|tests|cases|torch)/.*)$", path)
        path = match.group(1) if match else os.path.basename(path)
    return f"{path}:{lineno}" if lineno is not None else path


def _graph_break(reason: str, user_stack: list[Any]) -> tuple[str, str, str]:
    """(reason, detail, where) of a graph break: dynamo's kind of break ("Dynamic shape operator", "Unsupported
    Tensor.item() call ..."), with the higher-order operator it happened in and its explanation; the user frame."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Encountered graph break")] or [reason.strip()]
    kind = lines[0]
    hop = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Higher Order Operator:")), "")
    explanation = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Explanation:")), "")
    where = _where(user_stack[-1].filename, user_stack[-1].lineno) if user_stack else ""
    return kind + (f" (in {hop})" if hop else ""), explanation, where


_RECOMPILING = re.compile(r"Recompiling function (\S+) in (.+):(\d+)")
_GUARD = re.compile(r"^\s*-\s*\d+/\d+:\s*(.+?)\s*(?:#.*)?$")


def _recompile(message: str) -> tuple[str, str]:
    """(the first guard that failed, the function recompiled) of a "Recompiling function ..." log message."""
    head = _RECOMPILING.search(message)
    where = f"{head.group(1)} ({_where(head.group(2), int(head.group(3)))})" if head else ""
    guard = next((m.group(1) for m in map(_GUARD.match, message.splitlines()) if m), "")
    return guard or "guard failure (reason not reported)", where


def compile_error(exc: BaseException) -> str | None:
    """"<Type>: <first line> (at <where>)" when ``exc`` is a compile error (dynamo, AOTAutograd, inductor; a
    recompile limit hit), else None (an error of the implementation itself, raised eagerly or by compiled code)."""
    import torch._dynamo.exc as dynamo_exc

    compile_types = (dynamo_exc.TorchDynamoException, dynamo_exc.FailOnRecompileLimitHit)
    inductor = type(exc).__module__.startswith("torch._inductor")
    if not (isinstance(exc, compile_types) or inductor):
        return None
    inner = getattr(exc, "inner_exception", None) or (exc.__cause__ if isinstance(exc, dynamo_exc.BackendCompilerFailed)
                                                      else None)
    shown = inner if inner is not None else exc
    text = str(shown).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    got = _GOT.search(text)  # dynamo ran the code on fake tensors and it raised: say what it raised
    if got:
        first += f": got {got.group(1)}"
    if len(first) > 240:
        first = first[:237] + "..."
    where = _user_frame(text) or _user_frame(str(exc))
    return f"{type(shown).__name__}: {first}" + (f" (at {where})" if where else "")


_GOT = re.compile(r"Explanation: Dynamo failed to run FX node with fake tensors: .*?: got (.+)$", re.M)
_USER_CODE_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _user_frame(text: str) -> str:
    """The innermost frame of dynamo's "from user code:" section of an error message that is not torch's private
    machinery (torch/_library, torch/_ops.py: a custom op's call) ("" if none)."""
    if "from user code:" not in text:
        return ""
    frames = [_where(path, int(line)) for path, line in _USER_CODE_FRAME.findall(text.split("from user code:", 1)[1])]
    public = [frame for frame in frames if not frame.startswith(("torch/_", "torch/utils/"))]
    return (public or frames or [""])[-1]


def rank_error(lane: CompiledLane | None, phase: str, stage: str, exc: BaseException) -> Any:
    """``exc`` as a harness.errors.RankError: at stage "compile" with compile_error's text when the lane's
    compiler raised it, else at ``stage`` as raised."""
    from ..errors import RankError

    error = RankError.from_exception(phase, stage, exc)
    text = compile_error(exc) if lane is not None else None
    if text is not None:
        error.stage, error.message = COMPILE_STAGE, f"{lane.backend}: {text}"
    return error
