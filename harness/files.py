"""Writing the harness's output files: atomically (``write_atomically``), and checked before a run starts by
creating them where they will be written (``check_writable``), so that an unwritable path is a usage error before
the first case, never a traceback after the last one."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import CaseError

__all__ = ["write_atomically", "check_writable"]


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, then rename it into place (a reader never sees half a
    file, and a run killed while writing leaves the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def check_writable(flag: str, path: str | os.PathLike[str]) -> None:
    """``path`` can be written as ``write_atomically`` will write it: not a directory, under a directory (the
    missing ones are created now), and the temporary file next to it can actually be created and renamed over it.
    CaseError ("<flag>=<path>: <rule>") otherwise."""
    given = str(path)
    target = Path(os.path.abspath(given))
    if target.is_dir():
        raise CaseError(f"{flag}={given!r}: is a directory; give a file path")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CaseError(f"{flag}={given!r}: {parent} is a file, not a directory, so {target.name} cannot be written "
                        f"under it")
    if target.exists() and not os.access(target, os.W_OK):
        raise CaseError(f"{flag}={given!r}: the file exists and is not writable")
    tmp = _temporary(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "x", encoding="utf-8"):
            pass
    except FileExistsError:  # a run killed while writing left it (or another run is writing): it is not ours
        return
    except OSError as exc:
        raise CaseError(f"{flag}={given!r}: cannot create a file in {target.parent} ({exc.strerror or exc})") from None
    try:
        os.unlink(tmp)  # only the probe this check created
    except OSError:
        pass
