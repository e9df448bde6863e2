"""Every option of a run, in one table: flag, environment variable, default, choices, help. One home.

The three entry points read this table and nothing else: the CLI (``python -m harness run``, ``gate``,
``selftest``), the pytest plugin (``pytest --syncbn-sut ...``; this repository's own pytest also takes the short
spelling ``--sut ...``) and the torchrun launcher (``harness.launch``). Each one
collects the raw values it was given (a value is None when not given), and ``resolve`` applies the environment
variable, the one default, the choices and the rules, so a value means the same wherever it comes from.

The rerun line of a failed case is built here too (``rerun_command``): it repeats exactly the options that change
what a case computes.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Callable, Mapping

from .errors import CaseError

__all__ = ["Option", "OPTIONS", "Options", "RankOptions", "resolve", "add_argparse_options", "add_pytest_options",
           "rerun_command", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INCOMPLETE", "PROFILES", "DEVICES",
           "DEFAULT_SUT", "COMPILE_BACKENDS", "option"]

# Exit codes of every command: 0 all passed, 1 a case failed (or a regression), 2 usage error, 3 the run did not
# complete (interrupted, terminated, a worker lost): never a pass.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
PROFILES = ("quick", "default", "thorough")
DEVICES = ("cpu", "cuda", "auto")
DEFAULT_SUT = "torch"
COMPILE_BACKENDS = ("off", "eager", "aot_eager", "inductor")  # torch.compile backends of --compile (docs/compile.md)


def _positive_count(name: str, value: int | None) -> None:
    if value is not None and not (isinstance(value, int) and value >= 1):
        raise CaseError(f"--{name.replace('_', '-')}={value!r}: must be a whole number >= 1")


def _positive_seconds(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0):
        raise CaseError(f"--{name.replace('_', '-')}={value!r}: must be a number of seconds > 0")


@dataclass(frozen=True)
class Option:
    """One option: ``name`` is the attribute (``case_timeout``), ``flag`` the command-line spelling."""

    name: str
    help: str
    default: Any = None
    env: str | None = None
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] = str
    metavar: str | None = None
    pytest_flag: str | None = None  # the short pytest spelling where it is not ``flag`` (--json clashes in pytest)
    rerun: bool = False  # part of the rerun line: it changes what a case computes or how it is judged
    flag_only: bool = False  # a switch (store_true)
    check: Callable[[str, Any], None] | None = None
    main_job_default: Any = None  # what the main job (python -m harness run / gate) uses when not given
    rank: bool = False  # travels to the rank processes (harness.rank) in RankOptions: it changes what a rank runs

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def pytest_name(self) -> str:
        """pytest's spelling wherever the package is installed: ``--syncbn-<flag>``. The plugin is loaded into any
        project's pytest (harness.pytest_entry), where a generic name (--device, --case, --report) may be taken."""
        return "--syncbn-" + self.flag[2:]

    @property
    def short_pytest_name(self) -> str:
        """The short spelling this repository's own pytest accepts too (its root conftest.py): --sut, --json-results."""
        return self.pytest_flag or self.flag


OPTIONS: tuple[Option, ...] = (
    Option("sut", "implementation under test: 'torch', 'package.module:factory' or 'path/to/file.py:factory'",
           default=DEFAULT_SUT, env="SYNCBN_SUT", metavar="SPEC", rerun=True, rank=True),
    Option("kernels", "a module ('package.module' or 'file.py') defining any of the five batch_norm ops; they "
           "replace PyTorch's", env="SYNCBN_KERNELS", metavar="SPEC", rerun=True, rank=True),
    Option("compile", "run each rank's implementation under torch.compile with this backend, forward and backward, "
           "every phase (model cases: the DDP-wrapped network; op cases: the op call): off, eager (dynamo's graphs "
           "run eagerly), aot_eager (dynamo and AOTAutograd), inductor (generated kernels); docs/compile.md",
           default="off", env="SYNCBN_COMPILE", choices=COMPILE_BACKENDS, metavar="BACKEND", rerun=True, rank=True),
    Option("strict_compile", "with --compile: count a graph break as a failure (for the day SyncBN compiles whole)",
           default=False, flag_only=True, rerun=True),
    Option("profile", "case profile: quick (every item once), default (CI) or thorough (nightly)",
           default="default", env="SYNCBN_PROFILE", choices=PROFILES),
    Option("device", "cpu, cuda (the CUDA variant of every case plus the CUDA-only cases) or auto (cuda when "
           "torch.cuda.is_available())", default="cpu", env="SYNCBN_DEVICE", choices=DEVICES),
    Option("backend", "process-group backend: auto (gloo on CPU; NCCL with a GPU per rank), gloo or nccl",
           default="auto", choices=("auto", "gloo", "nccl"), rerun=True),
    Option("case", "run exactly this case id (module, op or model level: the id a failure prints)",
           metavar="ID"),
    Option("area", "run only these areas of the catalogue (comma-separated names, matched exactly: the module "
           "areas of harness.catalogue.AREAS, 'ops', 'models')", env="SYNCBN_AREA", metavar="NAMES"),
    Option("case_timeout", "seconds a case may take before its ranks count as hung", default=60.0, type=float,
           metavar="S", check=_positive_seconds),
    Option("start_timeout", "seconds the rank processes of a pool may take to start and join their process "
           "group; a rank that stalls longer fails the cases that needed it", default=120.0, type=float,
           metavar="S", check=_positive_seconds),
    Option("property_examples", "examples per property test (hypothesis max_examples; by default the profile's: "
           "quick 25, default 60, thorough 300); with pytest's --hypothesis-seed N this is the nightly soak",
           env="SYNCBN_PROPERTY_EXAMPLES", type=int, metavar="N", check=_positive_count),
    Option("strict_features", "count features the SUT declares unsupported (harness.sut.Unsupported) as failures",
           default=False, flag_only=True, rerun=True),
    Option("json", "write the structured results (JSON) here", metavar="PATH", pytest_flag="--json-results"),
    Option("report", "write the HTML report here (the main job writes syncbn-report.html unless told otherwise)",
           metavar="PATH", pytest_flag="--html-report", main_job_default="syncbn-report.html"),
)
_BY_NAME = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    return _BY_NAME[name]


def _record_class(name: str, options: tuple[Option, ...], doc: str, namespace: dict[str, Any] | None = None,
                  extra: tuple[tuple[str, Any, Any], ...] = ()) -> type:
    """A frozen dataclass with one field per option (its default the option's): Options and RankOptions are made
    from the table, so an option is written once."""
    cls = make_dataclass(name, [(o.name, Any, field(default=o.default)) for o in options] + list(extra), frozen=True,
                         namespace=namespace or {})
    cls.__module__, cls.__doc__ = __name__, doc  # picklable as harness.options.<name> (RankOptions travels)
    return cls


# What a rank process needs to know of the run (the options marked ``rank=True``), sent to every rank with every
# case as one value: harness.rank reads it, nothing else of the controller.
RankOptions = _record_class("RankOptions", tuple(o for o in OPTIONS if o.rank),
                            "The options that reach the rank processes (``Option(rank=True)``), as one frozen value.")


def _backend_choice(self) -> str | None:
    """The backend as harness.pool.resolve_backend takes it (None: the automatic rule)."""
    return None if self.backend == "auto" else self.backend


def _rank_options(self) -> Any:
    """The RankOptions of these options: what every rank gets with every case."""
    return RankOptions(**{o.name: getattr(self, o.name) for o in OPTIONS if o.rank})


def _spelled(self, name: str) -> str:
    """How the user gave option ``name``, for messages: its flag, or its environment variable."""
    return dict(self.sources).get(name, option(name).flag)


Options = _record_class("Options", OPTIONS, "The resolved options of a run (after environment variables and "
                        "defaults); ``device`` is never 'auto'. ``sources``: (name, how it was given) of the options "
                        "given by an environment variable, for messages (``spelled``).",
                        {"backend_choice": property(_backend_choice), "rank": property(_rank_options),
                         "spelled": _spelled},
                        extra=(("sources", Any, field(default=(), compare=False, repr=False)),))


def resolve(values: Mapping[str, Any], *, environ: Mapping[str, str] | None = None,
            resolve_device: bool = True, main_job: bool = False) -> Options:
    """The Options for raw ``values`` (name -> value or None): given value, else environment variable, else the
    default (the main job's, where an option has one); choices and rules checked (CaseError naming the option).
    ``device="auto"`` becomes cuda or cpu."""
    environ = os.environ if environ is None else environ
    resolved: dict[str, Any] = {}
    sources: list[tuple[str, str]] = []
    for opt in OPTIONS:
        value = values.get(opt.name)
        source = opt.flag
        if (value is None or value is False) and opt.env and environ.get(opt.env):
            value, source = environ[opt.env], f"{opt.env} (environment)"
            sources.append((opt.name, source))
            if opt.flag_only:
                value = value.lower() not in ("0", "false", "no", "")
            else:
                try:
                    value = opt.type(value)
                except ValueError:
                    raise CaseError(f"{source}={value!r}: not a valid {opt.type.__name__}") from None
        if value is None:
            value = opt.main_job_default if main_job and opt.main_job_default is not None else opt.default
        if opt.choices is not None and value not in opt.choices:
            raise CaseError(f"{source}={value!r}: must be one of {', '.join(opt.choices)}")
        if opt.check is not None:
            opt.check(opt.name, value)
        resolved[opt.name] = value
    if resolved["strict_compile"] and resolved["compile"] == "off":
        raise CaseError("--strict-compile: needs --compile BACKEND (with --compile off nothing is compiled, so no "
                        "graph can break)")
    if resolve_device and resolved["device"] == "auto":
        import torch

        resolved["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return Options(**resolved, sources=tuple(sources))


def add_argparse_options(parser: Any, names: tuple[str, ...] | None = None) -> None:
    """Add the table's options (all, or ``names``) to an argparse parser; every default is None, so ``resolve``
    can tell a value given from one defaulted."""
    for opt in OPTIONS:
        if names is not None and opt.name not in names:
            continue
        help_text = _help(opt)
        if opt.flag_only:
            parser.add_argument(opt.flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(opt.flag, default=None, type=opt.type, choices=opt.choices, metavar=opt.metavar,
                                help=help_text)


def add_pytest_options(group: Any, *, short: bool = False) -> None:
    """Add the table's options to a pytest option group as ``--syncbn-<flag>`` (``Option.pytest_name``), or, with
    ``short``, as their short spellings (``Option.short_pytest_name``, this repository's conftest.py), which set the
    same values (``dest``)."""
    for opt in OPTIONS:
        name = opt.short_pytest_name if short else opt.pytest_name
        help_text = f"the same as {opt.pytest_name}" if short else _help(opt)
        kwargs: dict[str, Any] = {"default": None, "help": help_text, "dest": f"syncbn_{opt.name}"}
        if opt.flag_only:
            group.addoption(name, action="store_true", **kwargs)
        else:
            group.addoption(name, type=opt.type, choices=opt.choices, metavar=opt.metavar, **kwargs)


def _help(opt: Option) -> str:
    extra = []
    if opt.default not in (None, False):
        extra.append(f"default {opt.default}")
    if opt.env:
        extra.append(f"env {opt.env}")
    return opt.help + (f" [{'; '.join(extra)}]" if extra else "")


def rerun_command(case_id: str, options: Options, *, torchrun_world_size: int | None = None) -> str:
    """The one command that reruns exactly ``case_id`` with the options that change its result: the main job
    (``python -m harness run --case ID ...``), or under torchrun for a case run by harness.launch."""
    if torchrun_world_size is not None:
        parts = ["torchrun", f"--nproc-per-node={torchrun_world_size}", "-m", "harness.launch", "--case", case_id]
    else:
        parts = ["python", "-m", "harness", "run", "--case", case_id]
    for opt in OPTIONS:
        value = getattr(options, opt.name)
        if not opt.rerun or value == opt.default or value is None:
            continue
        parts += [opt.flag] if opt.flag_only else [opt.flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)
