"""harness.launch under torchrun: two CPU processes over gloo run the quick profile's world-size-2 cases."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from in_process import run_here
from harness.reports.results import load_results

pytestmark = pytest.mark.processes  # every test here starts torchrun

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
BROKEN_SUT = '''
import torch


def factory(num_features, *, eps, momentum, affine, track_running_stats, process_group, device, dtype):
    """Plain local BatchNorm: no synchronisation at all."""
    class LocalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input):
            pass

    return LocalBatchNorm(num_features, eps=eps, momentum=momentum, affine=affine,
                          track_running_stats=track_running_stats).to(device=device, dtype=dtype)
'''


def _torchrun(tmp: Path, *args: str, timeout: float = 240.0, nproc: int = 2) -> subprocess.CompletedProcess:
    """torchrun with TMPDIR in ``tmp``: its torchelastic_* directories stay out of the shared temporary directory."""
    if not TORCHRUN.exists():
        pytest.skip(f"no torchrun next to {sys.executable}")
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    env.pop("SYNCBN_SUT", None)
    return subprocess.run([str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", "-m", "harness.launch", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_torch_sut_passes(tmp_path: Path) -> None:
    out, report = tmp_path / "launch.json", tmp_path / "launch.html"
    proc = _torchrun(tmp_path, "--profile", "quick", "--area", "dtypes,shards,errors", "--json", str(out), "--report",
                     str(report))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = load_results(out)  # the same versioned document as a pytest run: the gate can read it
    assert results["environment"]["backends"] == ["gloo"] and results["environment"]["world_sizes"] == [2]
    outcomes = results["summary"]["outcomes"]
    assert outcomes["passed"] > 10 and "failed" not in outcomes and outcomes.get("xfailed", 0) >= 1
    assert all(case["id"].startswith("w2_") for case in results["cases"])
    assert all(case["comparisons"] for case in results["cases"] if case["outcome"] == "passed")
    assert "known deviations" in proc.stdout and "SyncBN conformance: PASSED" in report.read_text()


@pytest.mark.slow
def test_unsynchronised_sut_fails(tmp_path: Path) -> None:
    sut = tmp_path / "local_bn.py"
    sut.write_text(BROKEN_SUT)
    proc = _torchrun(tmp_path, "--profile", "quick", "--area", "shards", "--sut", f"{sut}:factory")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "[FAILED ]" in proc.stdout and "rerun: torchrun" in proc.stdout


def test_case_of_another_world_size_is_a_usage_error(tmp_path: Path) -> None:
    case = "w3_n3.3.3_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
    proc = _torchrun(tmp_path, "--case", case, timeout=120.0)
    assert proc.returncode != 0
    assert "world size 3" in proc.stderr


def test_process_killing_deviation_is_skipped_not_run(tmp_path: Path) -> None:
    # Half input with an empty shard aborts a gloo rank (harness/known_deviations.toml, aborts = true): under torchrun
    # that would end the job, so the launcher skips it and says so.
    case = "w2_n0.4_c3_nchw3x2_f16pf32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu"
    out = tmp_path / "launch.json"
    proc = _torchrun(tmp_path, "--case", case, "--json", str(out), timeout=120.0)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"[SKIPPED] {case}: known deviation that kills a rank's process" in proc.stdout
    assert "1 process-killing known deviations skipped" in proc.stdout and "[ RUN   ]" not in proc.stdout
    assert load_results(out)["cases"] == []


@pytest.mark.slow
@pytest.mark.parametrize(("case", "processes"), [("model_w2_n4.4_k3_float32_m0.1_s0_cpu", 2),
                                                 ("op-batch-norm-stats_n3.2_c4_ncl5_f32_contig_aff_e1e-05_m0.1_loc0_"
                                                  "sd1_s0_cpu", 1)])
def test_every_kind_of_id_runs_under_torchrun(tmp_path, case, processes):
    """A model id (DDP over the torchrun processes) and an op id (one process) run with --case too."""
    out = tmp_path / "launch.json"
    proc = _torchrun(tmp_path, "--case", case, "--json", str(out), timeout=180.0, nproc=processes)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (record,) = load_results(out)["cases"]
    assert record["id"] == case and record["outcome"] == "passed" and record["comparisons"]


def test_harness_torchrun_reports_the_launchers_own_exit_code(tmp_path):
    """torchrun turns any failing child into exit 1 (a usage error too); ``python -m harness torchrun`` checks the
    options before starting any process (one line, exit 2) and otherwise exits with the launcher's own code."""
    case = "w3_n3.3.3_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
    done = run_here("torchrun", "--standalone", "--nproc-per-node=2", "--", "--case", case)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"python -m harness torchrun: --case {case!r} has world size 3, but the torchrun options start 2 processes: "
        f"use --nproc-per-node/--nnodes for 3"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("SYNCBN_SUT", None)
    sut = tmp_path / "local_bn.py"
    sut.write_text(BROKEN_SUT)
    failed = subprocess.run([sys.executable, "-m", "harness", "torchrun", "--standalone", "--nproc-per-node=2", "--",
                             "--profile", "quick", "--area", "shards", "--sut", f"{sut}:factory"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert failed.returncode == 1 and "[FAILED ]" in failed.stdout, failed.stdout[-3000:] + failed.stderr[-3000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_run_a_world_size_4_case(tmp_path: Path) -> None:
    """The multi-node shape, on one machine: two torchrun agents (nodes 0 and 1) of two processes each meet at a
    c10d rendezvous on localhost and run one world-size-4 case. Global rank 0 alone judges, prints and writes the
    results; every agent exits 0."""
    if not TORCHRUN.exists():
        pytest.skip(f"no torchrun next to {sys.executable}")
    case = "w4_n0.4.0.3_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"  # empty ranks on both nodes
    out = tmp_path / "nodes.json"
    # Across hosts GLOO_SOCKET_IFNAME names the interface that reaches the others (docs/gpu.md); here: loopback.
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("SYNCBN_SUT", None)
    command = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
               f"localhost:{_free_port()}", "-m", "harness.launch", "--case", case, "--json", str(out)]
    agents = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    try:
        outputs = [agent.communicate(timeout=180) for agent in agents]
    finally:
        for agent in agents:
            agent.kill()
    assert [agent.returncode for agent in agents] == [0, 0], outputs
    judged = [stdout for stdout, _ in outputs if "harness.launch results:" in stdout]
    assert len(judged) == 1, outputs  # the agent of global rank 0, and only it
    assert f"[PASSED ] {case}" in judged[0] and "world size 4 (2 nodes, gloo, cpu)" in judged[0], judged[0]
    (record,) = load_results(out)["cases"]
    assert record["id"] == case and record["outcome"] == "passed" and record["world_size"] == 4
    assert load_results(out)["environment"]["world_sizes"] == [4]
