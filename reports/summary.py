"""``python -m harness report``: the summary of a results document, in the console and optionally as HTML.

    python -m harness report --results-in FILE [--report out.html]

Prints the verdict line, the diagnosis (what the failed cases share that the passing ones do not), the conformance
table by feature, the failed cases by severity with their root cause in a line each and their rerun commands
(harness.diagnosis.run_summary_lines); ``--report`` also writes the HTML report (harness.reports.html). Reads
versions 1 to 3. Exit codes as the main job's: 0 the document passed, 1 a case failed or no case was judged (every
case skipped or declared unsupported: nothing was tested, which the verdict line says with the reasons), 2 usage
error (an unreadable document, an unwritable --report), 3 the run was incomplete and nothing failed.
"""
from __future__ import annotations

import argparse
import sys

from harness.errors import CaseError
from harness.files import check_writable
from harness.options import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from harness.diagnosis import run_summary_lines
from harness.verdict import verdict_of

from .results import READABLE_VERSIONS, ResultsError, load_results

__all__ = ["add_arguments", "main", "exit_code"]

# A run that judged no case tested nothing: it fails (every case declared unsupported must not read as a pass).
_EXIT = {"PASSED": EXIT_OK, "FAILED": EXIT_FAILED, "INCOMPLETE": EXIT_INCOMPLETE, "NO CASES RAN": EXIT_FAILED}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-in", required=True, metavar="FILE",
                        help="the results document to summarise (from --json; version 1 or 2)")
    parser.add_argument("--report", default=None, metavar="PATH", help="also write the HTML report here")


def exit_code(document: dict) -> int:
    """0 passed, 1 failed or nothing tested, 3 incomplete."""
    return _EXIT[verdict_of(document)]


def main(args: argparse.Namespace) -> int:
    try:
        if args.report:
            check_writable("--report", args.report)
        document = load_results(args.results_in, versions=READABLE_VERSIONS)
    except (ResultsError, CaseError) as exc:
        print(f"python -m harness report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for line in run_summary_lines(document):
        print(line)
    if args.report:
        from .html import write_html

        print(f"HTML report: {write_html(document, args.report)}")
    return exit_code(document)
