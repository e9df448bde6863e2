"""--device without a GPU, and the backend rule: what a CPU machine can check of the CUDA path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.errors import HarnessError
from harness.pool import resolve_backend

ROOT = Path(__file__).resolve().parent.parent
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens on a machine without CUDA")


@NO_CUDA
def test_main_job_refuses_cuda_without_a_gpu(capsys, monkeypatch):
    monkeypatch.delenv("SYNCBN_DEVICE", raising=False)
    assert main(["run", "--device", "cuda", "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: torch.cuda.is_available() is False" in err and "--device auto" in err


@NO_CUDA
def test_main_job_refuses_cuda_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("SYNCBN_DEVICE", "cuda")
    assert main(["run", "--profile", "quick"]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


@NO_CUDA
@pytest.mark.processes
def test_pytest_skips_cuda_cases_with_the_reason():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "cases/test_catalogue.py", "-k", "dtypes", "--device", "cuda",
         "--profile", "quick", "-p", "no:cacheprovider", "-q", "-rs"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
    assert "needs CUDA: torch.cuda.is_available() is False on this machine" in proc.stdout
    assert "_cuda_ac" in subprocess.run(  # the autocast cases exist only with --device cuda
        [sys.executable, "-m", "pytest", "cases/test_catalogue.py", "-k", "dtypes", "--device", "cuda",
         "--profile", "quick", "-p", "no:cacheprovider", "-q", "--collect-only"], cwd=ROOT, capture_output=True,
        text=True, timeout=300).stdout


@pytest.mark.parametrize(("device", "gpus", "world", "backend", "expected"), [
    ("cpu", 8, 4, None, "gloo"),
    ("cuda", 0, 1, None, "gloo"),      # no GPU visible: never NCCL
    ("cuda", 1, 1, None, "nccl"),
    ("cuda", 1, 2, None, "gloo"),      # two ranks on one GPU: NCCL refuses duplicate GPUs
    ("cuda", 4, 4, None, "nccl"),
    ("cuda", 4, 8, None, "gloo"),
    ("cuda", 8, 3, "auto", "nccl"),
    ("cuda", 1, 4, "nccl", "nccl"),    # forced
    ("cpu", 0, 2, "gloo", "gloo"),
])
def test_backend_rule(monkeypatch, device, gpus, world, backend, expected):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_backend(device, world, backend) == expected


def test_backend_rejects_unknown():
    with pytest.raises(HarnessError, match="backend='mpi': must be 'gloo', 'nccl' or 'auto'"):
        resolve_backend("cpu", 2, "mpi")


@NO_CUDA
@pytest.mark.parametrize("case_id", [
    "w2_n4.3_c3_nchw3x4_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cuda_ac",
    "op-batch-norm-stats_n3.2_c4_ncl5_f16_contig_aff_e1e-05_m0.1_loc0_sd1_s0_cuda",
    "model_w2_n4.4_k3_float32_m0.1_s0_cuda",
])
def test_main_job_refuses_a_cuda_case_without_a_gpu(capsys, monkeypatch, case_id):
    monkeypatch.delenv("SYNCBN_DEVICE", raising=False)
    assert main(["run", "--case", case_id]) == 2
    assert f"--case {case_id} (a CUDA case): torch.cuda.is_available() is False" in capsys.readouterr().err
