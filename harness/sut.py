"""Loading the implementation under test (SUT) and kernel substitutes from a SPEC string.

SUT SPEC: ``torch`` (default), ``package.module:factory`` or ``path/to/file.py:factory``. The factory contract::

    factory(num_features, *, eps, momentum, affine, track_running_stats, process_group, device, dtype)
        -> torch.nn.Module behaving like torch.nn.SyncBatchNorm

It is called inside each rank after the process group exists. An implementation that does not support a
configuration raises ``Unsupported("reason")``, from the factory or from the module's forward before any
collective (``harness.sut.Unsupported``, or any exception class named ``Unsupported``, so an implementation need
not import the harness): the case is then reported as unsupported with that reason, counted per feature, not
failed (``--strict-features`` makes it fail). Any other exception is a failure. KERNELS SPEC: ``package.module`` or
``path/to/file.py``, a module defining any of the five ops by name (see harness.spec.OP_NAMES).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from types import ModuleType
from typing import Callable

from .errors import CaseError
from .options import DEFAULT_SUT


class Unsupported(Exception):
    """Raised by a SUT factory for a configuration the implementation does not support (e.g. momentum=None, a
    5-D input): the case's outcome is "unsupported", with this message as the reason."""

__all__ = ["DEFAULT_SUT", "FACTORY_KEYWORDS", "CONTRACT", "Unsupported", "load_module", "load_factory",
           "describe_sut", "check_sut", "check_kernels", "module_problem", "user_traceback"]

FACTORY_KEYWORDS = ("eps", "momentum", "affine", "track_running_stats", "process_group", "device", "dtype")
CONTRACT = (f"factory(num_features, *, {', '.join(FACTORY_KEYWORDS)}) -> torch.nn.Module behaving like "
            f"torch.nn.SyncBatchNorm (harness/sut.py)")
_HARNESS_DIR = os.path.dirname(os.path.abspath(__file__))


def load_module(spec: str, *, option: str = "--kernels", given: str | None = None) -> ModuleType:
    """Import ``package.module`` or the file ``path/to/file.py`` (a file gets a stable private module name).
    ``given``: the option's value as the user wrote it, for messages (default ``spec``)."""
    given = spec if given is None else given
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise CaseError(f"{option}={given!r}: file {path} does not exist")
        name = "syncbn_sut_" + hashlib.sha1(path.encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise CaseError(f"{option}={given!r}: cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise CaseError(f"{option}={given!r}: cannot import module {spec!r} ({exc})") from None


def load_factory(spec: str, *, option: str = "--sut") -> Callable[..., object]:
    """The SUT factory named by ``spec``; checks it is callable with the contract's keyword arguments.
    ``option``: how the user gave it (``--sut`` or ``SYNCBN_SUT (environment)``), for messages."""
    if spec == DEFAULT_SUT:
        from .torch_sut import torch_factory

        return torch_factory
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise CaseError(f"{option}={spec!r}: expected 'torch', 'package.module:factory' or "
                        f"'path/to/file.py:factory'")
    module = load_module(target, option=option, given=spec)
    factory = getattr(module, attr, None)
    if factory is None:
        raise CaseError(f"{option}={spec!r}: module {target!r} has no attribute {attr!r}")
    if not callable(factory):
        raise CaseError(f"{option}={spec!r}: {attr!r} is not callable")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return factory
    parameters = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [k for k in FACTORY_KEYWORDS if k not in parameters and not takes_kwargs]
    if missing:
        raise CaseError(f"{option}={spec!r}: factory {attr}{signature} does not accept keyword(s) {missing}; the "
                        f"contract is factory(num_features, *, {', '.join(FACTORY_KEYWORDS)})")
    return factory


def user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback cut to the user's frames (not importlib's, not the harness's), then the exception."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<frozen") and not f.filename.startswith(_HARNESS_DIR)
              and "importlib" not in f.filename]
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    return text.rstrip()


def check_sut(spec: str, *, option: str = "--sut") -> Callable[..., object]:
    """Load the SUT factory in the controller, before any rank starts: CaseError for a usage problem, and for an
    SUT that raises while being imported (the message's first line, then the SUT's own traceback). ``option``: how
    the user gave it (``--sut``, or ``SYNCBN_SUT (environment)``)."""
    try:
        return load_factory(spec, option=option)
    except CaseError:
        raise
    except Exception as exc:  # noqa: BLE001 - the SUT's own code raised while being imported
        target = spec.rpartition(":")[0] or spec
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CaseError(f"{option}={spec!r}: importing {target} raised {type(exc).__name__}"
                        + (f": {first}" if first else "") + "\n" + user_traceback(exc)) from None


def module_problem(module: object, *, affine: bool = True, track_running_stats: bool = True) -> str | None:
    """What is wrong with a factory's result under the contract (None: nothing the harness can see)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        shown = repr(module)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return f"the factory returned {type(module).__name__} ({shown}), not a torch.nn.Module; the contract is " \
               f"{CONTRACT}"
    wanted = (["weight", "bias"] if affine else []) + (
        ["running_mean", "running_var", "num_batches_tracked"] if track_running_stats else [])
    missing = [name for name in wanted if getattr(module, name, None) is None]
    if missing:
        return (f"the factory returned a {type(module).__name__} without {', '.join(missing)} (affine="
                f"{affine}, track_running_stats={track_running_stats}); the contract is {CONTRACT}")
    return None


def check_kernels(spec: str, *, option: str = "--kernels") -> dict[str, Callable[..., object]]:
    """Load a --kernels module in the controller (CaseError naming the option, once, for a usage problem)."""
    from .kernel_table import load_kernel_overrides

    try:
        return load_kernel_overrides(load_module(spec, option=option))
    except CaseError:
        raise  # already names the option
    except ValueError as exc:
        raise CaseError(f"{option}={spec!r}: {exc}") from None


def describe_sut(spec: str, devices: tuple[str, ...] | list[str] = ("cpu",)) -> str:
    """What ran, in words, for the device(s) the run used."""
    if spec != DEFAULT_SUT:
        return spec
    parts = []
    if "cuda" in devices:
        parts.append("CUDA: the unmodified torch.nn.SyncBatchNorm and its CUDA kernels")
    if "cpu" in devices or not devices:
        parts.append("CPU: the real autograd Function with the harness's CPU kernels (harness.cpu_kernels)")
    return "torch.nn.SyncBatchNorm (" + "; ".join(parts) + ")"
