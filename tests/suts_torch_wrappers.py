"""SUTs built on torch's own SyncBatchNorm (on CPU: harness.torch_sut's, the real autograd Function and torch's native
BatchNorm in eval), under names other than "torch": they inherit torch's defects (harness/known_deviations.toml)."""
from __future__ import annotations

from harness.torch_sut import torch_factory


def torch_wrapper(num_features, **kwargs):
    """A wrapper of torch's SyncBatchNorm that does not say so: a failure on one of torch's known defects stays a
    failure, with a note that it matches the defect's signature."""
    return torch_factory(num_features, **kwargs)


def torch_wrapper_declared(num_features, **kwargs):
    """The same wrapper, declaring it is built on torch: torch's known deviations apply to it (inherited)."""
    return torch_factory(num_features, **kwargs)


torch_wrapper_declared.built_on = "torch"
