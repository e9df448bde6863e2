"""Running the conformance suite through pytest for a command (``python -m harness run``, ``gate``): the pytest
command line of resolved Options, and pytest's exit status in the harness's exit codes."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from .options import (EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, OPTIONS, Options, add_argparse_options,
                      resolve)

__all__ = ["ROOT", "add_suite_arguments", "resolve_suite_options", "pytest_argv", "run_suite",
           "exit_code_from_pytest", "missing_cuda"]

ROOT = Path(__file__).resolve().parent.parent


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs the suite shares (harness.options), plus -n and extra pytest args."""
    add_argparse_options(parser)
    parser.add_argument("-n", "--workers", default=None, help="pytest-xdist workers (e.g. 2 or auto)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")


def resolve_suite_options(args: argparse.Namespace) -> Options:
    """The resolved Options of a command's parsed arguments (the main job's defaults)."""
    return resolve(vars(args), main_job=True)


def pytest_argv(options: Options, *, workers: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The pytest command line that runs the suite (cases/) with ``options``."""
    argv = [str(ROOT / "cases"), "-p", "no:cacheprovider", "-q", "--rootdir", str(ROOT)]
    for opt in OPTIONS:
        value = getattr(options, opt.name)
        if value is None or value is False or (value == opt.default and opt.name != "device"):
            continue
        if opt.name in ("json", "report"):
            value = os.path.abspath(value)
        argv += [opt.pytest_name] if opt.flag_only else [opt.pytest_name, str(value)]
    if workers:
        argv += ["-n", str(workers)]
    return argv + list(extra)


def exit_code_from_pytest(code: int) -> int:
    """pytest 0 -> 0; 1 (tests failed) -> 1; 2 (interrupted) -> 3 (incomplete); usage, internal error or no tests
    collected -> 2."""
    return {0: EXIT_OK, 1: EXIT_FAILED, 2: EXIT_INCOMPLETE}.get(int(code), EXIT_USAGE)


def run_suite(argv: list[str]) -> int:
    import pytest

    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return exit_code_from_pytest(pytest.main(argv))


def missing_cuda(options: Options) -> str | None:
    """Why the run cannot use CUDA here, or None. The main job refuses rather than skipping every case: a CI job
    that asked for the GPU suite must not pass on a machine without one (plain pytest skips, with the reason)."""
    device, what = options.device, "--device cuda"
    if options.case:
        from .kinds import parse_case_id

        if parse_case_id(options.case).device == "cuda":
            device, what = "cuda", f"--case {options.case} (a CUDA case)"
    if device != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (f"{what}: torch.cuda.is_available() is False on this machine (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); use --device cpu, or --device auto to take the GPU when there is one")
