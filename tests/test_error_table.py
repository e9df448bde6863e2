"""scripts/gpu_error_table.py on CPU: every dtype row is measured, and single-process BatchNorm's error stays under
the yardstick cap that harness.tolerances reasons for its dtype (the cap's premise, checked on this machine)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_error_table  # noqa: E402

from harness.tolerances import YARDSTICK_CAP_REL  # noqa: E402


def test_error_table_on_cpu(tmp_path: Path) -> None:
    assert gpu_error_table.main(["--device", "cpu", "--shapes", "small", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "error_table.json").read_text())
    assert doc["failed"] == []
    measured = {(row["data"], row["dtype"], row["param_dtype"]) for row in doc["rows"]}
    assert measured == {(label, dtype, param or dtype) for label, dtype, param, _, _ in gpu_error_table.ROWS}
    markdown = (tmp_path / "error_table.md").read_text()
    for row in doc["rows"]:
        assert f"| {row['data']} | {row['dtype']} / {row['param_dtype']} |" in markdown
        for quantity, errors in row["errors"].items():
            assert all(math.isfinite(v) for v in errors.values()), (row["dtype"], quantity, errors)
            # The tolerance trusts the yardstick only up to the cap; on this data BatchNorm must sit well below it.
            cap = YARDSTICK_CAP_REL[row["dtype"]]
            assert errors["batchnorm"] < cap / 2, (row["data"], row["dtype"], quantity, errors, cap)
