"""The conformance cases under torchrun: every torchrun process is one rank, no harness pool.

    torchrun --nproc-per-node=N [--nnodes=M ...] -m harness.launch [--profile P] [--sut SPEC] [--kernels SPEC]
             [--device cpu|cuda|auto] [--json PATH] [--report PATH] [--case ID] [--case-timeout S]

Which cases run: the module cases of the profile (on ``--device``, as with ``pytest --device``) whose world size
equals torchrun's world size W; every other case is counted as skipped. Shards are never remapped onto another
world size: a case's shard sizes are part of what it tests (empty ranks, one rank holding everything), so a
remapped case would be a different case under the same id. A ``--case`` whose world size is not W is a usage
error (exit 2). Process groups of a case (``g...``) are created from the torchrun group, collectively.

A known deviation marked ``aborts`` (it kills a rank's process) is skipped and counted: under torchrun one dead
process ends the job, where the pytest pools restart the rank and report the case. Rank 0 prints ``[ RUN   ] id``
before each case and rewrites the results document after each one (``exit_status`` null until the end), so a job
that dies anyway names the case and keeps the results so far.

Lockstep: for each case every rank runs harness.rank_case.run_module_case (the same code the pools run), the
results are gathered on rank 0 (dist.gather_object), rank 0 computes the expected values
(harness.expected.expected_module_case) and compares them with harness.runner.compare_case. Cases listed in
cases/known_deviations.toml for the SUT count as expected failures; one that passes counts as a failure (strict,
like the pytest suite). Rank 0 prints one line per case and a summary, writes the results document and the HTML
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
import traceback
from datetime import timedelta
from typing import Any

from .rank_worker import RankContext

__all__ = ["main", "select_cases", "TorchrunContext"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class TorchrunContext(RankContext):
    """A RankContext for a torchrun process: the GPU is chosen by the local rank, not the global one."""

    local_rank: int = 0

    def device_for_rank(self) -> str:
        if self.device != "cuda":
            return "cpu"
        import torch

        return f"cuda:{self.local_rank % max(1, torch.cuda.device_count())}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchrun ... -m harness.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=("quick", "default", "thorough"))
    parser.add_argument("--sut", default=None, help="implementation under test (default torch) [env SYNCBN_SUT]")
    parser.add_argument("--kernels", default=None, help="module providing substitutes for any of the five ops")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"),
                        help="cpu (default), cuda or auto [env SYNCBN_DEVICE]")
    parser.add_argument("--case", default=None, help="run exactly this case id (its world size must be W)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="rank 0 writes the results here (the versioned document of reports/results.py)")
    parser.add_argument("--report", default=None, metavar="PATH", help="rank 0 writes the HTML report here")
    parser.add_argument("--case-timeout", type=float, default=120.0,
                        help="collective timeout in seconds (a hung rank ends the run with an error)")
    return parser


def _device(choice: str | None) -> str:
    device = choice or os.environ.get("SYNCBN_DEVICE") or "cpu"
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


def select_cases(profile: str, device: str, world_size: int, case_id: str | None):
    """(cases to run, number skipped): the profile's module cases of world size ``world_size``, or ``case_id``."""
    from cases import catalogue

    from .errors import CaseError
    from .spec import CaseSpec

    if case_id:
        spec = CaseSpec.from_id(case_id)
        if spec.world_size != world_size:
            raise CaseError(f"--case {case_id!r} has world size {spec.world_size}, but torchrun started "
                            f"{world_size} processes: use --nproc-per-node/--nnodes for {spec.world_size}")
        return [spec], 0
    cases = catalogue.device_cases(profile, None, device)
    chosen = [c for c in cases if c.world_size == world_size]
    return chosen, len(cases) - len(chosen)


def _run_rank(ctx: RankContext, spec, sut: str, kernels: str | None) -> dict[str, Any]:
    from .rank_case import run_module_case

    try:
        return run_module_case(ctx, spec=spec.to_dict(), sut=sut, kernels=kernels)
    except Exception as exc:  # noqa: BLE001 - a harness-side error in this rank, reported by rank 0
        return {"phases": [], "error": {"phase": "setup", "stage": "harness", "type": type(exc).__name__,
                                        "message": str(exc), "traceback": traceback.format_exc()}}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    import torch.distributed as dist

    from .errors import CaseError
    from .pool import resolve_backend
    from .sut import DEFAULT_SUT, load_factory

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    sut = args.sut or os.environ.get("SYNCBN_SUT") or DEFAULT_SUT
    device = _device(args.device)
    try:
        if device == "cuda" and not torch.cuda.is_available():
            raise CaseError("--device cuda: torch.cuda.is_available() is False")
        load_factory(sut)
        cases, skipped = select_cases(args.profile, device, world_size, args.case)
    except CaseError as exc:
        print(f"harness.launch: usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if os.path.isdir("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    backend = resolve_backend(device, local_world)
    if device == "cuda":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend, timeout=timedelta(seconds=args.case_timeout))
    ctx = TorchrunContext(rank=rank, world_size=world_size, device=device, backend=backend)
    ctx.local_rank = local_rank
    try:
        failed = _run_cases(ctx, cases, skipped, sut, args)
    finally:
        dist.destroy_process_group()
    return EXIT_FAILED if failed else EXIT_OK


def _run_cases(ctx: RankContext, cases, skipped: int, sut: str, args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from reports.html import write_html
    from reports.results import build_document, case_record, environment, save_results

    from .expected import expected_module_case
    from .pytest_plugin import load_known_deviations
    from .runner import CaseResult, compare_case

    deviations = load_known_deviations()
    records: list[dict[str, Any]] = []
    counts = {"passed": 0, "failed": 0, "xfailed": 0, "xpassed": 0, "aborting": 0}
    start_all = time.monotonic()

    def write_results(exit_status: int | None) -> None:
        """Rank 0, after every case (exit_status None: in progress) and at the end: a job that dies keeps what
        it had."""
        env = environment(sut=sut, kernels=args.kernels, profile=args.profile, backend=ctx.backend,
                          case=args.case, cases=records, workers=ctx.world_size)
        document = build_document(records, env, exit_status=exit_status)
        if args.json:
            path = save_results(document, args.json)
            if exit_status is not None:
                print(f"harness.launch results: {path}", flush=True)
        if args.report and exit_status is not None:
            print(f"harness.launch HTML report: {write_html(document, args.report)}", flush=True)

    for spec in cases:
        known = next((d for d in deviations if d.matches(sut, spec.id)), None)
        if known is not None and known.aborts:  # every rank decides alike: same file, same id
            counts["aborting"] += 1
            if ctx.rank == 0:
                print(f"[SKIPPED] {spec.id}: known deviation that kills a rank's process ({known.link}); under "
                      f"torchrun that ends the job, run it through the pytest suite (python -m harness run --case "
                      f"{spec.id})", flush=True)
            continue
        if ctx.rank == 0:
            print(f"[ RUN   ] {spec.id}", flush=True)  # names the case if a rank takes the job down
        start = time.monotonic()
        actual = _run_rank(ctx, spec, sut, args.kernels)
        gathered: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
        dist.gather_object(actual, gathered, dst=0)
        if ctx.rank != 0:
            continue
        result = compare_case(spec, expected_module_case(spec), gathered, CaseResult(spec))
        result.rerun = (f"torchrun --nproc-per-node={ctx.world_size} -m harness.launch --case {spec.id}"
                        + (f" --sut {sut}" if sut != "torch" else ""))
        result.duration_s = time.monotonic() - start
        status = ("xpassed" if result.passed else "xfailed") if known else ("passed" if result.passed else "failed")
        counts[status] += 1
        print(f"[{status.upper():7}] {spec.id} ({result.duration_s:.2f}s)", flush=True)
        if status == "failed":
            print(result.report(), flush=True)
        elif status == "xpassed":
            print(f"  known deviation ({known.link}) no longer reproduces: update cases/known_deviations.toml",
                  flush=True)
        records.append(case_record(spec, result, outcome=status, backend=ctx.backend,
                                   xfail_reason=f"{known.reason} ({known.link})" if known else ""))
        write_results(None)
    failed = counts["failed"] + counts["xpassed"]
    if ctx.rank == 0:
        summary = (f"harness.launch: world size {ctx.world_size} ({ctx.backend}, {ctx.device}), sut {sut}: "
                   f"{counts['passed']} passed, {counts['failed']} failed, {counts['xfailed']} known deviations, "
                   f"{counts['xpassed']} known deviations passing, {skipped} cases of other world sizes skipped, "
                   f"{counts['aborting']} process-killing known deviations skipped, "
                   f"{time.monotonic() - start_all:.1f}s")
        print(summary, flush=True)
        if args.json or args.report:
            write_results(EXIT_FAILED if failed else EXIT_OK)
    # Every rank exits with rank 0's verdict.
    verdict = [failed if ctx.rank == 0 else 0]
    dist.broadcast_object_list(verdict, src=0)
    return int(verdict[0])


if __name__ == "__main__":
    sys.exit(main())
