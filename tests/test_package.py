"""The harness as a kernel team's repository uses it (issue 18): the wheel, installed into a fresh environment (on
top of this one's torch: nothing downloaded), runs from an unrelated directory that holds the project's own
``reports`` and ``cases`` packages; its pytest plugin joins the project's pytest run only when asked; docs/ci.md's
shell recipe gates a pull request with it; the wheel holds every file the code reads."""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness

ROOT = Path(__file__).resolve().parent.parent
CASE = "w2_n3.3_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
CORRECT = "from harness.mutants import allreduce_syncbn as factory  # noqa: F401 - a correct SyncBN without torch's\n"
BROKEN = "from harness.mutants import mean_of_means as factory  # noqa: F401 - means averaged without their counts\n"
DECOY = '''import os

if os.environ.get("DECOYS_REFUSE"):
    raise ImportError("the project's own {name} package was imported")
DECOY = "the project's own {name}"
'''
OWN_TEST = '''from cases import DECOY as cases_decoy
from reports import DECOY as reports_decoy


def test_the_projects_own_packages():
    assert (reports_decoy, cases_decoy) == ("the project's own reports", "the project's own cases")
'''
# What the outer environment may set that would change what the installed harness or its pytest see.
_NOT_INHERITED = ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "GIT_DIR",
                  "GIT_WORK_TREE", "GIT_INDEX_FILE")


@dataclass
class Installed:
    """A fresh virtual environment with the wheel installed; this environment's packages (torch, pytest, ...) are
    visible to it through a .pth file, after its own."""

    wheel: Path
    venv: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED and not k.startswith("SYNCBN_")}
        return {**env, "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(self.venv),
                "OMP_NUM_THREADS": "1", **extra}

    def run(self, *command: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=cwd, env=self.env(**extra), capture_output=True, text=True, timeout=300)


def _build_and_install(where: Path) -> Installed:
    """Copy the package's sources (the build writes build/ and *.egg-info beside them), build the wheel with the
    setuptools at hand (no isolation, no index: offline), install it with --no-deps into a new venv."""
    source = where / "src"
    for name in ("harness", "reports", "reference", "cases"):  # harness/reports, ... stay links into the copy
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index", "-w",
                    str(where / "dist")], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (where / "dist").glob("syncbn_harness-*.whl")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    packages = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (packages / "outer-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(venv / "bin" / "python"), *pip[1:], "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    # The venv inside a git repository with a commit, as a project's .venv is: not the harness's revision.
    for args in (["init", "-q"], ["-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "-q",
                                  "--allow-empty", "-m", "a project"]):
        subprocess.run(["git", *args], cwd=where, check=True, capture_output=True, timeout=60)
    return Installed(wheel, venv)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Built once per session: pytest-xdist's workers share it (the first one builds it, under a lock)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel needs setuptools>=70.1 (requirements-ci.txt installs it)")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    where = shared / "syncbn-installed"
    with open(shared / "syncbn-installed.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = where / "done"
        if not done.exists():
            shutil.rmtree(where, ignore_errors=True)
            installed = _build_and_install(where)
            done.write_text(str(installed.wheel))
        return Installed(Path(done.read_text()), where / "venv")


def _project(tmp_path: Path) -> Path:
    """A project's repository: its own reports and cases packages, its own test, a correct and a broken SUT file."""
    project = tmp_path / "project"
    for name in ("reports", "cases"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(DECOY.format(name=name))
    (project / "test_own.py").write_text(OWN_TEST)
    (project / "correct.py").write_text(CORRECT)
    (project / "broken.py").write_text(BROKEN)
    return project


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-5000:]}\n{done.stderr[-3000:]}"


@pytest.mark.processes
def test_the_wheel_holds_the_package_and_every_file_it_reads(installed: Installed) -> None:
    """Everything under harness/ (its links into reports/, reference/ and cases/ followed), data files included
    (harness/known_deviations.toml), and nothing else: one top-level package, the command and the plugin."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt")).rsplit("/", 1)[0]
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        top_level = wheel.read(f"{info}/top_level.txt").decode().split()
    source = {(Path(directory) / file).relative_to(ROOT).as_posix()
              for directory, _, files in os.walk(ROOT / "harness", followlinks=True)
              if "__pycache__" not in directory for file in files if not file.endswith(".pyc")}
    packaged = {n for n in names if not n.startswith(info)}
    assert packaged == source, (f"in the source, not in the wheel: {sorted(source - packaged)}; "
                                f"in the wheel, not in the source: {sorted(packaged - source)}")
    assert {"harness/known_deviations.toml", "harness/reports/gate.py", "harness/reference/ops.py",
            "harness/cases/test_catalogue.py"} <= packaged
    assert top_level == ["harness"]
    assert re.search(r"\[console_scripts\]\nsyncbn-harness = harness\.cli:console\n", entry_points), entry_points
    assert re.search(r"\[pytest11\]\nharness\.pytest_entry = harness\.pytest_entry\n", entry_points), entry_points


@pytest.mark.processes
def test_the_installed_commands_run_from_a_project_with_its_own_reports_and_cases(installed: Installed,
                                                                                   tmp_path: Path) -> None:
    project = _project(tmp_path)
    refuse = {"DECOYS_REFUSE": "1"}  # importing the project's reports or cases now raises
    decoy = installed.run("python", "-c", "import reports", cwd=project, **refuse)
    assert "the project's own reports package was imported" in decoy.stderr, _output(decoy)  # there to be found
    where = installed.run("python", "-c", "import harness; print(harness.__file__)", cwd=project, **refuse)
    assert where.stdout.startswith(str(installed.venv)), _output(where)  # the wheel's, not this checkout's

    passed = installed.run("syncbn-harness", "run", "--sut", "correct.py:factory", "--case", CASE, "--json",
                           "results.json", cwd=project, **refuse)
    assert passed.returncode == 0, _output(passed)
    assert "SyncBN conformance: PASSED: 1 case (1 passed)" in passed.stdout, _output(passed)
    assert "SyncBN conformance: PASSED" in (project / "syncbn-report.html").read_text()
    environment = json.loads((project / "results.json").read_text())["environment"]
    assert (environment["harness_version"], environment["harness_revision"]) == (harness.__version__, "unknown")

    failed = installed.run("python", "-m", "harness", "run", "--sut", "broken.py:factory", "--case", CASE,
                           "--report", "broken.html", cwd=project, **refuse)
    assert failed.returncode == 1, _output(failed)
    assert f"rerun: python -m harness run --case {CASE} --sut {project / 'broken.py'}:factory" in failed.stdout
    assert "SyncBN conformance: FAILED" in (project / "broken.html").read_text()

    summary = installed.run("syncbn-harness", "report", "--results-in", "results.json", cwd=project, **refuse)
    assert summary.returncode == 0 and "SyncBN conformance: PASSED" in summary.stdout, _output(summary)


@pytest.mark.processes
def test_the_pytest_plugin_joins_a_projects_run_only_when_asked(installed: Installed, tmp_path: Path) -> None:
    project = _project(tmp_path)
    pytest_ = ("python", "-m", "pytest", "-p", "no:cacheprovider", "-rA")
    plain = installed.run(*pytest_, cwd=project)
    assert plain.returncode == 0 and "1 passed" in plain.stdout, _output(plain)
    # Installed, not asked for: pytest lists the plugin, and nothing of the harness runs or reports.
    assert "syncbn-harness-" in plain.stdout and "syncbn-harness:" not in plain.stdout, _output(plain)
    assert "test_catalogue" not in plain.stdout and "SyncBN conformance" not in plain.stdout, _output(plain)
    light = installed.run("python", "-c", "import sys, harness.pytest_entry; assert 'torch' not in sys.modules",
                          cwd=project)
    assert light.returncode == 0, _output(light)  # what every pytest start of the project imports: no torch

    joined = installed.run(*pytest_, "--syncbn-sut", "correct.py:factory", "--syncbn-case", CASE,
                           "--syncbn-report", "suite.html", cwd=project)
    assert joined.returncode == 0, _output(joined)
    assert "PASSED test_own.py::test_the_projects_own_packages" in joined.stdout, _output(joined)
    assert f"PASSED test_catalogue.py::test_case[{CASE}]" in joined.stdout, _output(joined)
    assert "SyncBN conformance: PASSED" in (project / "suite.html").read_text()

    broken = installed.run(*pytest_, "--syncbn-case", CASE, cwd=project, SYNCBN_SUT="broken.py:factory")
    assert broken.returncode == 1, _output(broken)
    assert "PASSED test_own.py::test_the_projects_own_packages" in broken.stdout, _output(broken)
    assert f"FAILED test_catalogue.py::test_case[{CASE}]" in broken.stdout, _output(broken)


def test_another_syncbn_option_without_the_sut_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin never ignores what it was told: --syncbn-profile alone asks for a suite with no SUT named."""
    from harness import pytest_entry

    monkeypatch.delenv("SYNCBN_SUT", raising=False)

    def config(**given: object) -> SimpleNamespace:
        return SimpleNamespace(pluginmanager=SimpleNamespace(has_plugin=lambda name: False),
                               getoption=lambda dest: given.get(dest))

    pytest_entry.pytest_configure(config())  # nothing given: nothing done
    with pytest.raises(pytest.UsageError, match=r"^--syncbn-profile: the conformance suite runs only when "
                                                r"--syncbn-sut SPEC \(or SYNCBN_SUT\) names"):
        pytest_entry.pytest_configure(config(syncbn_profile="quick"))


def _recipe() -> str:
    """docs/ci.md's shell recipe, exactly as a reader copies it."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "ci.md").read_text(), flags=re.S)
    (script,) = [b for b in blocks if b.startswith("#!/usr/bin/env bash\n# syncbn-gate.sh")]
    return script


@pytest.mark.processes
def test_the_ci_shell_recipe_gates_a_pull_request(installed: Installed, tmp_path: Path) -> None:
    """A kernel repository: the PR leaves the SyncBN as the base branch has it (exit 0, the baseline recorded from
    a run on the base branch); then the PR breaks it and is judged against that stored baseline (exit 1)."""
    script = tmp_path / "syncbn-gate.sh"
    script.write_text(_recipe())
    repo = tmp_path / "kernels"
    repo.mkdir()
    (repo / "my_bn.py").write_text(CORRECT)

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args], cwd=repo,
                       env=installed.env(), check=True, capture_output=True, timeout=60)

    git("init", "-q", "-b", "main")
    git("add", "my_bn.py")
    git("commit", "-q", "-m", "a correct SyncBatchNorm")
    git("switch", "-q", "-c", "pr")
    first, second = tmp_path / "first", tmp_path / "second"
    gate = ("bash", str(script), "--case", CASE)
    same = installed.run(*gate, cwd=repo, SYNCBN_SUT="my_bn.py:factory", BASE="main", OUT=str(first))
    assert same.returncode == 0, _output(same)
    assert "SyncBN conformance: PASSED" in (first / "base-report.html").read_text()  # the run on main
    assert "SyncBN conformance: PASSED" in (first / "syncbn-report.html").read_text()  # the PR's
    assert "gate: PASSED" in same.stdout, _output(same)
    assert f"harness {harness.__version__}, " in same.stdout, _output(same)  # installed: its version, no revision

    (repo / "my_bn.py").write_text(BROKEN)
    git("commit", "-q", "-am", "a faster SyncBatchNorm")
    broken = installed.run(*gate, cwd=repo, SYNCBN_SUT="my_bn.py:factory", BASELINE=str(first / "baseline.json"),
                           OUT=str(second))
    assert broken.returncode == 1, _output(broken)
    assert f"rerun: python -m harness run --case {CASE}" in broken.stdout, _output(broken)
    assert "SyncBN conformance: FAILED" in (second / "syncbn-report.html").read_text()
    assert not (second / "base-results.json").exists()  # a stored baseline: nothing ran on the base branch
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert len(worktrees.stdout.splitlines()) == 1, worktrees.stdout  # the base branch's checkout is gone


def test_gloo_is_pinned_to_loopback_on_one_host_only() -> None:
    """harness.launch: every rank on this host, gloo over loopback unless told otherwise; across hosts the user
    names the interface that reaches the others (docs/gpu.md, "Several nodes")."""
    from harness.launch import loopback_on_one_host

    if not os.path.isdir("/sys/class/net/lo"):
        pytest.skip("no loopback interface named lo here")
    one_host: dict[str, str] = {}
    loopback_on_one_host(one_host, world_size=2, local_world_size=2)
    assert one_host == {"GLOO_SOCKET_IFNAME": "lo"}
    two_hosts: dict[str, str] = {}
    loopback_on_one_host(two_hosts, world_size=4, local_world_size=2)
    assert two_hosts == {}
    chosen = {"GLOO_SOCKET_IFNAME": "eth1"}
    loopback_on_one_host(chosen, world_size=2, local_world_size=2)
    assert chosen == {"GLOO_SOCKET_IFNAME": "eth1"}


def test_the_suites_hypothesis_profile_is_registered_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A project's hypothesis tests keep the profile they run with: the suite's is registered under its own name
    and applied to its property tests alone (harness.pytest_plugin.hypothesis_settings)."""
    from hypothesis import settings

    from harness.strategies import register_hypothesis_profile

    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)

    before = settings.get_current_profile_name()
    assert register_hypothesis_profile("quick", 7) == "syncbn-ci-quick-7"
    assert settings.get_current_profile_name() == before
    assert settings.get_profile("syncbn-ci-quick-7").max_examples == 7
