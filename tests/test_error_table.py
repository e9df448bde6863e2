"""scripts/gpu_error_table.py on CPU: every dtype row is measured, single-process BatchNorm's error stays under
the yardstick cap that harness.tolerances reasons for its dtype (the cap's premise, checked on this machine), and each
row carries the suite's verdict on SyncBN's grad_weight and grad_bias (err / allowed under module_tolerance)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_error_table  # noqa: E402

from harness.tolerances import YARDSTICK_CAP_REL  # noqa: E402

pytestmark = pytest.mark.processes  # every test here starts rank pools or subprocesses


def test_error_table_on_cpu(tmp_path: Path) -> None:
    assert gpu_error_table.main(["--device", "cpu", "--shapes", "small", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "error_table.json").read_text())
    assert doc["failed"] == []
    measured = {(row["data"], row["dtype"], row["param_dtype"]) for row in doc["rows"]}
    assert measured == {(label, dtype, param or dtype) for label, dtype, param, _, _ in gpu_error_table.ROWS}
    markdown = (tmp_path / "error_table.md").read_text()
    assert "| grad_weight err / allowed | grad_bias err / allowed |" in markdown.splitlines()[2]
    for row in doc["rows"]:
        key = f"| {row['data']} | {row['dtype']} / {row['param_dtype']} |"
        line = next(li for li in markdown.splitlines() if key in li)
        assert line.count("|") == 3 + len(gpu_error_table.QUANTITIES) + len(gpu_error_table.JUDGED) + 1, line
        # The CPU kernels accumulate the parameter gradients in float32: the suite passes them by a wide margin,
        # judged by the analytic floor (torch's CPU BatchNorm is accurate too, so it is never "suspect" here).
        assert set(row["verdict"]) == set(gpu_error_table.JUDGED)
        for quantity, verdict in row["verdict"].items():
            assert 0 <= verdict["ratio"] < 0.1 and verdict["atol"] > 0, (row["data"], row["dtype"], quantity, verdict)
            assert verdict["source"] in ("floor", "8 bn"), (row["data"], row["dtype"], quantity, verdict)
            assert f"{verdict['ratio']:.2g} ({verdict['source']})" in line
        for quantity, errors in row["errors"].items():
            assert all(math.isfinite(v) for v in errors.values()), (row["dtype"], quantity, errors)
            # The tolerance trusts the yardstick only up to the cap; on this data BatchNorm must sit well below it.
            cap = YARDSTICK_CAP_REL[row["dtype"]]
            assert errors["batchnorm"] < cap / 2, (row["data"], row["dtype"], quantity, errors, cap)
