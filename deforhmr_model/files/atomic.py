"""Writing files so that a reader never sees a partial one: temporary file + rename.

The one home of this mechanism; every module that writes a user-visible file
(results, exports, images, checkpoints, converted bodies, training state,
evaluation reports) goes through :func:`atomic_write` or :func:`atomic_path`.

How: the data is written to a new, uniquely named hidden file in the
destination's own folder (same file system, so the rename cannot turn into a
copy), then :func:`os.replace` moves it over the destination in one step (on
POSIX and on Windows). On any error, including KeyboardInterrupt, the
temporary file is removed and the destination is left as it was.

Permissions: the temporary file is created with mode ``0o666`` and the
operating system applies the process umask, exactly as for a plain ``open(path,
"wb")``; the process umask is never read or changed (changing it would race
with other threads).
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

__all__ = ["atomic_write", "atomic_path"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fileobj)`` on a binary temporary file in ``path``'s folder, then rename it to
    ``path``.

    Returns:
        ``Path(path)``.
    Raises:
        OSError: the folder is missing or not writable (nothing is left behind); any error
        raised by ``write`` propagates after the temporary file is removed.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary file's path in ``path``'s folder for a writer that needs a file
    name (``torch.save(obj, tmp)``, ``image.save(tmp)``); on a clean exit it is renamed to
    ``path``, on an error removed.

    The writer must have closed the file when the ``with`` block ends (Windows cannot rename
    an open file).

    Raises:
        OSError: the folder is missing or not writable.
    """
    path = Path(path)
    tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> Path:
    """Create a new empty file next to ``path`` (mode 0o666 minus the umask, applied by the OS)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {path}")
