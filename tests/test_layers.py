"""The shape of the package holds: the import-linter contracts in pyproject.toml (entry points above reports above
the engine above the core above the reference; the reference numpy only; rank processes import no controller code;
pytest only in the pytest entry points) are kept, an upward import breaks them, and no import cycle exists."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# One root package: reports, reference and cases are harness.reports, harness.reference, harness.cases (the
# checkout's harness/<name> links to the top-level <name>/, which the wheel installs inside harness).
PACKAGES = ("harness",)
CHECKOUT_DIRS = ("harness", "reports", "reference", "cases")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed "
                                "(requirements-ci.txt installs it)")


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=120)


@pytest.mark.processes
def test_the_layer_contracts_are_kept():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.processes
def test_an_upward_import_breaks_a_contract(tmp_path):
    for directory in CHECKOUT_DIRS:  # the links of harness/ keep pointing at the copies
        shutil.copytree(ROOT / directory, tmp_path / directory, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    spec = tmp_path / "harness" / "spec.py"
    spec.write_text(spec.read_text() + "\nfrom . import cli  # noqa: E402,F401 - the core importing an entry point\n")
    done = _lint(tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "BROKEN" in done.stdout and "harness.spec -> harness.cli" in done.stdout, done.stdout[-3000:]


def test_no_import_cycle_anywhere():
    """Every import counts, those inside functions too: no module reaches itself through its imports."""
    import grimp

    graph = grimp.build_graph(*PACKAGES)
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    cycles = [m for m in modules if any(d == m or m in graph.find_upstream_modules(d)
                                        for d in graph.find_modules_directly_imported_by(m))]
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_every_module_has_a_layer():
    """A module missing from the layers contract would be unconstrained: every module of the packages is in one
    layer (itself, or a package listed as a layer)."""
    import tomllib

    import grimp

    contract = next(c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
                    ["contracts"] if c["type"] == "layers")
    layered = {name.strip() for layer in contract["layers"] for name in layer.replace("|", ":").split(":")}
    graph = grimp.build_graph(*PACKAGES)
    loose = [m for m in sorted(graph.modules) if m.split(".")[0] in PACKAGES and m not in ("harness", "harness.reports")
             and not any(m == name or m.startswith(name + ".") for name in layered)]
    assert loose == [], f"modules in no layer of pyproject.toml's layers contract: {loose}"
