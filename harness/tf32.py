"""TF32 under the harness's control: off for every float32 comparison, on only where a case asks for it.

On Ampere and later GPUs PyTorch lets cuDNN convolutions (and, if asked, matmuls) round float32 inputs to TF32
(10-bit mantissa, u = 2^-11): a float32 network then differs from float64 by ~1e-3 relative, which a float32
tolerance rightly rejects (the 2026-11-27 H100 run: both float32 model cases failed, at 46x and 12x, with TF32 on and
passed with it off). So every rank process and the controller switch TF32 off at start (``set_tf32(False)``), and a
model case with ``tf32=True`` switches it on around its own training (``tf32_mode``), judged by a TF32 tolerance
(harness.tolerances.model_tolerance).

torch 2.9 and later have the ``fp32_precision`` API ("ieee" / "tf32", per backend and operator); mixing it with
the legacy ``allow_tf32`` flags raises, so only one of the two is ever used: the new one where it exists.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["set_tf32", "tf32_mode", "tf32_state"]


def _new_api(torch) -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(
        getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def set_tf32(enabled: bool) -> None:
    """TF32 on or off for matmuls and cuDNN convolutions (and RNNs), in this process."""
    import torch

    if _new_api(torch):
        precision = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
        if hasattr(getattr(torch.backends.cudnn, "rnn", None), "fp32_precision"):
            torch.backends.cudnn.rnn.fp32_precision = precision
    else:  # torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> dict[str, Any]:
    """What this process allows, for the results' environment."""
    import torch

    if _new_api(torch):
        return {"api": "fp32_precision", "matmul": torch.backends.cuda.matmul.fp32_precision,
                "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}
    return {"api": "allow_tf32", "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_conv": torch.backends.cudnn.allow_tf32}


def _enabled() -> bool:
    state = tf32_state()
    return state["cudnn_conv"] in (True, "tf32")


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 as ``enabled`` inside the block, as before after it."""
    before = _enabled()
    set_tf32(enabled)
    try:
        yield
    finally:
        set_tf32(before)
