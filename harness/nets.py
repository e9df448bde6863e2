"""The network of the model kind, shared by the ranks (harness.rank.model trains it under DDP) and the controller
(harness.kinds.model trains it on the global batch in float64): its definition, initial weights and data.

Loss scaling under DDP: DDP averages gradients over the W ranks, so rank r minimises
    loss_r = W · Σ_{i in shard r} ℓ_i / N          (N: the global batch size)
and the averaged gradient (1/W) Σ_r ∇loss_r = ∇ (Σ_i ℓ_i / N), the gradient of the global mean loss. The global
loss is Σ_r loss_r / W.
"""
from __future__ import annotations

import numpy as np

from .spec import ModelSpec

__all__ = ["make_net", "make_batch", "state_of", "INPUT_SHAPE", "LEARNING_RATE"]

INPUT_SHAPE = (3, 2, 4, 4)  # per sample: channels, depth, height, width
LEARNING_RATE = 0.1


def _build_net(momentum: float | None):
    import torch
    from torch import nn

    class BnNet(nn.Module):
        """x (N, 3, 2, 4, 4) -> conv3d -> bn3d -> relu -> pooled (N, 4);  mean over depth -> conv2d -> bn2d -> relu
        -> pooled (N, 5);  concat -> linear -> bn1d -> relu -> linear -> (N, 1)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv3 = nn.Conv3d(3, 4, 3, padding=1)
            self.bn3 = nn.BatchNorm3d(4, momentum=momentum)
            self.conv2 = nn.Conv2d(3, 5, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(5, momentum=momentum)
            self.fc = nn.Linear(9, 6)
            self.bn1 = nn.BatchNorm1d(6, momentum=momentum)
            self.head = nn.Linear(6, 1)

        def forward(self, x):
            branch3 = torch.relu(self.bn3(self.conv3(x))).mean(dim=(2, 3, 4))
            branch2 = torch.relu(self.bn2(self.conv2(x.mean(dim=2)))).mean(dim=(2, 3))
            hidden = torch.relu(self.bn1(self.fc(torch.cat([branch3, branch2], dim=1))))
            return self.head(hidden)

    return BnNet()


def make_net(case: ModelSpec, dtype: str, device: str):
    """The network with the seed's initial weights (drawn in float32, so every dtype starts from the same values)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        net = _build_net(case.momentum)
    return net.to(device=device, dtype=getattr(torch, dtype))


def make_batch(case: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """The global batch (N, 3, 2, 4, 4) and its targets (N, 1), float64, per step: (steps, ...)."""
    rng = np.random.default_rng(np.random.SeedSequence([case.seed, 7]))
    total = sum(case.shard_sizes)
    inputs = 1.0 + 2.0 * rng.standard_normal((case.steps, total, *INPUT_SHAPE))
    targets = rng.standard_normal((case.steps, total, 1))
    return inputs, targets


def state_of(net) -> dict[str, np.ndarray]:
    return {name: value.detach().to(device="cpu").double().numpy().copy()
            for name, value in net.state_dict().items()}
