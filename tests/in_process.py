"""Running the harness's commands inside the test process, where they start no suite run."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess


def run_here(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m harness ARGS`` run in this process (harness.cli.main): for commands that start no suite run
    (usage errors, the gate's --results-in, report), which then cost milliseconds instead of a new interpreter
    importing torch. Returns what subprocess.run would: returncode, stdout, stderr."""
    from harness import cli

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        finally:
            os.chdir(cwd)
    return subprocess.CompletedProcess(["python", "-m", "harness", *args], code, out.getvalue(), err.getvalue())
