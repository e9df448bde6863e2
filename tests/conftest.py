"""Fixtures of the harness's own tests."""
from __future__ import annotations

from datetime import timedelta

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
