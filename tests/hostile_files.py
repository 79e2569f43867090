"""Hostile files the tests generate (never shipped): npz "bombs".

:func:`write_npz_bomb` writes a real ``.npz`` (a zip of ``.npy`` files) in which one entry is a
deflated array of zeros whose header declares gigabytes: a few MB on disk, 4 GB once loaded.
The zip is written by hand so that no test spends time compressing gigabytes: deflate of a
1 MB zero block after a full flush is the same bytes every time, so the stream is that block
repeated. The CRC of the bomb entry is not computed (4 GB of CRC takes seconds); a reader that
checks the header first never gets that far, and ``np.load`` allocates the whole array before it
would notice.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

_BLOCK = 2**20


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def _zero_array_stream(header: bytes, nbytes: int) -> tuple[bytes, int]:
    """Raw deflate of ``header`` + ``nbytes`` zeros and its uncompressed size."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.compress(bytes(nbytes % _BLOCK)) + c.flush(zlib.Z_FINISH)
    return head + block * (nbytes // _BLOCK) + tail, len(header) + nbytes


def write_npz_bomb(path: str | Path, arrays: dict[str, np.ndarray], key: str, shape: tuple,
                   dtype: str = "<f4") -> Path:
    """An npz with ``arrays`` (normal entries) plus ``key`` declared as zeros of ``shape``/``dtype``
    (total under 4 GiB: no zip64). Returns the path."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    assert nbytes < 2**32 - 2**20, "pick a shape under 4 GiB (no zip64)"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    entries = []
    for name, arr in arrays.items():
        raw = _npy_bytes(arr)
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        entries.append((f"{name}.npy", c.compress(raw) + c.flush(), len(raw), zlib.crc32(raw)))
    data, size = _zero_array_stream(header.getvalue(), nbytes)
    entries.append((f"{key}.npy", data, size, 0))
    path = Path(path)
    with open(path, "wb") as f:
        central = []
        for name, data, size, crc in entries:
            offset = f.tell()
            n = name.encode()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(n), 0))
            f.write(n)
            f.write(data)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc,
                                       len(data), size, len(n), 0, 0, 0, 0, 0, offset) + n)
        start = f.tell()
        for c in central:
            f.write(c)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                            f.tell() - start, start, 0))
    return path
