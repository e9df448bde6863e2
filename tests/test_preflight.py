"""Everything checkable is checked before the first case (harness.suite.preflight): `python -m harness run` with a
bad input prints one line, "python -m harness run: <option>=<value>: <rule>", exits 2 in seconds and starts no
pytest; `pytest` itself turns the same problem into a usage error."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from in_process import run_here

ROOT = Path(__file__).resolve().parent.parent
FAULTY = os.path.join(os.path.dirname(__file__), "suts_faulty.py")
CASE = "w2_n3.2_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
PREFIX = "python -m harness run: "
RAISING_ON_IMPORT = '''import math


def _configure():
    raise RuntimeError("no accelerator configured for this SUT")


_configure()


def factory(num_features, **kwargs):
    return None
'''


def run(*args: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBN_")}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness", "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)
    return done, time.monotonic() - start


def refused(*args: str, here: bool = True) -> list[str]:
    """The stderr lines of a run that must be refused before pytest starts: ``python -m harness run`` in a new
    interpreter (``here=False``), or the same command in this process (tests/in_process.py: milliseconds)."""
    if here:
        start = time.monotonic()
        done, seconds = run_here("run", *args), 0.0
        seconds = time.monotonic() - start
    else:
        done, seconds = run(*args)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert seconds < 60, f"took {seconds:.0f} s"  # seconds (importing torch), not a suite's minutes
    assert done.stdout == "", done.stdout[-2000:]  # pytest never started
    lines = done.stderr.strip().splitlines()
    assert lines and lines[0].startswith(PREFIX), done.stderr
    return lines


@pytest.mark.skipif(dist.is_nccl_available(), reason="checks a torch without NCCL")
def test_backend_nccl_without_nccl():
    assert refused("--backend", "nccl", "--profile", "quick") == [
        f"{PREFIX}--backend='nccl': torch.distributed.is_nccl_available() is False in torch "
        f"{__import__('torch').__version__}; use --backend gloo or auto"]


@pytest.mark.skipif(not dist.is_nccl_available(), reason="checks a torch with NCCL")
def test_backend_nccl_on_cpu():
    assert refused("--backend", "nccl", "--device", "cpu", "--profile", "quick") == [
        f"{PREFIX}--backend='nccl': NCCL runs CUDA tensors only; use it with --device cuda, or use --backend gloo "
        f"or auto on CPU"]


@pytest.mark.parametrize("option", ["--json", "--report"])
def test_output_under_a_file(tmp_path, option):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = blocker / "sub" / "out.file"
    assert refused(option, str(path), "--profile", "quick") == [
        f"{PREFIX}{option}={str(path)!r}: {blocker} is a file, not a directory, so out.file cannot be written "
        f"under it"]


def test_output_that_is_a_directory(tmp_path):
    assert refused("--report", str(tmp_path), "--profile", "quick") == [
        f"{PREFIX}--report={str(tmp_path)!r}: is a directory; give a file path"]


@pytest.mark.processes
def test_sut_that_raises_on_import_shows_its_own_frames_only(tmp_path):
    sut = tmp_path / "my_sut.py"
    sut.write_text(RAISING_ON_IMPORT)
    lines = refused("--sut", f"{sut}:factory", "--case", CASE, here=False)  # the whole command, end to end
    assert lines[0] == (f"{PREFIX}--sut='{sut}:factory': importing {sut} raised RuntimeError: no accelerator "
                        f"configured for this SUT")
    files = [line for line in lines[1:] if line.lstrip().startswith("File ")]
    assert files == [f'  File "{sut}", line 8, in <module>', f'  File "{sut}", line 5, in _configure'], lines
    assert lines[-1] == "RuntimeError: no accelerator configured for this SUT"
    assert len(lines) <= 7 and "INTERNALERROR" not in "\n".join(lines)


def test_sut_with_a_syntax_error(tmp_path):
    sut = tmp_path / "broken.py"
    sut.write_text("def factory(num_features, **kwargs)\n    return 1\n")
    lines = refused("--sut", f"{sut}:factory", "--case", CASE)
    assert lines[0].startswith(f"{PREFIX}--sut='{sut}:factory': importing {sut} raised SyntaxError: ")
    assert f'File "{sut}", line 1' in "\n".join(lines) and len(lines) <= 8


def test_factory_returning_a_non_module():
    assert refused("--sut", f"{FAULTY}:returns_int", "--case", CASE) == [
        f"{PREFIX}--sut='{FAULTY}:returns_int': the factory returned int (5), not a torch.nn.Module; the contract is "
        f"factory(num_features, *, eps, momentum, affine, track_running_stats, process_group, device, dtype) -> "
        f"torch.nn.Module behaving like torch.nn.SyncBatchNorm (harness/sut.py)"]


@pytest.mark.parametrize("spec, rule", [("{dir}/no_such_file.py:factory", "file {dir}/no_such_file.py does not exist"),
                                        ("{faulty}:no_such_factory", "module '{faulty}' has no attribute "
                                                                      "'no_such_factory'")])
def test_sut_that_cannot_be_found(tmp_path, spec, rule):
    spec, rule = (x.format(dir=tmp_path, faulty=FAULTY) for x in (spec, rule))
    assert refused("--sut", spec, "--case", CASE) == [f"{PREFIX}--sut={spec!r}: {rule}"]


@pytest.mark.processes
def test_factory_that_needs_a_process_group_is_checked_in_the_ranks(tmp_path):
    """The controller cannot call it without a process group, so the ranks find the broken contract: one clear
    error per rank instead of "'int' object has no attribute 'weight'"."""
    out = tmp_path / "results.json"
    done, _ = run("--sut", f"{FAULTY}:raises_without_process_group", "--case", CASE, "--json", str(out),
                  "--report", str(tmp_path / "report.html"), "--", "-m", "not property")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0 raised TypeError at setup (construct): the factory returned int (5), not a torch.nn.Module; " \
           "the contract is factory(num_features" in done.stdout
    assert "has no attribute 'weight'" not in done.stdout


@pytest.mark.processes
def test_plain_pytest_reports_the_same_problem_as_a_usage_error(tmp_path):
    sut = tmp_path / "my_sut.py"
    sut.write_text(RAISING_ON_IMPORT)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "cases/test_catalogue.py", "-p", "no:cacheprovider",
                           "--sut", f"{sut}:factory", "--case", CASE], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert time.monotonic() - start < 60
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]  # pytest's usage error
    assert f"ERROR: --sut='{sut}:factory': importing {sut} raised RuntimeError" in done.stderr
    assert "INTERNALERROR" not in done.stdout + done.stderr
