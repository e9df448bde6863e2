"""What the CPU-kernel tests (test_cpu_kernels.py, test_torch_sut.py) share: eps, memory formats, seeded data (their
fixtures, builtin_kernels and world_of_one, are in conftest.py)."""
from __future__ import annotations

import torch

EPS = 1e-5
MEMORY_FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
}


def data(shape, dtype, layout="contiguous", *, seed=0, loc=5.0, scale=3.0):
    """Seeded N(loc, scale²) values of ``shape`` in ``dtype`` and memory ``layout``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale + loc
    return x.to(dtype).contiguous(memory_format=MEMORY_FORMATS[layout])
