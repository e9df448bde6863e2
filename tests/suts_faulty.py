"""SUT factories that misbehave in ways a harness must survive: hang, raise on one rank, crash a rank."""
from __future__ import annotations

import os

import torch.distributed as dist

from harness.torch_sut import torch_factory


class _Wrapper:
    pass


def deadlock_on_empty(num_features, **kwargs):
    """Skips the layer (and its collectives) on a rank whose shard is empty: the others wait forever."""
    inner = torch_factory(num_features, **kwargs)
    forward = inner.forward

    def patched(x):
        if x.shape[0] == 0:
            return x * 1.0
        return forward(x)

    inner.forward = patched
    return inner


def raise_on_rank1(num_features, **kwargs):
    """Raises inside forward on rank 1 only (before any collective)."""
    inner = torch_factory(num_features, **kwargs)
    forward = inner.forward

    def patched(x):
        if dist.get_rank() == 1:
            raise RuntimeError("kernel launch failed <script>alert(1)</script> on rank 1")
        return forward(x)

    inner.forward = patched
    return inner


def crash_rank0(num_features, **kwargs):
    """The process of rank 0 dies (like a segfault in a kernel)."""
    inner = torch_factory(num_features, **kwargs)

    def patched(x):
        if dist.get_rank() == 0:
            os._exit(139)
        return inner.__class__.forward(inner, x)

    inner.forward = patched
    return inner
