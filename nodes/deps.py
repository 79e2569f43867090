"""The Python packages the nodes need (``requirements.txt``), checked without importing them.

ComfyUI-Manager installs a pack's ``requirements.txt`` into ComfyUI's Python; a user who cloned
the pack by hand may not have. Instead of a ``ModuleNotFoundError`` deep inside a node, the pack
logs once at import which packages are missing and the exact pip command, and every node raises
:class:`MissingRequirementsError` with the same one-line message before it starts.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import sys
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("deforhmr.nodes")

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"

# distribution name (as in requirements.txt) -> the module it provides
IMPORT_NAMES = {
    "numpy": "numpy", "scipy": "scipy", "smplx": "smplx", "roma": "roma", "safetensors": "safetensors",
    "trimesh": "trimesh", "pygltflib": "pygltflib", "opencv-python-headless": "cv2", "pillow": "PIL",
    "tqdm": "tqdm", "ai-edge-litert": "ai_edge_litert",
}


class MissingRequirementsError(ImportError):
    """Packages from ``requirements.txt`` are not installed; the message gives the pip command."""


def requirement_names(path: Path = REQUIREMENTS) -> list[str]:
    """Distribution names listed in ``requirements.txt`` (comments and version specifiers dropped)."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].lower())
    return names


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


@lru_cache(maxsize=1)
def missing() -> tuple[str, ...]:
    """Distribution names from ``requirements.txt`` whose module cannot be found (cached)."""
    names = requirement_names() if REQUIREMENTS.is_file() else list(IMPORT_NAMES)
    return tuple(n for n in names if not _installed(IMPORT_NAMES.get(n, n.replace("-", "_"))))


def pip_command() -> str:
    """The exact command that installs the pack's requirements into this Python."""
    return f'"{sys.executable}" -m pip install -r "{REQUIREMENTS}"'


def message() -> str | None:
    """One line naming the missing packages and the fix, or None when everything is installed."""
    gone = missing()
    if not gone:
        return None
    return (f"DeforHMR nodes need the Python package{'s' if len(gone) > 1 else ''} {', '.join(gone)} "
            f"(not installed in this Python). Install the pack's requirements, then restart ComfyUI: "
            f"{pip_command()}")


def warn_once() -> None:
    """Log :func:`message` at import time (once per process); never raises."""
    try:
        msg = message()
    except Exception as e:  # unreadable requirements.txt: the nodes still load
        log.warning("DeforHMR: could not check the requirements: %s", e)
        return
    if msg:
        log.warning(msg)


def require() -> None:
    """Raise :class:`MissingRequirementsError` (one line, the pip command) when a package is missing."""
    msg = message()
    if msg:
        raise MissingRequirementsError(msg)
