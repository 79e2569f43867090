"""Model downloads against a local HTTP server (127.0.0.1, started and stopped by the tests).

The archive is made here in the HMR 2.0 release layout (``hmr2_data.tar.gz`` with
``logs/train/multiruns/hmr2/0/checkpoints/epoch=35-step=1000000.ckpt`` and
``data/smpl_mean_params.npz``): the checkpoint is a Lightning-style ``.ckpt`` of a ``reg-s``
network on the tiny ViT (HMR 2.0's head, with ``smpl.*`` and ``initialized`` entries to drop),
as tests/test_checkpoint.py builds them. No test reaches the internet.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from deforhmr_model.cli import main
from deforhmr_model.files.download import DownloadError, KnownModel, download, extract_members, fetch, known_model, Member
from deforhmr_model.network.checkpoint import load_model
from deforhmr_model.network.model import build_model
from deforhmr_model.pipeline import HMRPipeline

CKPT_MEMBER = "logs/train/multiruns/hmr2/0/checkpoints/epoch=35-step=1000000.ckpt"
MEAN_MEMBER = "data/smpl_mean_params.npz"
TINY_HEAD = dict(dim=64, depth=2, mlp_dim=64, self_dim_head=8, cross_dim_head=8)   # HMR 2.0's 8 heads


class _Server:
    """http.server on 127.0.0.1 with byte ranges, an optional connection broken mid-file, and a
    log of the Range headers it received."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.break_after: dict[str, int] = {}        # path -> bytes sent before the connection drops (once)
        self.ranges: list[str | None] = []
        self.honour_range = True
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = srv.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                srv.ranges.append(rng)
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and srv.honour_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", '"%s"' % hashlib.md5(data).hexdigest())
                self.end_headers()
                cut = srv.break_after.pop(self.path, None)
                if cut is not None:
                    self.wfile.write(data[start:start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)           # the connection breaks mid-file
                    return
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    s = _Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    s.thread.join(5)


def _hmr2_release(seed: int = 0) -> tuple[bytes, dict]:
    """(hmr2_data.tar.gz bytes, the network's state dict) in the 4D-Humans release layout."""
    torch.manual_seed(seed)
    model = build_model("reg-s", "vit-tiny", **TINY_HEAD)
    with torch.no_grad():                    # readouts near the mean parameters, as a trained model
        for head in (model.smpl_head.decpose, model.smpl_head.decshape, model.smpl_head.deccam):
            head.weight.mul_(0.01)
            head.bias.zero_()
    sd = model.state_dict()
    ckpt = io.BytesIO()
    torch.save({"epoch": 35, "global_step": 1_000_000,
                "state_dict": {**sd, "smpl.v_template": torch.zeros(6890, 3), "initialized": torch.tensor(True)}},
               ckpt)
    mean = io.BytesIO()
    np.savez(mean, pose=np.tile(np.array([1, 0, 0, 0, -1, 0], np.float32), 24), shape=np.zeros(10, np.float32),
             cam=np.array([0.9, 0, 0], np.float32))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for name, blob in (("data/README.txt", b"other files of the release are skipped"),
                           (MEAN_MEMBER, mean.getvalue()), (CKPT_MEMBER, ckpt.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out.getvalue(), sd


@pytest.fixture(scope="module")
def release():
    return _hmr2_release()


def test_hmr2_release_is_downloaded_converted_and_picked_by_auto(server, release, tmp_path, monkeypatch, photos):
    archive, sd = release
    server.files["/hmr2_data.tar.gz"] = archive
    server.break_after["/hmr2_data.tar.gz"] = len(archive) // 3       # the first connection breaks
    weights = tmp_path / "weights"
    monkeypatch.setenv("DEFORHMR_WEIGHTS", str(weights))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))        # no ~/.cache/deforhmr of this machine
    seen = []
    report = download("hmr2", url=server.url("/hmr2_data.tar.gz"), retry_wait=0.01,
                      progress=lambda done, total: seen.append((done, total)))
    # resumed with a Range request from where the broken connection stopped
    assert server.ranges == [None, f"bytes={len(archive) // 3}-"]
    assert seen[-1] == (len(archive), len(archive))
    assert report.dest == weights and report.downloaded_bytes == len(archive)
    assert sorted(p.name for p in weights.iterdir()) == ["deforhmr-downloads.json", "hmr2.safetensors",
                                                         "smpl_mean_params.npz"]   # archive, .ckpt, .part gone
    assert "publisher gives no checksum" in report.checksum
    rec = json.loads((weights / "deforhmr-downloads.json").read_text())["hmr2_data.tar.gz"]
    assert rec["sha256"] == hashlib.sha256(archive).hexdigest() and rec["size"] == len(archive)
    model = load_model("hmr2")
    assert model.config.variant == "reg-s"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())
    with np.load(weights / "smpl_mean_params.npz") as z:
        assert z["pose"].shape == (144,)

    # method=auto now runs the downloaded network; --refine after it uses the 2D keypoints
    res = HMRPipeline()(photos / "coco" / "000000000785.jpg")
    assert res.people and all(p.method == "network:hmr2" for p in res.people)
    refined = HMRPipeline(refine=True)(photos / "coco" / "000000000785.jpg")
    assert all(p.method == "network:hmr2+refine" for p in refined.people)
    monkeypatch.setenv("DEFORHMR_WEIGHTS", str(tmp_path / "empty"))
    assert all(p.method == "fit" for p in HMRPipeline()(photos / "coco" / "000000000785.jpg").people)


def test_interrupted_part_file_is_resumed_by_the_next_run(server, tmp_path):
    blob = np.random.default_rng(0).bytes(300_000)
    server.files["/f.bin"] = blob
    part = tmp_path / "f.bin.part"
    server.break_after["/f.bin"] = 100_000
    with pytest.raises(DownloadError, match="kept failing"):
        fetch(server.url("/f.bin"), part, progress=lambda *a: None, retries=0)
    assert part.stat().st_size == 100_000                             # what arrived is kept
    total, reused, sha = fetch(server.url("/f.bin"), part, progress=lambda *a: None, retries=0)
    assert server.ranges == [None, "bytes=100000-"] and reused == 100_000
    assert total == len(blob) and part.read_bytes() == blob and sha == hashlib.sha256(blob).hexdigest()

    # a server that ignores Range sends the whole file: the download restarts cleanly
    part.write_bytes(blob[:5000])
    server.honour_range = False
    total, reused, _ = fetch(server.url("/f.bin"), part, progress=lambda *a: None)
    assert reused == 0 and part.read_bytes() == blob


def test_wrong_checksum_is_refused_and_deleted(server, tmp_path, release):
    blob = b"weights" * 1000
    server.files["/v.pth"] = blob
    entry = KnownModel(name="x", purpose="test", url=server.url("/v.pth"), file="v.pth", license="test",
                       installs=["v.pth"], sha256=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(DownloadError, match=r"failed verification: sha256 .* expected .*published.*deleted.*"
                                            r"Manual steps: download v.pth"):
        download(entry, dest=tmp_path, progress=lambda *a: None)
    assert list(tmp_path.iterdir()) == []

    # no published checksum: the first verified download records one, a changed file is refused
    archive, _ = release
    server.files["/hmr2_data.tar.gz"] = archive
    download("hmr2", url=server.url("/hmr2_data.tar.gz"), dest=tmp_path, progress=lambda *a: None)
    other, _ = _hmr2_release(seed=1)
    server.files["/hmr2_data.tar.gz"] = other
    with pytest.raises(DownloadError, match="recorded on the first download"):
        download("hmr2", url=server.url("/hmr2_data.tar.gz"), dest=tmp_path, force=True, progress=lambda *a: None)
    assert not (tmp_path / "hmr2_data.tar.gz.part").exists()


def test_archive_extraction_is_allow_listed(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, blob in (("../../evil.npz", b"x"), ("/etc/evil", b"x"), ("data/a.bin", b"a" * 10)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        link = tarfile.TarInfo("data/link.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(out.getvalue())
    dest = tmp_path / "dest"
    dest.mkdir()
    got = extract_members(archive, [Member("data/a.bin", "a.bin", 100)], dest)
    assert got == {"data/a.bin": dest / "a.bin"} and sorted(p.name for p in tmp_path.rglob("*")) == [
        "a.bin", "a.tar.gz", "dest"]
    with pytest.raises(DownloadError, match="more than the 5 expected"):
        extract_members(archive, [Member("data/a.bin", "a.bin", 5)], dest)
    with pytest.raises(DownloadError, match="not a regular file"):
        extract_members(archive, [Member("data/link.bin", "l.bin", 5)], dest)
    with pytest.raises(DownloadError, match="lacks data/missing"):
        extract_members(archive, [Member("data/missing", "m", 5)], dest)
    assert sorted(p.name for p in dest.iterdir()) == ["a.bin"]


def test_offline_or_missing_url_gives_manual_steps(server, tmp_path, capsys):
    code = main(["download", "hmr2", "--url", server.url("/nothing.tar.gz"), "--dest", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 404" in err and "Manual steps: download hmr2_data.tar.gz from" in err
    assert "deforhmr download hmr2 --url /path/to/hmr2_data.tar.gz" in err and "Traceback" not in err
    port = server.httpd.server_address[1]
    server.httpd.shutdown()
    server.httpd.server_close()                                        # nothing listens any more
    code = main(["download", "vitpose-h", "--url", f"http://127.0.0.1:{port}/x.pth", "--dest", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach" in err and "1drv.ms" in err
    assert [p.name for p in tmp_path.iterdir()] == []
    server.httpd = type("Stopped", (), {"shutdown": lambda self: None, "server_close": lambda self: None})()


def test_local_copy_installs_with_the_cli(tmp_path, release, capsys):
    archive, _ = release
    local = tmp_path / "hmr2_data.tar.gz"
    local.write_bytes(archive)
    dest = tmp_path / "w"
    assert main(["download", "hmr2", "--url", str(local), "--dest", str(dest), "--keep-archive"]) == 0
    out = capsys.readouterr()
    assert f"installed {dest / 'hmr2.safetensors'}" in out.out and "kept" in out.out
    assert (dest / "hmr2_data.tar.gz").read_bytes() == archive
    assert main(["download", "hmr2", "--dest", str(dest)]) == 0        # nothing to do, no network
    assert "already installed" in capsys.readouterr().out


def test_manifest_lists_the_official_sources():
    hmr2 = known_model("hmr2")
    assert hmr2.url == "https://people.eecs.berkeley.edu/~jathushan/projects/4dhumans/hmr2_data.tar.gz"
    assert [m.member for m in hmr2.extract] == [CKPT_MEMBER, MEAN_MEMBER]
    for size in "hlb":
        vp = known_model(f"vitpose-{size}")
        assert vp.backbone == f"vit-{size}" and vp.page.startswith("https://1drv.ms/")
