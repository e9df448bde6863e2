"""SUTs that declare what they do not support (harness.sut.Unsupported), for tests/test_capabilities.py."""
from __future__ import annotations

import torch

from harness.reference_suts import AllReduceSyncBN
from harness.sut import Unsupported


class FourDOnlyBiased(AllReduceSyncBN):
    """Supports 4-D input only and no momentum=None (declared); also has a real defect: running_var fed the biased
    batch variance M2/n instead of M2/(n-1)."""

    def forward(self, x):
        if x.dim() != 4:
            raise Unsupported(f"4-D input only, got {x.dim()}-D")
        return super().forward(x)

    def _unbiased_var(self, total, m2, local_count):
        return m2 / total


class Unsupported(Exception):  # noqa: F811 - an implementation need not import the harness: any class of this name
    pass


class NoMomentumNone(AllReduceSyncBN):
    """Correct, but declares momentum=None unsupported with its own exception class named Unsupported."""


def four_d_only_biased(num_features, *, momentum, **kwargs):
    from harness.sut import Unsupported as HarnessUnsupported

    if momentum is None:
        raise HarnessUnsupported("momentum=None (cumulative moving average) is not implemented")
    return FourDOnlyBiased(num_features, momentum=momentum, **kwargs)


def no_momentum_none(num_features, *, momentum, **kwargs):
    if momentum is None:
        raise Unsupported("momentum=None is not implemented")
    return NoMomentumNone(num_features, momentum=momentum, **kwargs)


def supports_nothing(num_features, **kwargs):
    """Declares every configuration unsupported: a run against it tests nothing, and must not read as a pass."""
    from harness.sut import Unsupported as HarnessUnsupported

    raise HarnessUnsupported("nothing is implemented yet")


class EmptyShardUnsupported(AllReduceSyncBN):
    """Correct, but declares a rank's empty shard unsupported, from that rank alone (only it sees its shard is
    empty): the other ranks are then already waiting for it in the first collective."""

    def forward(self, x):
        if x.shape[0] == 0:
            from harness.sut import Unsupported as HarnessUnsupported

            raise HarnessUnsupported("an empty shard on this rank is not supported", features="empty shards")
        return super().forward(x)


def empty_shard_unsupported(num_features, **kwargs):
    return EmptyShardUnsupported(num_features, **kwargs)


class FourDOnly(AllReduceSyncBN):
    """Correct where it runs; declares, like detectron2's NaiveSyncBatchNorm, what it does not do (without naming
    the features: the harness infers them): input other than 4-D (from its forward)."""

    def forward(self, x):
        if x.dim() != 4:
            from harness.sut import Unsupported as HarnessUnsupported

            raise HarnessUnsupported(f"4-D input only, got {x.dim()}-D")
        return super().forward(x)


def four_d_only(num_features, *, affine, momentum, process_group, **kwargs):
    """FourDOnly, which also declares process groups, affine=False and momentum=None unsupported (its factory)."""
    from harness.sut import Unsupported as HarnessUnsupported

    for unsupported, what in ((process_group is not None, "process groups"), (not affine, "affine=False"),
                              (momentum is None, "momentum=None")):
        if unsupported:
            raise HarnessUnsupported(f"{what} is not supported")
    return FourDOnly(num_features, affine=affine, momentum=momentum, process_group=process_group, **kwargs)


class NoHalfPrecision(AllReduceSyncBN):
    """Correct in float32 and float64; declares float16 and bfloat16 input unsupported (from its forward, without
    naming the features)."""

    def forward(self, x):
        if x.dtype in (torch.float16, torch.bfloat16):
            from harness.sut import Unsupported as HarnessUnsupported

            raise HarnessUnsupported(f"no half precision ({x.dtype})")
        return super().forward(x)


def no_half_precision(num_features, **kwargs):
    return NoHalfPrecision(num_features, **kwargs)
