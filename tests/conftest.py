"""Fixtures of the harness's own tests."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

from harness.kernel_table import install_cpu_kernels


@pytest.fixture
def builtin_kernels():
    """The test starts and ends with the built-in CPU kernels installed (tests that swap kernels use it)."""
    install_cpu_kernels()
    yield
    install_cpu_kernels()


@pytest.fixture
def world_of_one(tmp_path):
    """A gloo process group of world size 1 in this process (FileStore in tmp_path), destroyed afterwards."""
    store = dist.FileStore(str(tmp_path / "store1"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=timedelta(seconds=30))
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


H100_RESULTS = Path(__file__).with_name("data") / "h100-2026-11-27.json.gz"


@pytest.fixture(scope="session")
def h100_document() -> dict:
    """The first GPU run's results (H100, results document v1; tests/data/README.md says how it was trimmed)."""
    return json.loads(gzip.decompress(H100_RESULTS.read_bytes()))



@pytest.fixture(autouse=True)
def _processes_are_marked(request, monkeypatch):
    """A test that starts a process (a rank pool, a pytest, torchrun or CLI subprocess) must carry the
    ``processes`` marker, so that ``pytest -m "not processes"`` is a loop of in-process tests only: an unmarked
    one that tries fails here, naming the marker. ``git`` and ``uname`` (a results document records the revision
    and the platform) are allowed."""
    if request.node.get_closest_marker("processes") is not None:
        yield
        return
    import multiprocessing.process

    def refuse(what: str):
        raise AssertionError(f"this test starts a process ({what}) but is not marked: add @pytest.mark.processes "
                             f"(tests that start processes are left out of the fast loop, -m 'not processes')")

    popen_init = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        program = os.path.basename(str(args[0] if isinstance(args, (list, tuple)) else str(args).split()[0]))
        if program not in ("git", "uname"):
            refuse(f"{program} subprocess")
        popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", lambda self: refuse("a multiprocessing process"))
    yield


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _writes_only_under_its_temporary_folders(monkeypatch):
    """A test writes its reports and results under its temporary folders, never into the checkout: the README's
    test line must leave the main job's syncbn-report.html in place (a test that ran the gate without --report once
    replaced it with a one-case report). Every file the harness writes goes through harness.files (written
    atomically: harness.files.write_atomically), so a write into the checkout fails the test that makes it, in this
    process, whatever another process does to the checkout meanwhile (a subprocess's writes are its test's own
    care: give its command --report/--json paths under tmp_path)."""
    from harness import files

    write = files.write_atomically

    def refuse_the_checkout(path, text):
        target = Path(os.path.abspath(path))
        if ROOT in target.parents:
            raise AssertionError(f"this test writes {target} into the checkout ({ROOT}); give its command "
                                 "--report/--json paths under tmp_path")
        return write(path, text)

    monkeypatch.setattr(files, "write_atomically", refuse_the_checkout)
