"""Load DeforHMR Model: checkpoint + body model -> DEFORHMR_MODEL."""
from __future__ import annotations

from . import host
from .handles import CATEGORY, MODEL

NO_CHECKPOINT = "none (fit to keypoints)"
AUTO_CHECKPOINT = "auto (network if installed, else fit)"
BODY_AUTO = "auto (SMPL neutral if installed, else open body)"
BODY_OPEN = "open body (shipped, Apache-2.0)"
OPEN_BODY_FILE = "open_body.npz"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def checkpoint_choices() -> list[str]:
    from .downloads import download_choices
    return [AUTO_CHECKPOINT, NO_CHECKPOINT, *host.list_model_files(host.CHECKPOINT_FOLDER, host.CHECKPOINT_EXTENSIONS),
            *download_choices()]


def body_choices() -> list[str]:
    files = [f for f in host.list_model_files(host.BODY_FOLDER, host.BODY_EXTENSIONS) if f != OPEN_BODY_FILE]
    return [BODY_AUTO, BODY_OPEN, *files]


def missing_file_message(name: str, folder: str, what: str) -> str | None:
    """None when ``name`` is installed, else "<what> ... not installed" + the library's message
    (the file, every folder searched, where to get it)."""
    if host.resolve_model_file(name, folder) is not None:
        return None
    from deforhmr_model.files.weights import MissingModelFileError
    try:
        host.weight_store().require(name, subdirs=("", folder))
    except MissingModelFileError as e:
        return f"{what} {name!r} is not installed: {e}"
    return None


class LoadDeforHMRModel:
    """Build the recovery pipeline once; ComfyUI keeps it cached and can offload its network."""

    DESCRIPTION = ("Loads a DeforHMR checkpoint from models/deforhmr (or the pack's deforhmr_model/weights/) and a body model "
                   "from models/smpl ('auto': an installed network, else the fit; 'download: NAME' fetches a known "
                   "network on first use). 'none' fits the body to the detected 2D keypoints instead of running a "
                   "network; the open body (shipped) is used when no SMPL file is installed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (checkpoint_choices(), {
                "default": AUTO_CHECKPOINT,
                "tooltip": "Network weights (.safetensors) in ComfyUI/models/deforhmr. 'auto' runs an installed "
                           "network (def-m, else hmr2), else fits; 'none' always fits the body to the 2D keypoints; "
                           "'download: hmr2' downloads HMR 2.0 into models/deforhmr on first use (several GB)."}),
            "body_model": (body_choices(), {
                "default": BODY_AUTO,
                "tooltip": "SMPL files (.npz converted with `deforhmr convert-smpl`, or the official .pkl) go in "
                           "ComfyUI/models/smpl. SMPL is licensed by MPI and never downloaded by this pack."}),
            "device": (list(DEVICES), {"default": "auto", "tooltip": "auto = ComfyUI's device"}),
            "precision": (list(PRECISIONS), {
                "default": "auto",
                "tooltip": "Weight precision. auto = fp32 weights, bf16 autocast on CUDA. fp16/bf16 need a GPU."}),
        }}

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint, body_model):
        # Runs before the graph: a missing file is reported with the folders searched and the fix
        # (ComfyUI then skips its own "value not in list" check for these two inputs).
        from .downloads import download_name
        if checkpoint not in (NO_CHECKPOINT, AUTO_CHECKPOINT) and download_name(checkpoint) is None:
            msg = missing_file_message(checkpoint, host.CHECKPOINT_FOLDER, "checkpoint")
            if msg:
                return msg
        if body_model == BODY_OPEN:
            return missing_file_message(OPEN_BODY_FILE, host.BODY_FOLDER, "open body") or True
        if body_model != BODY_AUTO:
            return missing_file_message(body_model, host.BODY_FOLDER, "body model") or True
        return True

    @classmethod
    def IS_CHANGED(cls, checkpoint, body_model, device, precision):
        # Reload when a chosen file is replaced on disk (same name, new content).
        stamps = []
        for name, folder in ((checkpoint, host.CHECKPOINT_FOLDER), (body_model, host.BODY_FOLDER)):
            path = (host.resolve_model_file(name, folder)
                    if name not in (NO_CHECKPOINT, AUTO_CHECKPOINT, BODY_AUTO, BODY_OPEN) else None)
            stamps.append(path.stat().st_mtime if path is not None and path.exists() else name)
        return f"{stamps}|{device}|{precision}"

    def load(self, checkpoint, body_model, device="auto", precision="auto"):
        import torch
        from deforhmr_model.body.model import default_body_data
        from deforhmr_model.pipeline import HMRPipeline

        host.sync_search_dirs()
        require_file = host.weight_store().require
        dev = host.torch_device(device)
        dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if dtype is torch.float16 and dev.type == "cpu":
            raise ValueError("precision fp16 needs a GPU (CPU kernels are missing for half precision); "
                             "choose auto, fp32 or bf16")
        from .downloads import download_checkpoint, download_name
        model = None
        if checkpoint == AUTO_CHECKPOINT:
            from deforhmr_model.network.checkpoint import installed_model
            model = installed_model(store=host.weight_store())
        elif download_name(checkpoint) is not None:
            model = download_checkpoint(download_name(checkpoint))
        elif checkpoint != NO_CHECKPOINT:
            model = (host.resolve_model_file(checkpoint, host.CHECKPOINT_FOLDER)
                     or require_file(checkpoint, subdirs=("", host.CHECKPOINT_FOLDER)))
        if body_model == BODY_AUTO:  # SMPL if installed in any of the pack's folders, else the open body
            body = default_body_data(store=host.weight_store())
        elif body_model == BODY_OPEN:
            body = host.resolve_model_file(OPEN_BODY_FILE, host.BODY_FOLDER) or require_file(OPEN_BODY_FILE)
        else:
            body = (host.resolve_model_file(body_model, host.BODY_FOLDER)
                    or require_file(body_model, subdirs=("", host.BODY_FOLDER)))
        with host.autograd_allowed():
            pipe = HMRPipeline(model=str(model) if model is not None else None,
                               body=body if body_model == BODY_AUTO else str(body), device=dev, dtype=dtype)
        patcher = host.make_patcher(pipe.model, dev) if pipe.model is not None else None
        shown = checkpoint if checkpoint != AUTO_CHECKPOINT and download_name(checkpoint) is None else pipe.model_name
        label = f"{shown if model is not None else 'fit'} + {pipe.body_data.name}"
        from .handles import ModelHandle
        return (ModelHandle(pipeline=pipe, patcher=patcher, device=dev, label=label),)
