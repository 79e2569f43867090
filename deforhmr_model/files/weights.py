"""Where model files are looked for, and the error raised when one is missing.

Search order for a file name (first hit wins):

1. an explicit path given by the caller (used as is);
2. ``$DEFORHMR_WEIGHTS`` (one folder, or several separated by ``os.pathsep``);
3. folders registered at run time with :func:`add_search_dir` (the ComfyUI
   node pack registers ``models/deforhmr`` and ``models/smpl``);
4. ``~/.cache/deforhmr``;
5. the package's own ``deforhmr_model/weights/`` folder (shipped, small, permissively
   licensed files; package data, so it is there in editable, wheel and ComfyUI installs).

``deforhmr_model/weights/manifest.json`` lists every file the product can use (purpose,
licence, where to get it, where it goes); :func:`manifest_entry` reads it so
that error messages tell the user exactly what to do.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
REPO_WEIGHTS = SHIPPED_WEIGHTS  # former name (the folder used to sit at the repository root)
_EXTRA_DIRS: list[Path] = []


class MissingModelFileError(FileNotFoundError):
    """A model file is not installed. The message names the file, the folders searched and the fix."""


def add_search_dir(path: str | os.PathLike) -> None:
    """Register one more folder to search (after ``$DEFORHMR_WEIGHTS``)."""
    p = Path(path)
    if p not in _EXTRA_DIRS:
        _EXTRA_DIRS.append(p)


def search_dirs() -> list[Path]:
    """The folders searched, in order."""
    env = [Path(p) for p in os.environ.get("DEFORHMR_WEIGHTS", "").split(os.pathsep) if p]
    return [*env, *_EXTRA_DIRS, Path.home() / ".cache" / "deforhmr", SHIPPED_WEIGHTS]


def find_file(name: str, subdirs: tuple[str, ...] = ("",)) -> Path | None:
    """First existing ``dir/sub/name`` over :func:`search_dirs` and ``subdirs``, or None."""
    p = Path(name)
    if p.is_absolute() or len(p.parts) > 1:
        return p if p.is_file() else None
    for d in search_dirs():
        for sub in subdirs:
            cand = d / sub / name
            if cand.is_file():
                return cand
    return None


def require_file(name: str, subdirs: tuple[str, ...] = ("",)) -> Path:
    """Like :func:`find_file` but raises :class:`MissingModelFileError` with the fix."""
    found = find_file(name, subdirs)
    if found is not None:
        return found
    p = Path(name)
    if p.is_absolute() or len(p.parts) > 1:
        raise MissingModelFileError(f"model file not found: {p} (the path given does not exist)")
    entry = manifest_entry(name)
    where = ", ".join(str(d / s) if s else str(d) for d in search_dirs() for s in subdirs)
    how = (f" Get it from {entry['source']} ({entry['license']}) and put it in one of those "
           f"folders (or set DEFORHMR_WEIGHTS)." if entry else
           " Put it in one of those folders or set DEFORHMR_WEIGHTS to its folder.")
    raise MissingModelFileError(f"model file {name!r} not found; searched: {where}.{how}")


def manifest() -> dict:
    """``weights/manifest.json`` as a dict (``files``: every model file; ``downloads``: the
    models ``deforhmr download`` knows)."""
    return _manifest()


@lru_cache(maxsize=1)
def _manifest() -> dict:
    path = SHIPPED_WEIGHTS / "manifest.json"
    if not path.is_file():
        return {"files": []}
    return json.loads(path.read_text())


def manifest_entry(name: str) -> dict | None:
    """The manifest's entry for a file name (keys: name, purpose, license, source, destination), or None."""
    for entry in _manifest()["files"]:
        if entry["name"] == name:
            return entry
    return None
