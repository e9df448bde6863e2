"""scripts/gpu_check.sh rehearsed on CPU (DEVICE=cpu, quick profile): the one script a GPU session runs must not
spend its few minutes of device time on a plumbing bug."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes  # every test here starts rank pools or subprocesses

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_rehearsal_on_cpu(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"  # torchrun's torchelastic_* folders land here, not in the shared TMPDIR
    scratch.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "PROFILE": "quick", "SHAPES": "small", "AREA": "dtypes,ops",
           "COMPILE": "eager", "COMPILE_AREA": "ops", "OUT": str(out), "PYTHON": sys.executable,
           "TMPDIR": str(scratch)}
    env.pop("SYNCBN_SUT", None)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = proc.stdout.split("=== summary")[1]
    for step in ("suite", "torchrun", "errortable", "compiled"):
        assert f"{step:<12} ok" in summary, summary
    # The TF32 state each run recorded (harness/tf32.py switches it off in every process) and the revision.
    assert "gpu.json: TF32 matmul ieee, cudnn_conv ieee (fp32_precision API)" in summary, summary
    assert "torchrun.json: TF32 matmul ieee, cudnn_conv ieee" in summary, summary
    env_txt = (out / "env.txt").read_text()
    assert "tf32 (torch default, before the harness sets it):" in env_txt and "harness " in env_txt, env_txt
    document = json.loads((out / "gpu.json").read_text())
    assert document["summary"]["outcomes"].get("failed", 0) == 0 and document["summary"]["outcomes"]["passed"] > 20
    assert {case["kind"] for case in document["cases"]} == {"op", "module"}
    assert (out / "gpu.html").read_text().startswith("<!DOCTYPE html>")
    assert json.loads((out / "torchrun.json").read_text())["environment"]["world_sizes"] == [2]
    assert (out / "torchrun.html").read_text().startswith("<!DOCTYPE html>")
    compiled = json.loads((out / "compiled.json").read_text())
    assert compiled["environment"]["compile"] == "eager" and all("compile" in c for c in compiled["cases"])
    assert "compiled.json: TF32 matmul ieee, cudnn_conv ieee" in summary and "--compile eager: 20 cases compiled" \
        in summary, summary
    table = (out / "error_table.md").read_text()
    assert "| float16 / float32 |" in table and "| grad_weight err / allowed | grad_bias err / allowed |" in table
