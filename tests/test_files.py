"""harness.files: atomic writes, writability checked before a run, and the test suite's own guard on them."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness import files
from harness.errors import CaseError
from harness.files import check_writable, write_atomically

ROOT = Path(__file__).resolve().parent.parent


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "report.html"
    write_atomically(path, "first")
    assert write_atomically(path, "second") == path
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_check_writable_names_the_flag_and_the_rule(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CaseError, match=r"--report='.*dir': is a directory"):
        check_writable("--report", str(tmp_path / "dir"))
    with pytest.raises(CaseError, match=r"--json=.*a_file is a file, not a directory"):
        check_writable("--json", str(tmp_path / "a_file" / "results.json"))
    check_writable("--json", str(tmp_path / "new" / "results.json"))  # the missing folder is created


def test_the_suite_refuses_a_write_into_the_checkout():
    """tests/conftest.py: a test that writes a report into the checkout fails, whatever else writes there."""
    with pytest.raises(AssertionError, match="into the checkout"):
        files.write_atomically(ROOT / "syncbn-guard-test.html", "never written")
    assert not (ROOT / "syncbn-guard-test.html").exists()
