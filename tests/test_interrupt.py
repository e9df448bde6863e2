"""No false green: a real `python -m harness run` interrupted (Ctrl-C to its process group, or SIGTERM to the
controller) writes its results and report marked incomplete, exits 3, and the gate will not judge it."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from in_process import run_here

pytestmark = pytest.mark.processes  # every test here starts rank pools or subprocesses

ROOT = Path(__file__).resolve().parent.parent
CASES_BEFORE_INTERRUPT = 10


def _progress(output: bytes) -> int:
    """How many tests pytest -q reported done so far (its progress characters)."""
    return sum(len(m) for m in re.findall(rb"^[.sxXFE]+", output, re.M))


def _interrupted_run(tmp_path: Path, how: str, *extra: str) -> tuple[int, str, dict, str, Path]:
    """Start the quick profile, wait until some cases passed, interrupt it; (exit code, output, results, HTML,
    TMPDIR of the run)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out, report = tmp_path / "results.json", tmp_path / "report.html"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--profile", "quick", "--json", str(out),
                             "--report", str(report), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmpdir)},
                            start_new_session=True)
    output = b""
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        deadline = time.monotonic() + 240
        while _progress(output) < CASES_BEFORE_INTERRUPT:
            assert proc.poll() is None, output.decode()[-3000:]
            assert time.monotonic() < deadline, output.decode()[-3000:]
            output += proc.stdout.read() or b""
            time.sleep(0.1)
        if how == "SIGINT":  # Ctrl-C: the whole foreground process group gets it, rank processes included
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=120)
        os.set_blocking(proc.stdout.fileno(), True)
        output += proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, output.decode(), json.loads(out.read_text()), report.read_text(), tmpdir


@pytest.mark.slow
# Ctrl-C and SIGTERM without xdist; with xdist SIGTERM (what a CI runner sends), whose path Ctrl-C shares.
@pytest.mark.parametrize("how, extra", [("SIGINT", ()), ("SIGTERM", ()), ("SIGTERM", ("-n", "2"))],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-xdist"])
def test_interrupted_run_is_incomplete_never_passed(tmp_path, how, extra):
    code, output, document, html, tmpdir = _interrupted_run(tmp_path, how, *extra)
    assert code == 3, output[-3000:]
    assert document["status"] == "incomplete" and document["exit_status"] == 3  # the harness's exit code
    info = document["incomplete"]
    assert info["cases_run"] >= CASES_BEFORE_INTERRUPT and info["not_run"], info
    assert info["cases_run"] + len(info["not_run"]) == info["cases_selected"]
    assert info["reason"] == ("terminated (SIGTERM)" if how == "SIGTERM" else "interrupted (Ctrl-C)")
    ran = {case["id"] for case in document["cases"]}
    assert not ran & set(info["not_run"])
    assert f"syncbn-harness: INCOMPLETE: {info['cases_run']} of {info['cases_selected']} selected tests ran" in output
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert "PASSED" not in html and "PASSED" not in title
    if "INCOMPLETE" in html:  # once harness.reports.html shows the status
        assert "INCOMPLETE" in title
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("syncbn-")]  # pools closed and removed

    if how != "SIGINT":
        return
    # The gate neither judges nor records it (its reading of a document does not depend on how the run ended).
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"schema": "syncbn-harness/baseline", "version": 2, "environments": {}}))
    why = f"{len(info['not_run'])} of {info['cases_selected']} selected tests did not run ({info['reason']})"
    for args, line in (([], f"gate: INCOMPLETE: not judged: {why}"),
                       (["--update-baseline"], f"gate: INCOMPLETE: not recording an incomplete run as the baseline: "
                                               f"{why}")):
        gate = run_here("gate", "--baseline", str(baseline), "--results-in", str(tmp_path / "results.json"), *args)
        assert (gate.returncode, gate.stdout.strip().splitlines()) == (3, [line]), gate.stdout + gate.stderr
    assert json.loads(baseline.read_text())["environments"] == {}


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "results.json"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--profile", "quick", "--json", str(out),
                           "--report", str(tmp_path / "report.html"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmpdir)})
    return done, json.loads(out.read_text())


def test_stopped_at_the_first_failure_is_failed_and_incomplete(tmp_path):
    """-x after a real failure: the run can never become green, so it exits 1 (a failure is the stronger verdict),
    and its documents still say how many cases did not run."""
    done, document = _run(tmp_path, "--sut", "harness.mutants:no_sync", "--area", "eps", "--", "-x")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    info = document["incomplete"]
    assert document["status"] == "incomplete" and info["reason"] == "stopped early: stopping after 1 failures"
    assert info["cases_run"] == 1 and len(info["not_run"]) == info["cases_selected"] - 1 > 0
    assert [c["outcome"] for c in document["cases"]] == ["failed"] and document["exit_status"] == 1
    assert "SyncBN conformance: FAILED (incomplete: 1 of " in done.stdout
    assert "syncbn-harness: FAILED, and the run did not complete: 1 of " in done.stdout


@pytest.mark.slow
def test_lost_worker_is_incomplete(tmp_path):
    faulty = Path(__file__).with_name("suts_faulty.py")
    done, document = _run(tmp_path, "--sut", f"{faulty}:kill_parent", "-n", "2", "--", "-k", "eps",
                          "--max-worker-restart", "0")
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    info = document["incomplete"]
    assert document["status"] == "incomplete" and "crashed while running" in info["reason"], info
    assert info["not_run"] and info["cases_run"] + len(info["not_run"]) == info["cases_selected"]
    # The lost worker's ranks are orphans: each notices within 0.5 s (harness.rank.worker._watch_parent), removes
    # the pool directory and exits, possibly just after the run has returned.
    deadline = time.monotonic() + 15
    while (left := [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("syncbn-")]) and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left
