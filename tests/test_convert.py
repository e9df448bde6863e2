"""convert_sync_batchnorm, in process: torch.nn.SyncBatchNorm's own, CpuSyncBatchNorm's, and harness.rank.model's
conversion onto any SUT factory. Every _BatchNorm is swapped (nested too), InstanceNorm is left alone, the state is
shared (the same Parameter / buffer objects, not copies), requires_grad, training and qconfig are kept, and every
new layer gets the process_group given."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.rank.model import convert_to_sut
from harness.torch_sut import CpuSyncBatchNorm, torch_factory

PROCESS_GROUP = object()  # a sentinel: no distribution needed, only identity is checked


def _model() -> nn.Module:
    inner = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=None), nn.InstanceNorm2d(4, affine=True))
    model = nn.Sequential(
        nn.BatchNorm1d(3, eps=1e-3),
        nn.Sequential(inner, nn.BatchNorm3d(5, affine=False)),
        nn.ModuleDict({"deep": nn.Sequential(nn.BatchNorm2d(6, track_running_stats=False))}),
    )
    model[1][0][1].weight.requires_grad_(False)
    model[0].qconfig = "qconfig-sentinel"
    model[1][1].eval()
    return model


CONVERTERS = {
    "torch.nn.SyncBatchNorm": lambda m: (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m, PROCESS_GROUP),
                                         torch.nn.SyncBatchNorm),
    "CpuSyncBatchNorm": lambda m: (CpuSyncBatchNorm.convert_sync_batchnorm(m, PROCESS_GROUP), CpuSyncBatchNorm),
    "convert_to_sut(torch_factory)": lambda m: (convert_to_sut(m, torch_factory, PROCESS_GROUP), CpuSyncBatchNorm),
}


@pytest.mark.parametrize("converter", list(CONVERTERS))
def test_convert_sync_batchnorm(converter: str) -> None:
    model = _model()
    before = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    state = {name: (m.weight, m.bias, m.running_mean, m.running_var, m.num_batches_tracked, m.training,
                    m.weight.requires_grad if m.weight is not None else None, m.eps, m.momentum, m.affine,
                    m.track_running_stats, m.num_features) for name, m in before.items()}
    instance_norm = model[1][0][2]
    converted, cls = CONVERTERS[converter](model)
    after = dict(converted.named_modules())
    assert set(before) == {"0", "1.0.1", "1.1", "2.deep.0"}
    for name, old in state.items():
        layer = after[name]
        assert type(layer) is cls, f"{name}: {type(layer).__name__}, expected {cls.__name__}"
        weight, bias, running_mean, running_var, num_batches, training, requires_grad, *options = old
        assert layer.weight is weight and layer.bias is bias, f"{name}: weight/bias copied, not shared"
        assert layer.running_mean is running_mean and layer.running_var is running_var, f"{name}: buffers copied"
        assert layer.num_batches_tracked is num_batches, f"{name}: num_batches_tracked copied"
        assert layer.training == training, f"{name}: training flag lost"
        if weight is not None:
            assert layer.weight.requires_grad == requires_grad, f"{name}: requires_grad lost"
        assert [layer.eps, layer.momentum, layer.affine, layer.track_running_stats, layer.num_features] == options
        assert layer.process_group is PROCESS_GROUP, f"{name}: process_group not passed"
    assert after["0"].qconfig == "qconfig-sentinel"
    assert after["1.0.2"] is instance_norm and type(instance_norm) is nn.InstanceNorm2d
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) for m in converted.modules())


def test_converted_model_runs_like_batchnorm_without_a_process_group() -> None:
    """Not distributed: the converted CPU model computes what the plain one does (SEMANTICS.md: world size 1)."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).double()
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    expected = plain(x)
    converted = CpuSyncBatchNorm.convert_sync_batchnorm(plain)  # training mode: batch statistics, as before
    torch.testing.assert_close(converted(x), expected)
