"""``python -m harness COMMAND``: run (the conformance suite), gate (regression gate), selftest (bug-catching rate),
report (the summary of a results document).

Exit codes everywhere: 0 all passed, 1 a case failed (or a regression), 2 usage error, 3 the run did not complete.
The options are harness.options' table; the commands live in their own modules (harness.suite for run,
harness.reports.gate, harness.selftest), this module only wires them. ``run`` checks what it can before pytest starts
(harness.suite.preflight): a problem is one line on stderr, ``python -m harness run: <option>=<value>: <rule>``
(followed by the SUT's own traceback when importing it raised), and exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .errors import CaseError
from .options import EXIT_USAGE
from .suite import add_suite_arguments, preflight, resolve_suite_options, run_suite

__all__ = ["main", "build_parser", "console"]


def _run(args: argparse.Namespace) -> int:
    try:
        options = resolve_suite_options(args)
        preflight(options, main_job=True)
    except CaseError as exc:
        print(f"python -m harness run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_suite(options, workers=args.workers, extra=args.pytest_args)


def _torchrun(arguments: list[str]) -> int:
    from .launch import torchrun_command

    return torchrun_command(arguments)


def build_parser() -> argparse.ArgumentParser:
    from harness.reports import gate, summary

    from . import selftest

    prog = "syncbn-harness" if os.path.basename(sys.argv[0]) == "syncbn-harness" else "python -m harness"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the conformance suite against an implementation (default: torch)")
    add_suite_arguments(run)
    run.set_defaults(handler=_run)
    torchrun = commands.add_parser("torchrun", help="run the module cases under torchrun with true exit codes: "
                                   "python -m harness torchrun [TORCHRUN OPTIONS] -- [HARNESS OPTIONS]",
                                   add_help=False, prefix_chars="\0")
    torchrun.add_argument("arguments", nargs=argparse.REMAINDER)
    torchrun.set_defaults(handler=lambda args: _torchrun(args.arguments))
    for name, module, help_text in (
            ("gate", gate, "compare a run with a stored known-good baseline (kernel changes)"),
            ("selftest", selftest, "run the suite against deliberately broken SyncBNs; print the catch rate"),
            ("report", summary, "summarise a results document (--json of any run, a GPU run's too) and write its "
                                "HTML report")):
        sub = commands.add_parser(name, help=help_text, description=module.__doc__.splitlines()[0])
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


def console() -> int:
    """The ``syncbn-harness`` command (pyproject.toml): ``python -m harness``, the current directory importable
    as ``python -m`` makes it (a ``--sut package.module:factory`` of the project the command runs in)."""
    sys.path.insert(0, os.getcwd())
    return main()
