"""files/atomic.py: temp file + rename; no partial file; usual permissions; umask untouched."""
import os
import stat

import pytest

from deforhmr_model.files.atomic import atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    assert atomic_write(dest, lambda f: f.write(b"new")) == dest
    assert dest.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")

    def bad(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(dest, bad)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_temp_file_lives_in_destination_folder(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    with atomic_path(sub / "x.pt") as tmp:
        assert tmp.parent == sub and tmp.exists() and tmp.name.startswith(".x.pt.")
        tmp.write_bytes(b"1")
    assert (sub / "x.pt").read_bytes() == b"1"


def test_missing_folder_is_an_oserror_and_nothing_is_written(tmp_path):
    with pytest.raises(OSError):
        atomic_write(tmp_path / "nope" / "x.bin", lambda f: f.write(b"1"))
    assert not (tmp_path / "nope").exists()


def test_permissions_match_plain_open_without_touching_umask(tmp_path, monkeypatch):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"1")

    def no_umask(*a):  # the process umask is shared by all threads: never toggle it
        raise AssertionError("os.umask called")
    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write(tmp_path / "atomic.bin", lambda f: f.write(b"1"))
    assert (stat.S_IMODE((tmp_path / "atomic.bin").stat().st_mode)
            == stat.S_IMODE(plain.stat().st_mode))
