"""Which kernels the five ops run: the CPU registration and the substitutes of ``--kernels``.

``install_cpu_kernels`` registers, once per process, CPU implementations of the five ops through ``torch.library``
that dispatch through a swappable table: the built-in kernels of harness.cpu_kernels, updated by a kernel author's
overrides; with them the ops' fake implementations (harness.cpu_kernels.FAKE_KERNELS), so that torch.compile traces
them as opaque calls whichever kernel the table holds. ``kernels_opaque_to_compiler`` (the compiled lane, once per
process) runs the table's kernels under ``torch.compiler.disable``: dynamo then never traces a Python kernel's own
frames (a C++ kernel has none), also where a graph break makes the code around the op run eagerly.
``install_device_kernels`` substitutes overrides for the native kernels of another dispatch key (CUDA).
``load_kernel_overrides`` reads the ops a ``--kernels`` module defines.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import torch

from .cpu_kernels import BUILTIN_KERNELS, FAKE_KERNELS
from .spec import OP_NAMES

__all__ = ["active_kernels", "active_overrides", "install_cpu_kernels", "install_device_kernels",
           "load_kernel_overrides", "kernels_opaque_to_compiler"]

_active: dict[str, Callable[..., Any]] = dict(BUILTIN_KERNELS)
_library: torch.library.Library | None = None
_opaque = False  # the registered kernels run under torch.compiler.disable (kernels_opaque_to_compiler)


def kernels_opaque_to_compiler() -> None:
    """From now on, in this process, the registered CPU kernels run under ``torch.compiler.disable``: opaque to
    dynamo, like a native kernel (the compiled lane calls it; it imports torch._dynamo, which eager runs never
    need). Registrations made before are replaced."""
    global _opaque, _library
    if _opaque:
        return
    _opaque = True
    if _library is not None:
        _library._destroy()
        _library = None
        _register()


def _dispatcher(name: str) -> Callable[..., Any]:
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        return _active[name](*args, **kwargs)

    dispatch.__name__ = dispatch.__qualname__ = f"cpu_{name}"
    # The dispatcher calls this from C++; without the wrapper, dynamo would trace it (and the kernel) as user code
    # wherever a graph break leaves the op to run eagerly.
    return torch.compiler.disable(dispatch, recursive=True) if _opaque else dispatch


def _register() -> None:
    """Register the table's dispatchers as the five ops' CPU kernels, with their fake implementations (where this
    torch can: register_fake from 2.4, impl_abstract before)."""
    global _library
    library = torch.library.Library("aten", "IMPL")
    register_fake = getattr(torch.library, "register_fake", None) or getattr(torch.library, "impl_abstract", None)
    for name in OP_NAMES:
        library.impl(name, _dispatcher(name), "CPU")
        if register_fake is not None:
            register_fake(f"aten::{name}", FAKE_KERNELS[name], lib=library)
    _library = library  # kept alive: the registrations last as long as this object


def _validate_overrides(overrides: Mapping[str, Callable[..., Any]] | None) -> dict[str, Callable[..., Any]]:
    if overrides is None:
        return {}
    unknown = sorted(set(overrides) - set(OP_NAMES))
    if unknown:
        raise ValueError(f"unknown kernel name(s) {unknown!r}: overrides must be among OP_NAMES={OP_NAMES!r}")
    for name, kernel in overrides.items():
        if not callable(kernel):
            raise TypeError(f"override {name}={kernel!r} is not callable")
    return dict(overrides)


def active_kernels() -> dict[str, Callable[..., Any]]:
    """A copy of the table the registered CPU kernels dispatch through."""
    return dict(_active)


def active_overrides() -> dict[str, Callable[..., Any]]:
    """The entries of that table that are not the built-in kernels (what ``install_cpu_kernels`` was last given)."""
    return {name: kernel for name, kernel in _active.items() if kernel is not BUILTIN_KERNELS[name]}


def install_cpu_kernels(overrides: Mapping[str, Callable[..., Any]] | None = None) -> None:
    """Make the five ops run on CPU: the built-in kernels, updated by ``overrides`` (op name -> callable with the
    aten schema's argument order). Registers with ``torch.library`` once per process; later calls only swap the
    table, so calling without overrides restores the built-ins."""
    global _library
    table = _validate_overrides(overrides)
    _active.clear()
    _active.update(BUILTIN_KERNELS)
    _active.update(table)
    if _library is None:
        _register()


_device_tables: dict[str, dict[str, Callable[..., Any]]] = {}
_device_libraries: dict[str, torch.library.Library] = {}


def install_device_kernels(overrides: Mapping[str, Callable[..., Any]] | None, *, device: str = "CUDA") -> None:
    """Substitute ``overrides`` for the native kernels of dispatch key ``device`` (e.g. "CUDA"); ops not named keep
    their native kernels. Each call replaces the previous substitution for that key; None or {} removes it."""
    if device.upper() == "CPU":
        raise ValueError(f"device={device!r}: use install_cpu_kernels for CPU")
    table = _validate_overrides(overrides)
    if _device_tables.get(device, {}) == table:
        return  # already in place: re-registering would only warn about overriding the same kernels
    _device_tables[device] = table
    previous = _device_libraries.pop(device, None)
    if previous is not None:
        previous._destroy()  # unregisters: the native kernels are back
    if table:
        library = torch.library.Library("aten", "IMPL")
        for name, kernel in table.items():
            library.impl(name, kernel, device)
        _device_libraries[device] = library


def load_kernel_overrides(module: ModuleType | str) -> dict[str, Callable[..., Any]]:
    """The OP_NAMES attributes ``module`` (a module or its import path) defines, for ``install_cpu_kernels``."""
    if isinstance(module, str):
        module = importlib.import_module(module)
    found = {name: getattr(module, name) for name in OP_NAMES if hasattr(module, name)}
    if not found:
        raise ValueError(f"module {module.__name__!r} defines none of the kernels OP_NAMES={OP_NAMES!r}; "
                         "define at least one function named like an op")
    return _validate_overrides(found)
