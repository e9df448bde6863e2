"""Running the conformance suite through pytest for a command (``python -m harness run``, ``gate``): the checks made
before the first case (``preflight``), the pytest command line of resolved Options, and pytest's exit status in the
harness's exit codes."""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Sequence

from .errors import CaseError
from .files import check_writable
from .options import (DEFAULT_SUT, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, OPTIONS, Options,
                      add_argparse_options, resolve)

__all__ = ["ROOT", "SUITE", "add_suite_arguments", "resolve_suite_options", "check_workers", "pytest_argv",
           "run_suite", "exit_code_from_pytest", "missing_cuda", "preflight", "SuiteRun", "SUITE_PLUGIN",
           "absolute_paths"]

# The conformance suite, the package harness.cases: cases/ in the checkout (harness/cases links to it), harness/cases
# where the package is installed. Its parent is pytest's rootdir for a suite run, so node ids read
# cases/test_catalogue.py::... either way.
SUITE = (Path(__file__).parent / "cases").resolve()
ROOT = SUITE.parent


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs the suite shares (harness.options), plus -n and extra pytest args."""
    add_argparse_options(parser)
    parser.add_argument("-n", "--workers", default=None, help="pytest-xdist workers (e.g. 2 or auto)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")


def resolve_suite_options(args: argparse.Namespace) -> Options:
    """The resolved Options of a command's parsed arguments (the main job's defaults); ``-n`` checked too."""
    check_workers(getattr(args, "workers", None))
    return resolve(vars(args), main_job=True)


def check_workers(workers: str | None) -> None:
    """``-n``: what pytest-xdist takes, a whole number >= 1, 'auto' or 'logical' (CaseError otherwise)."""
    if workers is None or workers in ("auto", "logical"):
        return
    if not (str(workers).isdigit() and int(workers) >= 1):
        raise CaseError(f"-n={workers!r}: must be a whole number >= 1, 'auto' or 'logical' (pytest-xdist workers)")


def absolute_paths(options: Options) -> Options:
    """``options`` with every path made absolute (the output files, a SUT or kernels file): a file is relative to
    where the user is, and the suite runs from ROOT."""
    changes = {name: os.path.abspath(getattr(options, name)) for name in ("json", "report") if getattr(options, name)}
    changes["sut"] = _absolute_spec(options.sut, with_attribute=True)
    if options.kernels:
        changes["kernels"] = _absolute_spec(options.kernels, with_attribute=False)
    return dataclasses.replace(options, **changes)


def pytest_argv(options: Options, *, workers: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The pytest command line that runs the suite (SUITE) with ``options``, the same from the checkout and installed:
    no configuration file or conftest.py of wherever it lies is read (a virtual environment inside a project must
    not bring the project's pytest settings), the harness's plugin is loaded by name (harness.pytest_entry, with the
    suite's settings spelled out here) and the SUT is always named (which is what asks the plugin for the suite, in
    pytest-xdist's workers too)."""
    argv = [str(SUITE), "-c", os.devnull, "--rootdir", str(ROOT), "--noconftest", "-p", "harness.pytest_entry",
            "-p", "no:cacheprovider", "-q", "-ra", "--strict-markers",
            "-W", "error::pytest.PytestUnraisableExceptionWarning"]
    options = absolute_paths(options)
    for opt in OPTIONS:
        value = getattr(options, opt.name)
        if value is None or value is False or (value == opt.default and opt.name not in ("device", "sut")):
            continue
        argv += [opt.pytest_name] if opt.flag_only else [opt.pytest_name, str(value)]
    if workers:
        argv += ["-n", str(workers)]
    return argv + list(extra)


def _absolute_spec(spec: str, *, with_attribute: bool) -> str:
    """A SUT or kernels SPEC with its file path (``path/to/file.py[:attr]``) made absolute; a module name as is."""
    target, sep, attr = spec.rpartition(":") if with_attribute else (spec, "", "")
    if not sep and with_attribute:
        return spec
    if target.endswith(".py") or os.sep in target or "/" in target:
        return os.path.abspath(target) + sep + attr
    return spec


def exit_code_from_pytest(code: int) -> int:
    """pytest 0 -> 0; 1 (tests failed) -> 1; 2 (interrupted) -> 3 (incomplete); usage, internal error or no tests
    collected -> 2."""
    return {0: EXIT_OK, 1: EXIT_FAILED, 2: EXIT_INCOMPLETE}.get(int(code), EXIT_USAGE)


SUITE_PLUGIN = "syncbn-suite-run"


class SuiteRun:
    """The pytest plugin object a command hands to pytest.main: the options it resolved and checked (preflight),
    which harness.pytest_plugin uses as they are instead of resolving and checking them again, and the output files
    the command keeps to itself (harness.reports.pytest_reports writes them but does not print their paths: the gate's
    per-run results, in a directory it deletes). pytest-xdist workers get the options from the command line."""

    def __init__(self, options: Options, unannounced: Sequence[str] = ()) -> None:
        self.__name__ = SUITE_PLUGIN  # pytest registers a plugin object under its __name__
        self.options = options
        self.syncbn_unannounced = frozenset(os.path.abspath(p) for p in unannounced)


def run_suite(options: Options, *, workers: str | None = None, extra: Sequence[str] = (),
              unannounced: Sequence[str] = ()) -> int:
    """Run the suite with ``options`` (resolved and checked by the caller) in this process; the harness's exit code.
    The SYNCBN_* environment variables are set aside while it runs: the options already took what they said, and
    the command line the workers get spells out every option that differs from its default."""
    import pytest

    options = absolute_paths(options)
    argv = pytest_argv(options, workers=workers, extra=extra)
    os.chdir(ROOT)
    saved = {opt.env: os.environ.pop(opt.env) for opt in OPTIONS if opt.env and opt.env in os.environ}
    try:
        code = pytest.main(argv, plugins=[SuiteRun(options, unannounced)])
    finally:
        os.environ.update(saved)
    return exit_code_from_pytest(code)


def preflight(options: Options, *, main_job: bool = False) -> None:
    """Everything about a run that can be checked before the first case, in the controller: CUDA for the main job
    (missing_cuda), the backend, the output paths, the SUT (importable, the factory's signature, and what it
    returns when called once on CPU without a process group, if it can be) and the kernels, and the --case id.
    Raises CaseError ("<option>=<value>: <rule>")."""
    if main_job and (problem := missing_cuda(options)):
        raise CaseError(problem)
    if options.case:
        from .kinds import parse_case_id

        parse_case_id(options.case)
    if options.area:
        from .catalogue import check_areas

        check_areas(options.area)
    _check_backend(options)
    for name in ("json", "report"):
        if getattr(options, name):
            check_writable(options.spelled(name), getattr(options, name))
    from .sut import check_kernels, check_sut

    factory = check_sut(options.sut, option=options.spelled("sut"))
    if options.sut != DEFAULT_SUT:
        _check_factory_result(options.spelled("sut"), options.sut, factory)
    if options.kernels:
        check_kernels(options.kernels, option=options.spelled("kernels"))


def _check_backend(options: Options) -> None:
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise CaseError(f"--backend={options.backend!r}: torch.distributed.is_available() is False in torch "
                        f"{torch.__version__}; the harness runs its ranks through torch.distributed")
    devices = {options.device}
    if options.case:
        from .kinds import parse_case_id

        devices = {getattr(parse_case_id(options.case), "device", options.device)}
    if options.backend == "nccl":
        if not dist.is_nccl_available():
            raise CaseError(f"--backend='nccl': torch.distributed.is_nccl_available() is False in torch "
                            f"{torch.__version__}; use --backend gloo or auto")
        if "cpu" in devices:
            raise CaseError("--backend='nccl': NCCL runs CUDA tensors only; use it with --device cuda, or use "
                            "--backend gloo or auto on CPU")
    elif (options.backend == "gloo" or "cpu" in devices) and not dist.is_gloo_available():
        raise CaseError(f"--backend={options.backend!r}: torch.distributed.is_gloo_available() is False in torch "
                        f"{torch.__version__}; CPU ranks need gloo")


def _check_factory_result(option: str, spec: str, factory) -> None:
    """Call the factory once in the controller (CPU, float32, process_group=None). A factory that raises here may
    need a process group: that is for the ranks to find out; a result that breaks the contract is a usage error."""
    import torch

    from .sut import module_problem

    try:
        module = factory(4, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, process_group=None,
                         device=torch.device("cpu"), dtype=torch.float32)
    except Exception:  # noqa: BLE001 - see the docstring
        return
    problem = module_problem(module)
    if problem:
        raise CaseError(f"{option}={spec!r}: {problem}")


def missing_cuda(options: Options) -> str | None:
    """Why the run cannot use CUDA here, or None. The main job refuses rather than skipping every case: a CI job
    that asked for the GPU suite must not pass on a machine without one (plain pytest skips, with the reason)."""
    device, what = options.device, "--device cuda"
    if options.case:
        from .kinds import parse_case_id

        if parse_case_id(options.case).device == "cuda":
            device, what = "cuda", f"--case {options.case} (a CUDA case)"
    if device != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (f"{what}: torch.cuda.is_available() is False on this machine (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); use --device cpu, or --device auto to take the GPU when there is one")
