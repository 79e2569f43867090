"""One image's output files as a set: written whole, replacing the previous set of its stem.

The rule (README "Output files"): for an image written as ``<stem>``, its outputs
(``<stem>.npz``, ``<stem>.json``, ``<stem>.glb``, ``<stem>_person<k>.obj``, ``<stem>_overlay.png``/``.jpg``)
are first written into a hidden staging folder inside the output folder; only when every file
of the set is written are they moved into place (renames, same file system), and then that
stem's earlier outputs that the new set does not contain are removed (e.g. the
``photo_person1..4.obj`` of an earlier four-person run next to a new one-person ``photo.npz``).
If anything fails while writing (full disk, permissions), the staging folder is removed and the
output folder keeps what it had: a failed image leaves none of its files. The move-and-clean
step holds an exclusive lock on the output folder (POSIX ``flock``), so two runs writing the
same stem at once leave one run's complete set, never a mix.

Folder inputs skip these files (:func:`is_output_name`), so re-running on an output folder does
not treat ``*_overlay.png``/``.jpg`` as a new photo.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

def stem_outputs(folder: str | os.PathLike, stem: str) -> list[Path]:
    """The files in ``folder`` that are outputs of ``stem`` (by name; see the module rule)."""
    folder = Path(folder)
    pat = re.compile(re.escape(stem) + r"(?:_person\d+\.obj|_overlay\.(?:png|jpg)|\.npz|\.json|\.glb)")
    try:
        return sorted(p for p in folder.iterdir() if pat.fullmatch(p.name) and p.is_file())
    except OSError:
        return []


def is_output_name(name: str) -> bool:
    """True for an ``*_overlay.png`` / ``*_overlay.jpg`` file name: an overlay this product wrote, not a photo."""
    return name.lower().endswith(("_overlay.png", "_overlay.jpg"))


def write_output_set(folder: str | os.PathLike, stem: str,
                     write: Callable[[Path], list[Path]]) -> list[Path]:
    """Write one image's outputs as a set (module rule) and return their final paths.

    Args:
        folder: the output folder (exists).
        stem: the image's output stem.
        write: called with a staging folder; writes the set there (file names as final) and
            returns the paths written.
    Raises:
        whatever ``write`` raises (e.g. OSError ENOSPC), after removing everything of this set.
    """
    folder = Path(folder)
    staging = Path(tempfile.mkdtemp(prefix=".deforhmr-", dir=folder))
    moved: list[Path] = []
    try:
        staged = write(staging)
        with _locked(folder):
            for p in staged:
                dst = folder / Path(p).name
                os.replace(p, dst)
                moved.append(dst)
            keep = {p.name for p in moved}
            for old in stem_outputs(folder, stem):
                if old.name not in keep:
                    old.unlink(missing_ok=True)
        return moved
    except BaseException:
        for p in moved:
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on the folder itself (no lock file left behind); no-op without flock."""
    try:
        import fcntl
    except ImportError:            # Windows: no concurrent-run guarantee
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
