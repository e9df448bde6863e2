"""The implementation under test inside a rank: the SUT factory of the run's RankOptions, its kernels installed."""
from __future__ import annotations

from typing import Any, Callable

from ..options import RankOptions
from .worker import RankContext

__all__ = ["implementation", "unsupported_reason", "declaration"]


def implementation(ctx: RankContext, options: RankOptions, device: str) -> Callable[..., Any]:
    """The SUT factory of ``options.sut`` with the kernel substitutes of ``options.kernels`` installed for
    ``device`` ("cpu" or "cuda"); the factory and the substitutes are loaded once per process."""
    from .. import kernel_table
    from ..sut import load_factory, load_module

    key = ("sut", options.sut, options.kernels)
    if key not in ctx.cache:
        overrides = kernel_table.load_kernel_overrides(load_module(options.kernels)) if options.kernels else None
        ctx.cache[key] = (load_factory(options.sut), overrides)
    factory, overrides = ctx.cache[key]
    # The kernel table is per process and cases of different runs may share the process: set it every time.
    if device == "cpu":
        kernel_table.install_cpu_kernels(overrides)
    else:
        kernel_table.install_device_kernels(overrides, device="CUDA")
    return factory


def unsupported_reason(exc: BaseException) -> str | None:
    """The reason of an ``Unsupported`` exception (harness.sut.Unsupported, or any class of that name) raised by
    the SUT: it declares the configuration unsupported. None for any other exception."""
    if type(exc).__name__ != "Unsupported":
        return None
    return str(exc) or "declared unsupported"


def declaration(exc: BaseException) -> dict[str, Any] | None:
    """What a rank returns for an ``Unsupported`` raised by the SUT: ``{"unsupported": reason,
    "unsupported_features": [names]}`` (the features it names, if any: harness.sut.Unsupported); None for any other
    exception."""
    reason = unsupported_reason(exc)
    if reason is None:
        return None
    features = getattr(exc, "features", ()) or ()
    features = [features] if isinstance(features, str) else [str(f) for f in features]
    return {"unsupported": reason, "unsupported_features": features}
