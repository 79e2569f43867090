"""Model downloads from the Load DeforHMR Model node: the library's downloader
(:mod:`deforhmr_model.files.download`) with ComfyUI's progress bar, into ``models/deforhmr``."""
from __future__ import annotations

from pathlib import Path

from . import host

DOWNLOAD_PREFIX = "download: "


def download_choices() -> list[str]:
    """"download: NAME" for each known network (a ``.safetensors`` install) not installed yet."""
    from deforhmr_model.files import download as dl
    host.sync_search_dirs()
    out = []
    for name, entry in dl.known_models().items():
        target = entry.installs[0]
        if target.endswith(".safetensors") and host.resolve_model_file(target, host.CHECKPOINT_FOLDER) is None:
            out.append(f"{DOWNLOAD_PREFIX}{name}")
    return out


def download_name(choice: str) -> str | None:
    """The model name of a "download: NAME" choice, else None."""
    return choice[len(DOWNLOAD_PREFIX):] if choice.startswith(DOWNLOAD_PREFIX) else None


def checkpoint_dest() -> Path | None:
    """The first writable ComfyUI ``models/deforhmr`` folder (None: the library's default)."""
    from deforhmr_model.files.download import _writable
    for d in host.model_folders(host.CHECKPOINT_FOLDER):
        if d != host._shipped_weights() and _writable(d):
            return d
    return None


def download_checkpoint(name: str) -> Path:
    """Download/verify/install the known model ``name`` (ComfyUI progress bar, Cancel honoured:
    the partial file stays and the next run resumes it). Returns the installed checkpoint.

    Raises:
        deforhmr_model.files.download.DownloadError: with the manual steps.
    """
    from deforhmr_model.files.download import download
    state = {"bar": None, "shown": 0}

    def progress(done: int, total: int | None) -> None:
        host.check_interrupted()
        if not total:
            return
        if state["bar"] is None:
            state["bar"] = host.progress_bar(1000)
        step = int(1000 * done / total)
        if step > state["shown"]:                     # at most 1000 updates to the browser
            state["bar"].update(step - state["shown"])
            state["shown"] = step

    report = download(name, dest=checkpoint_dest(), progress=progress)
    host.sync_search_dirs()
    return report.installed[0]
