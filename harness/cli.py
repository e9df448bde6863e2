"""``python -m harness COMMAND``: run (the conformance suite), gate (regression gate), selftest (bug-catching rate).

Exit codes everywhere: 0 all passed, 1 a case failed (or a regression), 2 usage error.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Callable

__all__ = ["main", "build_parser", "pytest_args", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ROOT = Path(__file__).resolve().parent.parent

# Subcommands living in other modules: name -> "module" exposing add_arguments(parser) and main(args) -> int.
_EXTERNAL = {
    "gate": ("reports.gate", "compare a run with a stored known-good baseline (kernel changes)"),
    "selftest": ("harness.selftest", "run the suite against deliberately broken SyncBNs; print the catch rate"),
}


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs the suite shares (same names as the pytest options)."""
    parser.add_argument("--sut", default=None, help="implementation under test: 'torch' (default), "
                        "'package.module:factory' or 'path/to/file.py:factory' [env SYNCBN_SUT]")
    parser.add_argument("--kernels", default=None, help="module providing substitutes for any of the five ops")
    parser.add_argument("--profile", default=None, choices=("quick", "default", "thorough"),
                        help="case profile [env SYNCBN_PROFILE; default: default]")
    parser.add_argument("--case", default=None, help="run exactly this case id (from a failure's rerun line)")
    parser.add_argument("--case-timeout", type=float, default=None, help="seconds before a case's ranks count "
                        "as hung (default 60)")
    parser.add_argument("--backend", default=None, choices=("auto", "gloo", "nccl"), help="process-group backend")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"),
                        help="cpu (default), cuda or auto (cuda when available) [env SYNCBN_DEVICE]")
    parser.add_argument("-n", "--workers", default=None, help="pytest-xdist workers (e.g. 2 or auto)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the structured results here")
    parser.add_argument("--report", default=None, metavar="PATH",
                        help="write the HTML report here (default: syncbn-report.html)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")


def pytest_args(args: argparse.Namespace) -> list[str]:
    """The pytest command line equivalent to the parsed suite options."""
    argv = [str(ROOT / "cases"), "-p", "no:cacheprovider", "-q", "--rootdir", str(ROOT)]
    for option in ("sut", "kernels", "profile", "case", "case_timeout", "backend", "device", "json", "report"):
        value = getattr(args, option, None)
        if value is not None:
            name = {"json": "--json-results", "report": "--html-report"}.get(option, "--" + option.replace("_", "-"))
            argv += [name, str(value)]
    if getattr(args, "workers", None):
        argv += ["-n", str(args.workers)]
    return argv + list(getattr(args, "pytest_args", []) or [])


def exit_code_from_pytest(code: int) -> int:
    """pytest 0 -> 0; 1 (tests failed) -> 1; interrupted, internal or usage error, no tests collected -> 2."""
    return {0: EXIT_OK, 1: EXIT_FAILED}.get(int(code), EXIT_USAGE)


def run_suite(argv: list[str]) -> int:
    import pytest

    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return exit_code_from_pytest(pytest.main(argv))


def _case_device(case_id: str) -> str | None:
    """The device a --case id names (module, op or model case), None when the id does not parse."""
    from .errors import CaseError
    from .spec import parse_any_id

    try:
        return parse_any_id(case_id).device
    except CaseError:
        return "cuda" if case_id.startswith("model_") and case_id.endswith("_cuda") else None


def _missing_cuda(args: argparse.Namespace) -> str | None:
    """Why ``--device cuda`` cannot run here, or None. The main job refuses rather than skipping every case: a CI
    job that asked for the GPU suite must not pass on a machine without one (plain pytest skips, with the reason)."""
    device = args.device or os.environ.get("SYNCBN_DEVICE") or "cpu"
    what = "--device cuda"
    if args.case and _case_device(args.case) == "cuda":
        device, what = "cuda", f"--case {args.case} (a CUDA case)"
    if device != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (f"{what}: torch.cuda.is_available() is False on this machine (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); use --device cpu, or --device auto to take the GPU when there is one")


def _run(args: argparse.Namespace) -> int:
    problem = _missing_cuda(args)
    if problem:
        print(f"python -m harness run: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.report is None:
        args.report = "syncbn-report.html"
    args.report = os.path.abspath(args.report)
    if args.json is not None:
        args.json = os.path.abspath(args.json)
    return run_suite(pytest_args(args))  # the reports plugin prints the report's path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the conformance suite against an implementation (default: torch)")
    add_suite_arguments(run)
    run.set_defaults(handler=_run)
    for name, (module_name, help_text) in _EXTERNAL.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        sub = commands.add_parser(name, help=help_text)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error, 0 for --help
        return int(exc.code or 0)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
