"""SUT factories that misbehave in ways a harness must survive: hang, raise on one rank, crash a rank, sleep on one
rank (for a test to kill or stop it), break the factory contract, kill the process that started the ranks, fail to
compile under torch.compile."""
from __future__ import annotations

import os

import torch
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


def sleep_on_rank1(num_features, **kwargs):
    """Rank 1 sleeps in forward before any collective (creating ``$SYNCBN_TEST_MARKER.rank1`` first), while rank 0
    goes on into the layer's collectives and waits there: a test can kill or stop rank 1 meanwhile."""
    import time

    inner = torch_factory(num_features, **kwargs)

    def patched(x):
        if dist.get_rank() == 1:
            marker = os.environ.get("SYNCBN_TEST_MARKER")
            if marker:
                open(f"{marker}.rank1", "w").close()
            time.sleep(60)
        return inner.__class__.forward(inner, x)

    inner.forward = patched
    return inner


def returns_int(num_features, **kwargs):
    """Breaks the contract: returns a number, not a module."""
    return 5


def raises_without_process_group(num_features, *, process_group=None, **kwargs):
    """Raises when called without a process group (as the controller's check calls it), returns an int otherwise."""
    if process_group is None and not dist.is_initialized():
        raise RuntimeError("needs a process group")
    return 5


def kill_parent(num_features, **kwargs):
    """Kills the process that started the ranks (under pytest-xdist: the worker running the case; a rank forked by
    harness.pool's forkserver has the forkserver as its parent, the controller as its grandparent). Outside a rank
    (the controller's check calls factories without a process group) it only raises."""
    import signal

    if not dist.is_initialized():
        raise RuntimeError("needs a process group")
    parent = os.getppid()
    with open(f"/proc/{parent}/cmdline", "rb") as handle:
        if b"forkserver" in handle.read():
            with open(f"/proc/{parent}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(parent, signal.SIGKILL)
    return torch_factory(num_features, **kwargs)


def refuses_shared_weight(num_features, **kwargs):
    """Works as a layer, but its module does not let the model kind replace its weight (a read-only property over
    its own parameter): the model-case contract broken, which must be blamed on the SUT, not the harness."""
    class ReadOnlyWeight(type(torch_factory(num_features, **kwargs))):
        def __setattr__(self, name, value):
            if name == "weight" and "weight" in self._parameters:
                raise KeyError(name)
            super().__setattr__(name, value)

    module = torch_factory(num_features, **kwargs)
    module.__class__ = ReadOnlyWeight
    return module


@torch.library.custom_op("syncbn_tests::checked_copy", mutates_args=())
def _checked_copy(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_checked_copy.register_fake
def _checked_copy_fake(x: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("checked_copy's fake implementation is not written yet")


def uncompilable(num_features, **kwargs):
    """The torch SUT, whose forward first passes a detached copy of its input through a custom op whose fake
    implementation raises: eagerly nothing changes; under torch.compile dynamo cannot trace it (a compile error)."""
    inner = torch_factory(num_features, **kwargs)
    forward = inner.forward

    def patched(x):
        _checked_copy(x.detach())
        return forward(x)

    inner.forward = patched
    return inner
