"""The words that point somewhere resolve: every dotted name of the harness's packages (``harness.kinds.settle``)
in a docstring, a comment, a message or a document names a module or an attribute that exists, and every
repository file a document or a docstring names (``docs/semantics.md``, ``harness/outcomes.py``) is there."""
from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "reports", "reference")
DOTTED = re.compile(r"(?<![\w./-])((?:harness|reports|reference)(?:\.[A-Za-z_]\w*)+)(?![\w/-])")
FILE_TYPES = r"py|md|toml|sh|json|txt|gz|html|ini|cfg|yml|yaml"
PATH = re.compile(rf"(?<![\w./-])((?:harness|reports|reference|cases|tests|docs|scripts)/[\w./-]*\.(?:{FILE_TYPES}))\b")
SOURCES = sorted(p for pkg in (*PACKAGES, "cases", "tests", "scripts") for p in (ROOT / pkg).rglob("*.py"))
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def _prose(path: Path) -> str:
    """A source file's comments and plain string constants (docstrings, messages: what a reader follows; not
    f-strings, whose names are code), or a document's whole text."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    comments = [t.string for t in tokens if t.type == tokenize.COMMENT]
    tree = ast.parse(text)
    formatted = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    strings = [node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in formatted]
    return "\n".join(comments + strings)


def _resolves(dotted: str) -> bool:
    parts = dotted.rstrip(".").split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("path", SOURCES + DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dotted_name_and_path_resolves(path: Path) -> None:
    prose = _prose(path)
    names = sorted({m.group(1).rstrip(".") for m in DOTTED.finditer(prose)
                    if not re.fullmatch(FILE_TYPES, m.group(1).rsplit(".", 1)[-1])})  # reports.md is a file
    dangling = [n for n in names if not _resolves(n)]
    paths = sorted({m.group(1).rstrip(".") for m in PATH.finditer(prose)})
    missing = [p for p in paths if not (ROOT / p).exists() and not any(ROOT.glob(p))]
    assert dangling == [] and missing == [], f"names that resolve to nothing: {dangling}; missing files: {missing}"
