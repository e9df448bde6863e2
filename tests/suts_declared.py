"""SUTs that declare what they do not support (harness.sut.Unsupported), for tests/test_capabilities.py."""
from __future__ import annotations

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
