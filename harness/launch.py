"""The conformance cases under torchrun: every torchrun process is one rank, no harness pool.

    torchrun --nproc-per-node=N [--nnodes=M ...] -m harness.launch [the options of python -m harness run]

Which cases run: the module cases of the profile (on ``--device``, as with ``pytest --device``) whose world size
equals torchrun's world size W; every other case is counted as skipped. ``--case ID`` runs any case whose world
size is W: a module case, a model case (DDP over the torchrun processes) or an op case (W = 1). Shards are never
remapped onto another world size: a case's shard sizes are part of what it tests (empty ranks, one rank holding
everything), so a remapped case would be a different case under the same id. A ``--case`` whose world size is not
W is a usage error (exit 2). Process groups of a case (``g...``) are created from the torchrun group, collectively.

A known deviation marked ``aborts`` (it kills a rank's process) is skipped and counted: under torchrun one dead
process ends the job, where the pytest pools restart the rank and report the case. Rank 0 prints ``[ RUN   ] id``
before each case and rewrites the results document after each one (``exit_status`` null until the end), so a job
that dies anyway names the case and keeps the results so far.

The options are the table of harness.options, the same as ``python -m harness run`` and pytest; ``--case-timeout``
is the collective timeout of the torchrun process group here.

Lockstep: for each case every rank runs its kind's rank entry (harness.kinds: the same code the pools run), the
results are gathered on rank 0 (dist.gather_object), and rank 0 computes the expected values and judges them the
way the pools' runner does (harness.kinds.settle). A case that one rank alone declares unsupported (an empty shard)
is released through the job's store first (``_Release``), so it ends unsupported in about a second, not with a
hang or a mismatched collective. Known deviations
(harness.deviations) for the SUT count as expected failures; one that passes counts as a failure (strict, like
the pytest suite). Rank 0 prints one line per case and a summary, writes the results document and the HTML
report if asked (the same formats as the pytest run, so the gate reads them too), and every rank exits
0 when all cases passed, 1 when one failed, 2 on a usage error.

Backend: harness.pool.resolve_backend (gloo on CPU; on CUDA nccl when there is a GPU per local rank, else gloo);
CUDA ranks use the GPU ``LOCAL_RANK % device_count``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from .rank.worker import RankContext

__all__ = ["main", "select_cases", "build_parser", "loopback_on_one_host"]


def build_parser() -> argparse.ArgumentParser:
    from .options import add_argparse_options

    parser = argparse.ArgumentParser(prog="torchrun ... -m harness.launch", description=__doc__.splitlines()[0])
    add_argparse_options(parser)
    return parser


def select_cases(profile: str, device: str, world_size: int, case_id: str | None, areas: str | None = None):
    """(cases to run, number skipped): the profile's module cases of world size ``world_size`` (of the areas
    ``--area`` names, if any), or ``case_id`` (a module, model or op case: an op case runs on one process)."""
    from .catalogue import in_areas, module_cases
    from .errors import CaseError
    from .kinds import case_for_id

    if case_id:
        spec = case_for_id(case_id)
        if spec.world_size != world_size:
            raise CaseError(f"--case {case_id!r} has world size {spec.world_size}, but torchrun started "
                            f"{world_size} processes: use --nproc-per-node/--nnodes for {spec.world_size}")
        return [spec], 0
    cases = in_areas(module_cases(profile, device=device), areas)
    chosen = [c for c in cases if c.world_size == world_size]
    return chosen, len(cases) - len(chosen)


def loopback_on_one_host(environ: Any, *, world_size: int, local_world_size: int) -> None:
    """gloo over the loopback interface when every rank is on this host (``GLOO_SOCKET_IFNAME=lo`` unless set);
    across hosts the user names the interface that reaches the others (docs/gpu.md, "Several nodes")."""
    if local_world_size == world_size and os.path.isdir("/sys/class/net/lo"):
        environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def _run_rank(ctx: RankContext, kind, spec, plan, options) -> Any:
    """This rank's part of ``spec``: its kind's rank entry (the code the pools run). An exception is returned as
    data (rank 0 reports it, naming this rank) rather than raised: the other ranks are waiting in gather_object."""
    from .errors import RankError
    from .kinds import rank_payload

    try:
        return kind.rank_entry(ctx, **rank_payload(spec, options, plan))
    except Exception as exc:  # noqa: BLE001 - reported by rank 0 as this rank's failure
        return _Raised(RankError.from_exception("setup", "harness", exc))


class _Raised:
    """A rank entry that raised, as gathered on rank 0 (the pools report the same as a rank's ``error`` event)."""

    def __init__(self, error) -> None:
        self.error = error


def _judge(kind, spec, plan, gathered: list[Any]):
    """Rank 0: the CaseResult of ``spec`` from every rank's _run_rank value, judged by its kind as the pools'
    runner does (harness.kinds.settle)."""
    from .kinds import failures_of_raised, settle
    from .result import CaseResult

    result = CaseResult(spec)
    raised = {r: v.error for r, v in enumerate(gathered) if isinstance(v, _Raised)}
    if raised:
        result.failures.extend(failures_of_raised(raised))
        return result
    return settle(kind, spec, plan.expected(), gathered, result)


class _Release:
    """The contract of harness.kinds.run_case under torchrun: any rank may declare a case unsupported, and the
    harness tells the others. torchrun cannot restart its processes, and a rank waiting in a gloo collective for the
    declaring rank cannot be interrupted from Python, so the declaring rank closes its connections instead.

    After its rank entry, every rank marks the case done in the job's store (torchrun's, under a prefix of its
    own). A rank that declared waits a short grace (GRACE_S) for every other rank to be done; if one is not (it
    waits for this rank in a collective that will never complete), it asks for a release in the store and destroys
    its process groups: the waiting ranks' collective ends with "connection closed" (their entry returns it as an
    error) and, seeing the release, each destroys its own groups too (releasing any rank waiting for it). Once every
    rank is done, a released case renews the process groups on every rank (a new default group, its rendezvous
    under a new store prefix; the case's subgroups are made again by the next case), so the next case starts with
    collectives in step. Only then do the ranks gather their results (``_run_cases``): a declaring rank never
    enters a collective its peers are waiting in with the SUT's. Rank 0 judges the case unsupported
    (harness.kinds.settle). With NCCL (a GPU per rank) destroying a communicator does not end a peer's kernel that
    waits in a collective: that peer is released by the collective timeout (``--case-timeout``) instead, where
    NCCL's own error handling may end the job (checked on gloo only)."""

    GRACE_S = 1.0  # harness.pool._QUICK_GRACE_S: ranks that would declare too do it at once

    def __init__(self, ctx: RankContext, *, timeout_s: float) -> None:
        import torch.distributed as dist

        self.ctx, self.timeout_s = ctx, timeout_s
        self.base = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "0")),
                                  is_master=False, timeout=timedelta(seconds=max(timeout_s, 30.0)))
        self.store = dist.PrefixStore("syncbn-launch/", self.base)
        self.closed = False

    def settle(self, index: int, value: Any) -> None:
        key = f"case{index}"
        done = [f"{key}/done/{r}" for r in range(self.ctx.world_size)]
        released = f"{key}/release"
        self.store.set(done[self.ctx.rank], "1")
        if isinstance(value, dict) and value.get("unsupported"):
            deadline = time.monotonic() + self.GRACE_S
            while not self.store.check(done) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not self.store.check(done):  # a peer is not done: it waits for this rank
                self.store.set(released, "1")
                self._close()
        elif self.store.check([released]):
            self._close()  # released by a declaring peer: release any rank waiting for this one
        # A rank still in the SUT's collective is released above, or by its collective timeout (--case-timeout).
        self.store.wait(done, timedelta(seconds=2 * self.timeout_s + 30.0))
        if self.store.check([released]):
            self._close()
            self._open(index)

    def _close(self) -> None:
        import gc

        import torch.distributed as dist

        if not self.closed:
            self.ctx.groups.clear()
            dist.destroy_process_group()
            gc.collect()  # the group's last reference gone: its connections close now
            self.closed = True

    def _open(self, index: int) -> None:
        import torch.distributed as dist

        dist.init_process_group(self.ctx.backend, store=dist.PrefixStore(f"syncbn-regroup{index}/", self.base),
                                rank=self.ctx.rank, world_size=self.ctx.world_size,
                                timeout=timedelta(seconds=self.timeout_s))
        self.closed = False


STATUS_ENV = "SYNCBN_LAUNCH_STATUS"  # a file where rank 0 writes the launcher's exit code (``harness torchrun``)


def main(argv: list[str] | None = None) -> int:
    """The launcher in one torchrun process; its exit code, also written to $SYNCBN_LAUNCH_STATUS by rank 0 (torchrun
    itself exits 1 for any failing child, a usage error included: ``python -m harness torchrun`` reports the
    launcher's own code)."""
    code = _main(argv)
    path = os.environ.get(STATUS_ENV)
    if path and int(os.environ.get("RANK", "0")) == 0:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{code}\n")
    return code


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    import torch.distributed as dist

    from .errors import CaseError
    from .options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, resolve
    from .pool import resolve_backend
    from .sut import check_kernels, check_sut
    from .tf32 import set_tf32

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        options = resolve(vars(args))
        if options.device == "cuda" and not torch.cuda.is_available():
            raise CaseError("--device cuda: torch.cuda.is_available() is False")
        check_sut(options.sut, option=options.spelled("sut"))
        if options.kernels:
            check_kernels(options.kernels, option=options.spelled("kernels"))
        cases, skipped = select_cases(options.profile, options.device, world_size, options.case, options.area)
    except CaseError as exc:
        print(f"harness.launch: usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    loopback_on_one_host(os.environ, world_size=world_size, local_world_size=local_world)
    set_tf32(False)
    backend = resolve_backend(options.device, local_world, options.backend_choice)
    if options.device == "cuda":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    # Before the group exists: torch.distributed.nn.functional binds ``group=group.WORLD`` as default arguments
    # when first imported. Imported later (DDP's __init__ imports torch._dynamo, which imports it), those defaults
    # hold the default group for good: destroy_process_group cannot free it, gloo's worker threads outlive it into
    # interpreter shutdown, and one releasing the last collective's tensors there aborts the process (SIGABRT).
    import torch.distributed.nn  # noqa: F401
    dist.init_process_group(backend, timeout=timedelta(seconds=options.case_timeout))
    ctx = RankContext(rank=rank, world_size=world_size, device=options.device, backend=backend,
                      local_rank=local_rank)
    try:
        failed = _run_cases(ctx, cases, skipped, options)
    finally:
        dist.destroy_process_group()
    return EXIT_FAILED if failed else EXIT_OK


def _run_cases(ctx: RankContext, cases, skipped: int, options) -> int:
    import torch.distributed as dist

    from harness.reports.html import write_html
    from harness.reports.results import build_document, case_record, environment, save_results

    from .deviations import known_defect, load_known_deviations, match_deviation
    from .kinds import kind_of, strict_failures
    from .sut import built_on
    from .options import EXIT_FAILED, EXIT_OK, rerun_command
    from .outcomes import FAILING, OUTCOMES

    deviations = load_known_deviations()
    sut = options.sut
    base_sut = built_on(sut)  # checked before the group existed (check_sut)
    release = _Release(ctx, timeout_s=options.case_timeout)
    records: list[dict[str, Any]] = []
    counts: Counter = Counter()  # outcome (harness.outcomes) -> cases
    aborting = 0
    skipped_here: set[str] = set()  # process-killing known deviations, skipped on purpose
    start_all = time.monotonic()

    def write_results(exit_status: int | None) -> None:
        """Rank 0, after every case (exit_status None: in progress) and at the end: a job that dies keeps what
        it had, marked incomplete (it never reads as passed), with the cases that did not run."""
        env = environment(sut=sut, kernels=options.kernels, profile=options.profile, backend=ctx.backend,
                          case=options.case, cases=records, workers=ctx.world_size,
                          strict_features=options.strict_features, compile=options.compile,
                          strict_compile=options.strict_compile)
        done = {record["id"] for record in records} | skipped_here
        not_run = [spec.id for spec in cases if spec.id not in done]
        incomplete = None if exit_status is not None else {
            "reason": "in progress, or the torchrun job died before its last case", "cases_run": len(done),
            "cases_selected": len(cases), "not_run": not_run}
        document = build_document(records, env, exit_status=exit_status, incomplete=incomplete)
        if options.json:
            path = save_results(document, options.json)
            if exit_status is not None:
                print(f"harness.launch results: {path}", flush=True)
        if options.report and exit_status is not None:
            print(f"harness.launch HTML report: {write_html(document, options.report)}", flush=True)

    for index, spec in enumerate(cases):
        known = match_deviation(deviations, sut, spec.id, options.compile, built_on=base_sut)
        if known is not None and known.aborts:  # every rank decides alike: same file, same id
            aborting += 1
            skipped_here.add(spec.id)
            if ctx.rank == 0:
                print(f"[SKIPPED] {spec.id}: known deviation that kills a rank's process ({known.link}); under "
                      f"torchrun that ends the job, run it through the pool: {rerun_command(spec.id, options)}",
                      flush=True)
            continue
        if ctx.rank == 0:
            print(f"[ RUN   ] {spec.id}", flush=True)  # names the case if a rank takes the job down
        start = time.monotonic()
        kind = kind_of(spec)
        plan = kind.plan(spec)
        actual = _run_rank(ctx, kind, spec, plan, options)
        release.settle(index, actual)  # a rank that declared unsupported: its peers released, the groups renewed
        gathered: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
        dist.gather_object(actual, gathered, dst=0)
        if ctx.rank != 0:
            continue
        result = _judge(kind, spec, plan, gathered)
        result.rerun = rerun_command(spec.id, options, torchrun_world_size=ctx.world_size)
        result.duration_s = time.monotonic() - start
        result.failures.extend(strict_failures(result, options))
        if result.unsupported and not result.failures:
            status = "unsupported"
        elif result.compile_failed and not (known and known.of_the_compiler):
            status = "compile_failed"
        elif known:
            status = known.outcome(result)
        else:
            status = "passed" if result.passed else "failed"
        if status == "failed":
            result.known_defect = known_defect(deviations, sut, result, options.compile)
        counts[status] += 1
        print(f"[{status.upper():7}] {spec.id} ({result.duration_s:.2f}s)", flush=True)
        if status in ("failed", "compile_failed"):
            print(result.report(), flush=True)
        elif status == "xpassed":
            print(f"  known deviation ({known.link}) no longer reproduces: update harness/known_deviations.toml",
                  flush=True)
        records.append(case_record(spec, result, outcome=status, backend=ctx.backend, sut=sut,
                                   xfail_reason=f"{known.reason} ({known.link})" if known and status != "passed"
                                   else ""))
        write_results(None)
    failed = sum(counts[name] for name in FAILING)
    if ctx.rank == 0:
        tally = ", ".join(f"{counts[o.name]} {o.label}" for o in OUTCOMES if o.name != "skipped")
        nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))  # torchrun's agents, one per node
        where = f"{nodes} nodes, " if nodes > 1 else ""
        summary = (f"harness.launch: world size {ctx.world_size} ({where}{ctx.backend}, {ctx.device}), sut {sut}: "
                   f"{tally}, {skipped} cases of other world sizes skipped, {aborting} process-killing known "
                   f"deviations skipped, {time.monotonic() - start_all:.1f}s")
        print(summary, flush=True)
        if options.json or options.report:
            write_results(EXIT_FAILED if failed else EXIT_OK)
    # Every rank exits with rank 0's verdict.
    verdict = [failed if ctx.rank == 0 else 0]
    dist.broadcast_object_list(verdict, src=0)
    return int(verdict[0])


def _torchrun_size(torchrun_args: list[str]) -> int | None:
    """The world size torchrun's arguments ask for (nproc per node x nodes), or None when it is not fixed there
    (an elastic range of nodes, 'auto' or 'gpu' processes)."""
    values: dict[str, str] = {}
    for i, arg in enumerate(torchrun_args):
        name, eq, value = arg.partition("=")
        key = name.lstrip("-").replace("_", "-")
        if key in ("nproc-per-node", "nnodes"):
            values[key] = value if eq else (torchrun_args[i + 1] if i + 1 < len(torchrun_args) else "")
    nproc, nodes = values.get("nproc-per-node", "1"), values.get("nnodes", "1")
    return int(nproc) * int(nodes) if nproc.isdigit() and nodes.isdigit() else None


def torchrun_command(argv: list[str]) -> int:
    """``python -m harness torchrun [TORCHRUN OPTIONS] -- [HARNESS OPTIONS]``: check the harness options before
    any process starts (a usage error is one line and exit 2, like the other commands), run ``torchrun ... -m
    harness.launch`` with them, and exit with the launcher's own code (0 passed, 1 failed, 2 usage, 3 incomplete),
    which torchrun alone turns into 1 for any failing child."""
    import subprocess
    import tempfile

    from .errors import CaseError
    from .kinds import case_for_id
    from .options import EXIT_FAILED, EXIT_USAGE, resolve
    from .sut import check_kernels, check_sut

    torchrun_args, harness_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    try:
        args = build_parser().parse_args(harness_args)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        options = resolve(vars(args))
        check_sut(options.sut, option=options.spelled("sut"))
        if options.kernels:
            check_kernels(options.kernels, option=options.spelled("kernels"))
        size = _torchrun_size(torchrun_args)
        if options.case:
            spec = case_for_id(options.case)
            if size is not None and spec.world_size != size:
                raise CaseError(f"--case {options.case!r} has world size {spec.world_size}, but the torchrun options "
                                f"start {size} processes: use --nproc-per-node/--nnodes for {spec.world_size}")
    except CaseError as exc:
        print(f"python -m harness torchrun: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="syncbn-torchrun-") as tmp:
        status = os.path.join(tmp, "status")
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *torchrun_args, "-m", "harness.launch",
                               *harness_args], env={**os.environ, STATUS_ENV: status})
        if os.path.exists(status):
            with open(status, encoding="utf-8") as handle:
                return int(handle.read().strip() or EXIT_FAILED)
        return EXIT_FAILED if done.returncode else 0  # no launcher verdict: this node's rank 0 is elsewhere


if __name__ == "__main__":
    sys.exit(main())
