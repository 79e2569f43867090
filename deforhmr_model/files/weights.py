"""Where model files are looked for, and the error raised when one is missing.

A :class:`WeightStore` is one search path; its owner decides which folders it holds
(the node pack owns one that knows ComfyUI's model folders; :class:`HMRPipeline` owns
one for its own look-ups). Nothing here is process-wide: the module functions
(:func:`find_file`, :func:`require_file`, :func:`search_dirs`) use a fresh default
store unless given one.

Search order for a file name (first hit wins):

1. an explicit path given by the caller (used as is);
2. ``$DEFORHMR_WEIGHTS`` (one folder, or several separated by ``os.pathsep``; read at
   each look-up);
3. the store's own folders (:meth:`WeightStore.add_dir`; the ComfyUI node pack adds
   ``models/deforhmr`` and ``models/smpl``);
4. ``~/.cache/deforhmr``;
5. the package's own ``deforhmr_model/weights/`` folder (shipped, small, permissively
   licensed files; package data, so it is there in editable, wheel and ComfyUI installs).

``deforhmr_model/weights/manifest.json`` lists every file the product can use (purpose,
licence, where to get it, where it goes); :func:`manifest_entry` reads it so
that error messages tell the user exactly what to do.
"""
from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
REPO_WEIGHTS = SHIPPED_WEIGHTS  # former name (the folder used to sit at the repository root)
_log = logging.getLogger("deforhmr")


class MissingModelFileError(FileNotFoundError):
    """A model file is not installed. The message names the file, the folders searched and the fix."""


class WeightStore:
    """One search path for model files (see the module docstring for the order).

    Args:
        extra_dirs: folders searched after ``$DEFORHMR_WEIGHTS``, in order.
    """

    def __init__(self, extra_dirs: Iterable[str | os.PathLike] = ()):
        self.extra_dirs: list[Path] = []
        self._noticed: set[str] = set()
        for d in extra_dirs:
            self.add_dir(d)

    def add_dir(self, path: str | os.PathLike) -> None:
        """Search ``path`` too (after ``$DEFORHMR_WEIGHTS`` and the folders added before)."""
        p = Path(path)
        if p not in self.extra_dirs:
            self.extra_dirs.append(p)

    def search_dirs(self) -> list[Path]:
        """The folders searched, in order."""
        env = [Path(p) for p in os.environ.get("DEFORHMR_WEIGHTS", "").split(os.pathsep) if p]
        return [*env, *self.extra_dirs, Path.home() / ".cache" / "deforhmr", SHIPPED_WEIGHTS]

    def find(self, name: str, subdirs: tuple[str, ...] = ("",)) -> Path | None:
        """First existing ``dir/sub/name`` over :meth:`search_dirs` and ``subdirs``, or None;
        a path with a folder part is returned as is when it exists."""
        p = Path(name)
        if p.is_absolute() or len(p.parts) > 1:
            return p if p.is_file() else None
        for d in self.search_dirs():
            for sub in subdirs:
                cand = d / sub / name
                if cand.is_file():
                    return cand
        return None

    def require(self, name: str, subdirs: tuple[str, ...] = ("",)) -> Path:
        """Like :meth:`find` but raises :class:`MissingModelFileError` naming the file, the
        folders searched and where to get it (from the manifest)."""
        found = self.find(name, subdirs)
        if found is not None:
            return found
        p = Path(name)
        if p.is_absolute() or len(p.parts) > 1:
            raise MissingModelFileError(f"model file not found: {p} (the path given does not exist)")
        entry = manifest_entry(name)
        where = ", ".join(str(d / s) if s else str(d) for d in self.search_dirs() for s in subdirs)
        how = (f" Get it from {entry['source']} ({entry['license']}) and put it in one of those "
               f"folders (or set DEFORHMR_WEIGHTS)." if entry else
               " Put it in one of those folders or set DEFORHMR_WEIGHTS to its folder.")
        raise MissingModelFileError(f"model file {name!r} not found; searched: {where}.{how}")

    def notice_once(self, key: str, message: str, *args) -> None:
        """Log ``message % args`` as a warning on the "deforhmr" logger the first time this
        store sees ``key`` (e.g. "the open body is used because SMPL is not installed")."""
        if key not in self._noticed:
            self._noticed.add(key)
            _log.warning(message, *args)


def search_dirs(store: WeightStore | None = None) -> list[Path]:
    """The folders ``store`` (default: a fresh :class:`WeightStore`) searches, in order."""
    return (store or WeightStore()).search_dirs()


def find_file(name: str, subdirs: tuple[str, ...] = ("",), store: WeightStore | None = None) -> Path | None:
    """:meth:`WeightStore.find` on ``store`` (default: a fresh :class:`WeightStore`)."""
    return (store or WeightStore()).find(name, subdirs)


def require_file(name: str, subdirs: tuple[str, ...] = ("",), store: WeightStore | None = None) -> Path:
    """:meth:`WeightStore.require` on ``store`` (default: a fresh :class:`WeightStore`)."""
    return (store or WeightStore()).require(name, subdirs)


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
