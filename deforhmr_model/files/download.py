"""Model downloads: ``deforhmr download NAME`` and the ComfyUI loader's download choices.

Known downloads are listed in ``weights/manifest.json`` under ``"downloads"`` (official URL,
where the URL was found, size and sha256 where known, licence, what is extracted and what is
installed). :func:`download` does, for one of them:

1. picks the destination: ``dest`` if given, else the first writable weights folder
   (``$DEFORHMR_WEIGHTS`` entries first, then ``~/.cache/deforhmr``; the ComfyUI pack passes
   its ``models/deforhmr`` as ``dest``; never the shipped ``weights/``), where ``--model NAME`` and
   ``method=auto`` look;
2. streams the file over HTTP(S) (``urllib``, which honours ``https_proxy``; ``--url`` may name a
   mirror, a ``file://`` URL or a local path; ``$DEFORHMR_DOWNLOAD_MIRROR`` names a folder URL
   that holds the files under their release names, e.g. for ComfyUI behind a firewall) into ``<file>.part`` with a progress bar (tqdm, or a callback such as
   ComfyUI's ``ProgressBar``), resuming an interrupted ``.part`` with an HTTP ``Range`` request
   (``If-Range`` guards against a changed file) and retrying a broken connection from where it
   stopped;
3. verifies it: the byte count against ``Content-Length``/``Content-Range`` and the manifest's
   size, and the sha256 against the manifest's (publisher's) checksum or, when the publisher
   gives none, against the checksum recorded in ``deforhmr-downloads.json`` in the destination
   by the first verified download (trust on first use; said so in the report). A mismatch
   deletes the file and raises :class:`DownloadError`;
4. renames the verified file into place (never a partial file under the final name);
5. for archives: reads the tar stream once and extracts only the allow-listed members (exact
   names, regular files, each under its ``max_size``; member names never become paths), then
   converts the HMR 2.0 checkpoint with
   :func:`deforhmr_model.network.checkpoint.convert_checkpoint` and deletes the intermediate
   ``.ckpt`` and the archive (unless ``keep_archive``);
6. checks what it installed (the model loads; a ViTPose file holds the expected backbone).

Errors are :class:`DownloadError` with one message naming the problem and the manual steps
(where to get the file in a browser, and ``deforhmr download NAME --url /path/to/file`` to
install a copy fetched by hand).
"""
from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deforhmr_model.files.atomic import atomic_path
from deforhmr_model.files import weights

RECORD_FILE = "deforhmr-downloads.json"
MIRROR_ENV = "DEFORHMR_DOWNLOAD_MIRROR"   # a folder URL holding the files under their names
CHUNK = 1 << 20
USER_AGENT = "deforhmr-download/1"


class DownloadError(RuntimeError):
    """A download, verification or installation failed; the message says what to do by hand."""


@dataclass
class Member:
    """An allow-listed archive member: exact ``member`` name (a leading ``./`` is ignored),
    installed as ``to``; ``max_size`` bytes at most; ``convert`` names the safetensors file an
    HMR 2.0 ``.ckpt`` is converted to (the ``.ckpt`` is then deleted)."""

    member: str
    to: str
    max_size: int
    convert: str | None = None


@dataclass
class KnownModel:
    """One ``"downloads"`` entry of ``weights/manifest.json``."""

    name: str
    purpose: str
    url: str
    file: str
    license: str
    installs: list[str]
    page: str = ""
    url_source: str = ""
    size: int | None = None
    sha256: str | None = None
    archive: str | None = None                  # "tar.gz" or None (a single file)
    extract: list[Member] = field(default_factory=list)
    backbone: str | None = None                 # a ViTPose file: expected encoder size
    approx_size: str = ""

    @classmethod
    def from_json(cls, d: dict) -> "KnownModel":
        d = dict(d)
        d["extract"] = [Member(**m) for m in d.get("extract", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def manual_steps(self, dest: Path | None = None) -> str:
        where = self.url + (f" (listed on {self.page})" if self.page else "")
        folder = f" (installs into {dest})" if dest else ""
        return (f"Manual steps: download {self.file} from {where} in a browser or on another machine, "
                f"then run `deforhmr download {self.name} --url /path/to/{self.file}`{folder}.")


@dataclass
class DownloadReport:
    """What :func:`download` did. ``installed``: paths of the installed files; ``checksum``:
    one sentence on how the file was verified; ``resumed_from``: bytes reused from a ``.part``."""

    name: str
    dest: Path
    installed: list[Path]
    checksum: str
    downloaded_bytes: int = 0
    resumed_from: int = 0
    already_installed: bool = False
    archive: Path | None = None


# ----------------------------------------------------------------------------- manifest

def known_models() -> dict[str, KnownModel]:
    """Name -> :class:`KnownModel` for every ``"downloads"`` entry of the manifest."""
    return {d["name"]: KnownModel.from_json(d) for d in weights.manifest().get("downloads", [])}


def known_model(name: str) -> KnownModel:
    """The manifest entry for ``name``; DownloadError listing the known names otherwise."""
    models = known_models()
    if name not in models:
        raise DownloadError(f"unknown model {name!r}; known downloads: {', '.join(sorted(models)) or 'none'}")
    return models[name]


def installed_path(name: str, store: weights.WeightStore | None = None) -> Path | None:
    """Where the first file ``name`` installs is found in ``store``'s folders (default: a fresh
    :class:`~deforhmr_model.files.weights.WeightStore`), or None."""
    entry = known_models().get(name)
    if entry is None:
        return None
    return weights.find_file(entry.installs[0], subdirs=("", "deforhmr"), store=store)


# ----------------------------------------------------------------------------- destination

def default_dest(store: weights.WeightStore | None = None) -> Path:
    """The first writable folder of ``store`` (default: a fresh
    :class:`~deforhmr_model.files.weights.WeightStore`): ``$DEFORHMR_WEIGHTS`` entries, the
    store's own folders, ``~/.cache/deforhmr`` (the shipped ``deforhmr_model/weights/`` is never
    written).

    Raises:
        DownloadError: none of them can be created and written to.
    """
    tried = []
    for d in weights.search_dirs(store):
        if d == weights.SHIPPED_WEIGHTS:
            continue
        if _writable(d):
            return d
        tried.append(str(d))
    raise DownloadError(f"no writable weights folder (tried {', '.join(tried)}); pass --dest DIR "
                        "or set DEFORHMR_WEIGHTS to a folder you can write to")


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".deforhmr-write-test"):
            pass
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- checksum records

def _read_records(dest: Path) -> dict:
    path = dest / RECORD_FILE
    if not path.is_file() or path.stat().st_size > 1 << 20:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(dest: Path, file: str, url: str, size: int, sha256: str) -> None:
    records = _read_records(dest)
    records[file] = {"sha256": sha256, "size": size, "url": url,
                     "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with atomic_path(dest / RECORD_FILE) as tmp:
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True))


def expected_checksum(entry: KnownModel, dest: Path) -> tuple[str | None, int | None, str]:
    """(sha256, size, where it comes from) for ``entry``: the manifest's, else the one recorded
    in ``dest`` by a first verified download, else (None, manifest size, "none")."""
    if entry.sha256:
        return entry.sha256.lower(), entry.size, "manifest"
    rec = _read_records(dest).get(entry.file)
    if isinstance(rec, dict) and isinstance(rec.get("sha256"), str):
        return rec["sha256"].lower(), rec.get("size") or entry.size, "recorded"
    return None, entry.size, "none"


# ----------------------------------------------------------------------------- streaming

ProgressFn = Callable[[int, "int | None"], None]


def _to_url(url: str) -> str:
    if "://" in url:
        return url
    return Path(url).expanduser().resolve().as_uri()


def fetch(url: str, path: Path, *, progress: ProgressFn | None = None, retries: int = 5,
          retry_wait: float = 1.0, timeout: float = 60.0, desc: str = "") -> tuple[int, int, str]:
    """Stream ``url`` into ``path`` (a ``.part`` file), resuming what ``path`` already holds.

    Returns (total bytes, bytes reused from an earlier run, sha256 hex of the whole file).
    A broken connection is retried ``retries`` times, each resuming with ``Range``; a server
    that ignores ``Range`` (or whose file changed: ``If-Range``) restarts from byte 0.
    ``progress(done, total)`` is called as bytes arrive (default: a tqdm bar).

    Raises:
        DownloadError: HTTP errors (4xx/5xx), too many broken connections, a short file.
    """
    url = _to_url(url)
    meta_path = path.with_name(path.name + ".json")
    meta = _read_meta(meta_path, url)
    if not meta and path.is_file():        # a .part from another URL (or without its record): restart
        path.unlink()
    bar = None
    if progress is None:
        from tqdm import tqdm
        bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or path.name,
                   disable=None, miniters=1)

        def progress(done, total, bar=bar):
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
    stats: dict = {}
    failures = 0
    try:
        while True:
            have = path.stat().st_size if path.is_file() else 0
            try:
                total, sha = _stream_once(url, path, have, meta, meta_path, progress, timeout, stats)
                return total, stats.get("reused", 0), sha
            except _Retry as e:
                failures += 1
                if failures > retries:
                    raise DownloadError(f"download of {url} kept failing ({failures} tries, last: {e})") from None
                time.sleep(min(retry_wait * 2 ** (failures - 1), 30.0))
    finally:
        if bar is not None:
            bar.close()


class _Retry(Exception):
    """A transient failure; the next try resumes from the bytes on disk."""


def _read_meta(meta_path: Path, url: str) -> dict:
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() and meta_path.stat().st_size < 65536 else {}
    except (OSError, ValueError):
        meta = {}
    return meta if isinstance(meta, dict) and meta.get("url") == url else {}


def _stream_once(url, path: Path, have: int, meta: dict, meta_path: Path, progress, timeout, stats: dict):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have and not url.startswith("file:"):                  # local copies simply restart
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:                                          # the file changed: send it whole
            headers["If-Range"] = validator
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:                            # our .part is not a prefix any more
            path.unlink(missing_ok=True)
            raise _Retry("HTTP 416 for the resume range; restarting") from None
        if e.code >= 500 or e.code == 429:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (socket.gaierror, ConnectionRefusedError, FileNotFoundError)) or url.startswith("file:"):
            raise DownloadError(f"cannot reach {url}: {reason}") from None   # offline / no such host
        raise _Retry(f"{type(e).__name__}: {reason}") from None
    with resp:
        status = getattr(resp, "status", None) or resp.getcode() or 200
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                path.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start}, not {have}; restarting")
            mode = "ab"
        else:                                                  # a whole file: (re)start at byte 0
            have, total, mode = 0, length, "wb"
            meta.clear()
            meta.update(url=url, etag=resp.headers.get("ETag"), last_modified=resp.headers.get("Last-Modified"))
            meta_path.write_text(json.dumps(meta))
        stats.setdefault("reused", have)
        _check_space(path.parent, (total or 0) - have)
        sha = hashlib.sha256()
        if mode == "ab":
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    sha.update(block)
        done = have
        progress(done, total)
        try:
            with open(path, mode) as out:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    sha.update(block)
                    done += len(block)
                    progress(done, total)
                    if total is not None and done > total:
                        raise DownloadError(f"{url} sent more than the {total} bytes it announced")
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, OSError) and e.errno == 28:       # ENOSPC
                raise DownloadError(f"disk full while writing {path}: free space and run the command "
                                    "again (it resumes)") from None
            raise _Retry(f"connection broken after {done} bytes ({type(e).__name__})") from None
        if total is not None and done < total:
            raise _Retry(f"connection closed after {done} of {total} bytes")
    return done, sha.hexdigest()


def _parse_content_range(text: str) -> tuple[int, int | None]:
    try:                                                       # "bytes START-END/TOTAL"
        unit, rng = text.split(" ", 1)
        span, total = rng.split("/")
        return int(span.split("-")[0]), (int(total) if total != "*" else None)
    except ValueError:
        return -1, None


def _check_space(folder: Path, need: int) -> None:
    if need <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < need + (64 << 20):
        raise DownloadError(f"not enough disk space in {folder}: {need / 1e9:.2f} GB needed, "
                            f"{free / 1e9:.2f} GB free; free space or pass --dest on another disk")


# ----------------------------------------------------------------------------- archives

def extract_members(archive: Path, members: list[Member], dest: Path) -> dict[str, Path]:
    """Extract the allow-listed ``members`` of a ``.tar.gz`` into ``dest`` (reading the stream
    once; each written to a temporary name and renamed). Member names are only compared, never
    used as paths; links, folders and devices are skipped; a member larger than its
    ``max_size`` is refused. Returns {member name: installed path}.

    Raises:
        DownloadError: the archive is unreadable, a member is missing, not a regular file or too big.
    """
    wanted = {m.member: m for m in members}
    found: dict[str, Path] = {}
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for info in tar:
                name = info.name[2:] if info.name.startswith("./") else info.name
                m = wanted.get(name)
                if m is None or name in found:
                    continue
                if not info.isreg():
                    raise DownloadError(f"{archive.name}: {name} is not a regular file in the archive")
                if info.size > m.max_size:
                    raise DownloadError(f"{archive.name}: {name} is {info.size} bytes, more than the "
                                        f"{m.max_size} expected; the archive is not the known release")
                _check_space(dest, info.size)
                src = tar.extractfile(info)
                with atomic_path(dest / m.to) as tmp, open(tmp, "wb") as out:
                    copied = 0
                    for block in iter(lambda: src.read(CHUNK), b""):
                        copied += len(block)
                        if copied > m.max_size:
                            raise DownloadError(f"{archive.name}: {name} is larger than {m.max_size} bytes")
                        out.write(block)
                found[name] = dest / m.to
                if len(found) == len(wanted):
                    break
    except BaseException as e:
        for p in found.values():
            p.unlink(missing_ok=True)
        if isinstance(e, (tarfile.TarError, EOFError, OSError)):
            raise DownloadError(f"{archive} is not a readable .tar.gz ({e}); delete it and download again") from None
        raise
    missing = [n for n in wanted if n not in found]
    if missing:
        for p in found.values():
            p.unlink(missing_ok=True)
        raise DownloadError(f"{archive.name} lacks {', '.join(missing)}; it is not the known release")
    return found


# ----------------------------------------------------------------------------- the job

def download(name: "str | KnownModel", url: str | None = None, dest: str | os.PathLike | None = None,
             keep_archive: bool = False, progress: ProgressFn | None = None, retries: int = 5,
             retry_wait: float = 1.0, timeout: float = 60.0, force: bool = False) -> DownloadReport:
    """Download, verify and install the known model ``name`` (see the module docstring).

    Args:
        name: a ``"downloads"`` name from ``weights/manifest.json`` (e.g. "hmr2", "vitpose-h").
        url: fetch from here instead of the official URL (a mirror, ``file://`` URL or local path);
            the same checksum applies. Default: ``$DEFORHMR_DOWNLOAD_MIRROR/<file>`` if set, else
            the manifest's URL.
        dest: install folder (default :func:`default_dest`).
        keep_archive: keep an archive after extraction (default: deleted).
        progress: ``progress(done_bytes, total_bytes_or_None)``; default a tqdm bar on stderr.
        retries, retry_wait, timeout: broken-connection retries (each resumes), first wait in
            seconds (doubling), socket timeout in seconds.
        force: download again even if the files are installed in ``dest``.
    Returns:
        :class:`DownloadReport`.
    Raises:
        DownloadError: unknown name, network failure (with the manual steps), checksum or size
        mismatch (the file is deleted), an archive without the expected members, a file that
        does not load as the expected model.
    """
    entry = name if isinstance(name, KnownModel) else known_model(name)
    dest = Path(dest) if dest is not None else default_dest()
    if not _writable(dest):
        raise DownloadError(f"cannot write to {dest}; choose another --dest")
    targets = [dest / f for f in entry.installs]
    if not force and all(p.is_file() for p in targets):
        return DownloadReport(entry.name, dest, targets, "already installed", already_installed=True)

    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if url is None and mirror:
        url = mirror.rstrip("/") + "/" + urllib.parse.quote(entry.file)
    final = dest / entry.file
    sha_expected, size_expected, source = expected_checksum(entry, dest)
    downloaded = resumed = 0
    if final.is_file() and (force or (sha_expected and _sha256_file(final) != sha_expected)):
        final.unlink()                                         # a kept archive is reused only if it verifies
    if not final.is_file():
        part = dest / (entry.file + ".part")
        try:
            downloaded, resumed, sha = fetch(url or entry.url, part, progress=progress, retries=retries,
                                             retry_wait=retry_wait, timeout=timeout, desc=entry.file)
        except DownloadError as e:
            raise DownloadError(f"{e}. {entry.manual_steps(dest)}") from None
        problem = None
        if sha_expected is not None and sha != sha_expected:
            problem = (f"sha256 {sha} ({downloaded} bytes), expected {sha_expected} "
                       f"({'published' if source == 'manifest' else 'recorded on the first download'})")
        elif size_expected is not None and downloaded != size_expected:
            problem = f"size {downloaded} bytes, expected {size_expected}"
        if problem:
            part.unlink(missing_ok=True)
            part.with_name(part.name + ".json").unlink(missing_ok=True)
            raise DownloadError(f"{entry.file} from {url or entry.url} failed verification: {problem}; "
                                f"the file was deleted. Try again, or use another --url. {entry.manual_steps(dest)}")
        os.replace(part, final)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
    else:
        sha = sha_expected or _sha256_file(final)
        downloaded = final.stat().st_size

    try:
        installed = _install(entry, final, dest)
    except DownloadError as e:             # complete but not the known release: never left installed
        final.unlink(missing_ok=True)
        raise DownloadError(f"{e}; {final.name} was deleted. {entry.manual_steps(dest)}") from None
    if source == "manifest":
        checksum = f"sha256 {sha} matches the published checksum"
    elif source == "recorded":
        checksum = f"sha256 {sha} matches the one recorded by the first download ({dest / RECORD_FILE})"
    else:
        _write_record(dest, entry.file, url or entry.url, downloaded, sha)
        checksum = (f"the publisher gives no checksum; sha256 {sha} ({downloaded} bytes) recorded on this first "
                    f"verified download in {dest / RECORD_FILE}; later downloads are checked against it")
    archive = None
    if entry.archive:
        if keep_archive:
            archive = final
        else:
            final.unlink(missing_ok=True)
    return DownloadReport(entry.name, dest, installed, checksum, downloaded_bytes=downloaded,
                          resumed_from=resumed, archive=archive)


def _install(entry: KnownModel, final: Path, dest: Path) -> list[Path]:
    """Extract/convert/check ``final``; returns the installed paths."""
    if not entry.archive:
        _check_vitpose(entry, final)
        return [final]
    extracted = extract_members(final, entry.extract, dest)
    installed = []
    try:
        for m in entry.extract:
            path = extracted[m.member]
            if m.convert:
                from deforhmr_model.network.checkpoint import CheckpointError, convert_checkpoint
                try:
                    installed.append(convert_checkpoint(path, dest / m.convert))
                except (CheckpointError, OSError) as e:
                    raise DownloadError(f"{m.member} from {final.name} could not be converted: {e}") from None
            elif m.to.endswith(".npz"):
                _check_npz(path)
                installed.append(path)
            else:
                installed.append(path)
    finally:
        for m in entry.extract:
            if m.convert:
                extracted[m.member].unlink(missing_ok=True)    # the .ckpt is an intermediate
    return installed


def _check_npz(path: Path) -> None:
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as z:
            shapes = {k: z[k].shape for k in z.files}
    except (OSError, ValueError) as e:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{path.name} is not a readable .npz ({e})") from None
    if "pose" in shapes and shapes.get("pose") != (144,):
        path.unlink(missing_ok=True)
        raise DownloadError(f"{path.name}: pose has shape {shapes['pose']}, expected (144,)")


def _check_vitpose(entry: KnownModel, path: Path) -> None:
    if not entry.backbone:
        return
    from deforhmr_model.network.checkpoint import (CheckpointError, describe_state_dict, infer_backbone,
                                                   load_torch_file)
    try:
        raw = load_torch_file(path)
    except CheckpointError as e:
        raise DownloadError(f"{path.name} is not a ViTPose checkpoint: {e}") from None
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else {}
    shapes = {k.removeprefix("backbone."): tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}
    got = infer_backbone(shapes)
    if got != entry.backbone:
        raise DownloadError(f"{path.name} holds {describe_state_dict({k: tuple(v.shape) for k, v in sd.items() if hasattr(v, 'shape')})}, "
                            f"not a {entry.backbone} ViTPose backbone")


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha.update(block)
    return sha.hexdigest()
