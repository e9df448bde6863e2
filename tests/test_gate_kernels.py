"""The kernel author's gate (docs/gpu.md, "Gating a kernel change on a GPU"), rehearsed on CPU: record a baseline
with ``--kernels K`` on "main", then gate the "branch", where K is a changed file, with the same command line.

K on main is a faithful substitute (batch_norm_elemt = the harness's own kernel). On the branch K scales the output
by (1 + 4e-7): a few float32 ulps, inside every tolerance (the floor allows 16 u x scale, about 1e-6 relative), so
the suite alone passes the case; only the gate sees the error grow. The same faithful K on the branch passes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASE = "w2_n3.2_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
pytestmark = pytest.mark.processes  # every test here starts subprocesses
FAITHFUL = '''
from harness import cpu_kernels


def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
    return cpu_kernels.batch_norm_elemt(input, weight, bias, mean, invstd, eps)
'''
GROWN = '''
from harness import cpu_kernels


def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
    out = cpu_kernels.batch_norm_elemt(input, weight, bias, mean, invstd, eps)
    return (out.double() * (1 + 4e-7)).to(out.dtype)
'''


def gate(kernels: Path, baseline: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # "-m 'not property'": --case does not deselect the hypothesis test, whose examples are not this case. No
    # bytecode: K is rewritten in place between runs, as a checkout of another branch would. Run from the kernel
    # author's folder (the test's), where the main job's default report lands, as it would in their checkout.
    return subprocess.run([sys.executable, "-m", "harness", "gate", "--baseline", str(baseline), "--kernels",
                           str(kernels), "--case", CASE, *args, "--", "-m", "not property"],
                          cwd=kernels.parent, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)})


def test_kernel_author_flow(tmp_path: Path) -> None:
    kernels, baseline, results = tmp_path / "my_kernels.py", tmp_path / "main.json", tmp_path / "results.json"

    # main: record the baseline with the kernel module as it is there.
    kernels.write_text(FAITHFUL)
    done = gate(kernels, baseline, "--update-baseline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    entry = json.loads(baseline.read_text())["environments"]["cpu/gloo"]
    assert list(entry["cases"]) == [CASE] and entry["cases"][CASE]["outcome"] == "passed"
    assert entry["recorded"]["kernels"] == str(kernels)

    # the branch: same file name, the error of batch_norm_elemt grew, still within every tolerance.
    kernels.write_text(GROWN)
    done = gate(kernels, baseline, "--json", str(results))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAIL growth" in done.stdout and "/output/" in done.stdout, done.stdout[-3000:]
    assert "FAIL failure" not in done.stdout and "gate: FAILED" in done.stdout
    document = json.loads(results.read_text())
    (case,) = document["cases"]
    assert case["outcome"] == "passed"  # every comparison within its tolerance: only the gate sees it
    assert document["environment"]["kernels"] == str(kernels)
    assert document["environment"]["tf32"]["cudnn_conv"] in ("ieee", False)  # harness.tf32: off in the controller

    # the branch with a faithful kernel: no regression.
    kernels.write_text(FAITHFUL)
    done = gate(kernels, baseline)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gate: PASSED" in done.stdout
