"""Reading ``.npz`` files that may be hostile: sizes checked before anything is allocated.

``np.load(path)[key]`` allocates whatever the entry's header declares: a 4 MB file can hold a
4 GB array of zeros (an "npz bomb"). :func:`read_npz` opens the zip itself, reads only the
entries the caller selects, and checks each one's ``.npy`` header (shape, dtype) against the zip
directory and the limits before loading it. Object (pickled) entries are never unpickled.

numpy + stdlib only (no torch), so body-model tools in other environments can use it.
"""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

MAX_ENTRY_BYTES = 512 * 2**20     # one array; SMPL-X posedirs (10475, 3, 486) f64 is 122 MB
MAX_TOTAL_BYTES = 1024 * 2**20    # all selected arrays together
_HEADER_LIMIT = 10000             # numpy's own default max header size
_KINDS = "biufcSU"                # bool, ints, floats, complex, bytes, str; no objects/void/datetime


class NpzReadError(ValueError):
    """An ``.npz`` file is unreadable, truncated, or declares an entry that is refused."""


class ObjectEntry:
    """Placeholder for an entry stored as pickled Python objects (never unpickled)."""

    def __init__(self, key: str):
        self.key = key

    def __repr__(self) -> str:
        return f"ObjectEntry({self.key!r})"


def read_npz(path: str | os.PathLike, keys: Iterable[str] | Callable[[str], bool] | None = None, *,
             max_entry_bytes: int = MAX_ENTRY_BYTES,
             max_total_bytes: int = MAX_TOTAL_BYTES) -> dict[str, np.ndarray | ObjectEntry]:
    """The selected arrays of an ``.npz`` file, each checked before it is allocated.

    Args:
        path: the ``.npz`` file.
        keys: the entry names to read (an iterable, or a predicate on the name); None = all.
            Other entries are never decompressed.
        max_entry_bytes / max_total_bytes: limits on the declared size (shape x itemsize) of one
            entry and of all selected entries.
    Returns:
        name -> array (as stored), or :class:`ObjectEntry` for an object-dtype entry (not read).
    Raises:
        NpzReadError: not a zip/npz, truncated or corrupt, a header that is malformed or disagrees
            with the zip directory, an unsupported dtype, or a declared size over a limit. The
            message names the file, the entry and the problem.
    """
    path = Path(path)
    select = _selector(keys)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise NpzReadError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    with zf:
        plan = []
        total = 0
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or not select(info.filename[:-4]):
                continue
            key = info.filename[:-4]
            shape, dtype, nbytes = _check_header(zf, info, path, max_entry_bytes)
            if dtype is not None:
                total += nbytes
            plan.append((key, info, dtype))
        if total > max_total_bytes:
            raise NpzReadError(f"{path}: the arrays read declare {_mb(total)} in all, more than the "
                               f"{_mb(max_total_bytes)} limit; the file is not a body/result file")
        out: dict[str, np.ndarray | ObjectEntry] = {}
        for key, info, dtype in plan:
            if dtype is None:
                out[key] = ObjectEntry(key)
                continue
            try:
                with zf.open(info) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise NpzReadError(f"{path}: entry {key!r} is truncated or corrupt "
                                   f"({type(e).__name__}: {e})") from None
    return out


def _selector(keys) -> Callable[[str], bool]:
    if keys is None:
        return lambda k: True
    if callable(keys):
        return keys
    wanted = set(keys)
    return wanted.__contains__


def _check_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path,
                  max_entry_bytes: int) -> tuple[tuple, np.dtype | None, int]:
    """(shape, dtype or None for object entries, declared data bytes) from an entry's header."""
    key = info.filename[:-4]
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_HEADER_LIMIT)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_HEADER_LIMIT)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            header_len = f.tell()
    except (OSError, ValueError, EOFError, SyntaxError, TypeError, zipfile.BadZipFile, zlib.error) as e:
        raise NpzReadError(f"{path}: entry {key!r} has no valid .npy header ({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        return shape, None, 0
    if dtype.kind not in _KINDS or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise NpzReadError(f"{path}: entry {key!r} has unsupported dtype {dtype} or shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_entry_bytes:
        raise NpzReadError(f"{path}: entry {key!r} declares shape {shape} {dtype} = {_mb(nbytes)}, more "
                           f"than the {_mb(max_entry_bytes)} limit; refused before reading it")
    if info.file_size != header_len + nbytes:
        raise NpzReadError(f"{path}: entry {key!r} declares {_mb(nbytes)} of data but the zip holds "
                           f"{_mb(max(info.file_size - header_len, 0))}; the file is damaged")
    return shape, dtype, nbytes


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"
