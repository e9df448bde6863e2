"""Deterministic case data: every rank builds its own shard from the case's seed, the controller rebuilds the same.

All draws are float64 numpy; ``quantize`` then rounds them to the case's dtype exactly the way a rank converts them
to a torch tensor, so the float64 reference sees the very values the implementation under test saw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import ModuleSpec, OpSpec

__all__ = ["Params", "make_params", "make_input", "make_grad_output", "quantize", "torch_dtype", "dtype_name",
           "to_tensor", "to_numpy"]

_PARAMS, _INPUT, _GRAD = 0, 1, 2


def _rng(seed: int, stream: int, step: int = 0, rank: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, step, rank]))


@dataclass(frozen=True)
class Params:
    """Initial module state shared by every rank: never the default ones and zeros."""

    weight: np.ndarray
    bias: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    num_batches_tracked: int
    channel_shift: np.ndarray  # per-channel offset of the data, in units of ``scale``


def make_params(spec: ModuleSpec | OpSpec) -> Params:
    """weight ~ N(1, 0.5²), bias ~ N(0, 0.5²), running_mean ~ loc + scale·N(0, 0.5²), running_var ~ scale²·U(0.5, 2)."""
    rng = _rng(spec.seed, _PARAMS)
    channels = spec.channels
    weight = 1.0 + 0.5 * rng.standard_normal(channels)
    bias = 0.5 * rng.standard_normal(channels)
    running_mean = spec.loc + spec.scale * 0.5 * rng.standard_normal(channels)
    running_var = spec.scale**2 * rng.uniform(0.5, 2.0, channels)
    num_batches_tracked = int(rng.integers(0, 5))
    channel_shift = rng.uniform(-1.0, 1.0, channels)
    return Params(weight, bias, running_mean, running_var, num_batches_tracked, channel_shift)


def make_input(spec: ModuleSpec | OpSpec, step: int, rank: int, params: Params | None = None) -> np.ndarray:
    """Rank ``rank``'s input at ``step`` (a phase: its shape is ``spec.input_shape(rank, step)``; float64, logical
    NC... order), by ``spec.data``:

    normal: loc + scale·(shift_c + N(0,1)); constant: loc + scale·shift_c (zero variance per channel);
    outliers: normal with about 1% of elements at ±50·scale; halfconst: even channels constant, odd normal.
    """
    params = params or make_params(spec)
    shape = spec.input_shape(rank, step)
    rng = _rng(spec.seed, _INPUT, step, rank)
    shift = params.channel_shift.reshape((1, -1) + (1,) * (len(shape) - 2))
    noise = rng.standard_normal(shape)
    kind = getattr(spec, "data", "normal")
    if kind == "constant":
        noise = np.zeros(shape)
    elif kind == "halfconst":
        noise[:, 0::2] = 0.0
    elif kind == "outliers":
        mask = rng.random(shape) < 0.01
        noise = np.where(mask, 50.0 * np.sign(noise + 1e-300), noise)
    return spec.loc + spec.scale * (shift + noise)


def make_grad_output(spec: ModuleSpec | OpSpec, step: int, rank: int) -> np.ndarray:
    """dL/dy for rank ``rank`` at ``step``: N(0, 1) of the output's shape."""
    return _rng(spec.seed, _GRAD, step, rank).standard_normal(spec.input_shape(rank, step))


def torch_dtype(name: str):  # -> torch.dtype
    import torch

    return getattr(torch, name)


def dtype_name(dtype) -> str:
    """``torch.float32`` -> ``"float32"``: the spelling of the specs and reports."""
    return str(dtype).removeprefix("torch.")


def quantize(array: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` (as torch does on conversion) and return them as float64."""
    if dtype == "float64":
        return np.asarray(array, dtype=np.float64)
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(torch_dtype(dtype)).to(torch.float64).numpy()


_MEMORY_FORMATS = {"contiguous": "contiguous_format", "channels_last": "channels_last",
                   "channels_last_3d": "channels_last_3d"}


def to_tensor(array: np.ndarray, dtype: str, device: str, layout: str = "contiguous"):
    """``array`` as a torch tensor of ``dtype`` on ``device`` in memory ``layout`` (rounded exactly like
    ``quantize``)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(torch_dtype(dtype))
    return tensor.to(device).contiguous(memory_format=getattr(torch, _MEMORY_FORMATS[layout]))


def to_numpy(tensor) -> np.ndarray:
    """A tensor's values as a float64 numpy array in logical (N, C, ...) order, on the host."""
    import torch

    return tensor.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy().copy()
