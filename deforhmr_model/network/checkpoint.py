"""Model files: DeforHMR safetensors checkpoints and importers for HMR 2.0 / ViTPose files.

* ``save_checkpoint(model, path)``: safetensors, every ``state_dict`` tensor under its own key
  (``backbone.*``, ``smpl_head.*``), metadata ``{"format": "pt", "deforhmr_format": "1",
  "config": <ModelConfig JSON>}``; written to a temporary file and renamed (never partial).
* ``load_model(name_or_path, device, dtype)``: rebuild from the stored config and load strictly.
* ``import_hmr2_checkpoint(ckpt)``: the public HMR 2.0 Lightning ``.ckpt`` -> ``reg-s`` model
  (``hmr2_reference.md`` §2.4, §8): keeps ``backbone.*`` and ``smpl_head.*`` (the mean-parameter
  buffers included), drops ``smpl.*``, ``discriminator.*`` and ``initialized``; names map 1:1.
* ``load_vitpose_backbone(model, pth)``: a ViTPose/mmpose ``.pth`` (``backbone.*`` kept with the
  prefix stripped, ``keypoint_head.*`` and the rest dropped) or a bare backbone state dict (HMR 2.0's
  ``vitpose_backbone.pth``); ViTPose+ MoE files get ``fc2`` concatenated with one expert (§1.4).
* ``convert_checkpoint(src, dst)``: any of the above to a DeforHMR safetensors file (CLI).

Pickled files are read with ``torch.load(weights_only=True)`` plus an exact allow-list
(:func:`allowed_globals`): a yacs ``CfgNode`` in HMR 2.0's ``hyper_parameters`` becomes an
OrderedDict (yacs is never imported), numpy scalars in mmcv ``meta`` use numpy's scalar/dtype
reconstructors. Any other global a file names is refused before anything in it runs.

A file that does not fit raises :class:`CheckpointError` listing missing / unexpected / mis-shaped
keys (the first few and the counts) and what the file looks like (variant, backbone).
"""
from __future__ import annotations

import os
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from deforhmr_model.network.configs import BACKBONES, ModelConfig
from deforhmr_model.network.model import DeforHMR, build_from_config, build_model
from deforhmr_model.files.atomic import atomic_path
from deforhmr_model.files.weights import require_file

FORMAT_VERSION = "1"
HMR2_DROPPED_PREFIXES = ("smpl.", "discriminator.")
HMR2_DROPPED_KEYS = ("initialized",)
_SHOW = 5   # keys listed per category in error messages


class CheckpointError(ValueError):
    """A model file is unreadable or does not match the model; the message says what it holds."""


# ---------------------------------------------------------------------------- safetensors I/O

def save_checkpoint(model: DeforHMR, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` (weights + config) to a safetensors file, atomically.

    Args:
        model: a :class:`DeforHMR`.
        path: destination ``.safetensors`` path (its folder must exist).
        dtype: optional floating dtype to store (e.g. ``torch.bfloat16``); default keeps the model's.
    Returns:
        The path written. Raises OSError if the folder is not writable.
    """
    path = Path(path)
    tensors = {}
    for key, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()                          # a view of a larger storage: own its memory
        tensors[key] = t
    meta = {"format": "pt", "deforhmr_format": FORMAT_VERSION, "config": model.config.to_json()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The :class:`ModelConfig` stored in a DeforHMR safetensors file; CheckpointError if absent."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:   # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if "config" not in meta:
        raise CheckpointError(f"{path} has no DeforHMR config in its metadata; it looks like "
                              f"{describe_state_dict(shapes)}. Convert it with "
                              f"'deforhmr convert-checkpoint' from its original file.")
    try:
        return ModelConfig.from_json(meta["config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> DeforHMR:
    """Load a DeforHMR model in eval mode.

    Args:
        name_or_path: a file path (``.safetensors``; ``.ckpt`` = HMR 2.0 import), or a model name
            looked up as ``<name>.safetensors`` in the weights folders (``weights.require_file``,
            subfolders "" and "deforhmr").
        device: target device. dtype: optional floating dtype (e.g. ``torch.bfloat16`` on GPU).
    Raises:
        MissingModelFileError: the name/path is not installed (message says where to put it).
        CheckpointError: the file does not match its config or is not a model file.
    """
    path = _resolve(name_or_path)
    if path.suffix == ".ckpt":
        model = import_hmr2_checkpoint(path)
    elif path.suffix in (".pth", ".pt"):
        raise CheckpointError(f"{path} is a pickled torch file; ViTPose files hold only an encoder "
                              f"(use load_vitpose_backbone or convert_checkpoint with a variant)")
    else:
        cfg = read_config(path)
        model = build_from_config(cfg, device="meta")
        load_state(model, _read_safetensors(path), source=str(path))
    return model.to(device=device, dtype=dtype).eval()


AUTO_MODELS = ("def-m", "hmr2")
"""Checkpoint names ``method=auto`` tries, in order: a DeforHMR def-m you trained, then the
converted HMR 2.0 network (``deforhmr download hmr2``)."""


def installed_model(names: tuple[str, ...] = AUTO_MODELS, store=None) -> str | None:
    """The first of ``names`` installed as ``<name>.safetensors`` in ``store``'s folders (a
    :class:`~deforhmr_model.files.weights.WeightStore`, default a fresh one; subfolders "" and
    "deforhmr"), or None (then the pipeline fits)."""
    from deforhmr_model.files.weights import find_file
    for name in names:
        if find_file(f"{name}.safetensors", subdirs=("", "deforhmr"), store=store) is not None:
            return name
    return None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, each in its own (SIMD-aligned) CPU allocation, read one
    at a time so peak memory stays near the model size."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).clone() for k in f.keys()}


def _resolve(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix or len(p.parts) > 1:
        return require_file(str(p), subdirs=("", "deforhmr"))
    return require_file(f"{p}.safetensors", subdirs=("", "deforhmr"))


# ---------------------------------------------------------------------------- importers

def import_hmr2_checkpoint(ckpt: str | os.PathLike) -> DeforHMR:
    """HMR 2.0 ``.ckpt`` (e.g. ``epoch=35-step=1000000.ckpt``) -> ``reg-s`` :class:`DeforHMR` on CPU.

    The backbone size is read from ``backbone.pos_embed`` and the block count (ViT-H for the
    public file). Raises CheckpointError listing keys that do not fit.
    """
    raw = load_torch_file(ckpt)
    sd = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{ckpt} holds no state_dict (got {type(raw).__name__})")
    kept = {k: v for k, v in sd.items()
            if not k.startswith(HMR2_DROPPED_PREFIXES) and k not in HMR2_DROPPED_KEYS}
    shapes = _shapes(kept)
    backbone = infer_backbone({k[len("backbone."):]: s for k, s in shapes.items() if k.startswith("backbone.")})
    if backbone is None:
        raise CheckpointError(f"{ckpt} is not an HMR 2.0 checkpoint: it looks like {describe_state_dict(shapes)}")
    model = build_model("reg-s", backbone, device="meta", **_hmr2_decoder_sizes(shapes))
    load_state(model, kept, source=str(ckpt))
    return model.eval()


def _hmr2_decoder_sizes(shapes: Mapping[str, tuple]) -> dict:
    """Decoder sizes of an HMR 2.0-layout head read from its shapes (width D, depth, FFN width,
    per-head widths with HMR 2.0's 8 heads); the public file gives the ``reg-s`` defaults
    (1024, 6, 1024, 64, 64). Empty when the head keys are absent (load_state then reports it)."""
    h = "smpl_head.transformer."
    layer0 = f"{h}transformer.layers.0."
    need = (f"{h}pos_embedding", f"{layer0}0.fn.to_qkv.weight", f"{layer0}1.fn.to_q.weight",
            f"{layer0}2.fn.net.0.weight")
    if not all(k in shapes for k in need):
        return {}
    layers = {k.split(".")[4] for k in shapes if k.startswith(f"{h}transformer.layers.")}
    return dict(dim=shapes[need[0]][-1], depth=len(layers), mlp_dim=shapes[need[3]][0],
                self_dim_head=shapes[need[1]][0] // 3 // 8, cross_dim_head=shapes[need[2]][0] // 8)


def load_vitpose_backbone(model: DeforHMR | torch.nn.Module, pth: str | os.PathLike, expert: int = 0):
    """Load ViTPose encoder weights into ``model.backbone`` (or into a bare ViTEncoder); returns model.

    Args:
        pth: mmpose/ViTPose ``.pth`` (dict with ``state_dict``; keys ``backbone.*`` kept, heads
            dropped) or a bare backbone state dict.
        expert: ViTPose+ MoE expert concatenated to ``mlp.fc2`` (0 = COCO).
    Raises:
        CheckpointError: no backbone keys, or a backbone of another size (named in the message).
    """
    raw = load_torch_file(pth)
    sd = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{pth} holds no state_dict (got {type(raw).__name__})")
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    sd = merge_moe_experts(dict(sd), expert, source=str(pth))
    target = model.backbone if isinstance(model, DeforHMR) else model
    load_state(target, sd, source=str(pth))
    return model


def merge_moe_experts(sd: dict, expert: int, source: str = "state dict") -> dict:
    """ViTPose+ (``hmr2_reference.md`` §1.4): ``mlp.fc2`` (C - P, hidden) + ``mlp.experts.{expert}``
    (P, hidden) -> ``mlp.fc2`` (C, hidden), for weight and bias; other experts dropped."""
    if not any(".mlp.experts." in k for k in sd):
        return sd
    out = {k: v for k, v in sd.items() if ".mlp.experts." not in k}
    for key in [k for k in sd if k.endswith(".mlp.fc2.weight")]:
        stem = key[: -len("fc2.weight")]
        for kind in ("weight", "bias"):
            ek = f"{stem}experts.{expert}.{kind}"
            if ek not in sd:
                raise CheckpointError(f"{source}: MoE expert {expert} missing ({ek})")
            out[f"{stem}fc2.{kind}"] = torch.cat([sd[f"{stem}fc2.{kind}"], sd[ek]], dim=0)
    return out


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, variant: str | None = None,
                       backbone: str | None = None, dtype: torch.dtype | None = None) -> Path:
    """Convert a model file to a DeforHMR safetensors checkpoint (``deforhmr convert-checkpoint``).

    * ``.ckpt`` (HMR 2.0) -> ``reg-s``;
    * ``.pth``/``.pt`` (ViTPose) -> ``variant`` (required) with the ViTPose encoder and a freshly
      initialised decoder (a starting point for training); the backbone size is read from the file;
    * ``.safetensors`` -> re-saved (e.g. with another ``dtype``).

    Returns the destination path. Raises CheckpointError / MissingModelFileError.
    """
    src = Path(src)
    if not src.is_file():
        require_file(str(src))                     # raises MissingModelFileError naming the path
    if src.suffix in (".pth", ".pt"):
        if variant is None:
            raise CheckpointError(f"{src} holds only a ViTPose encoder; pass a variant (e.g. 'def-m') "
                                  f"to build a model around it")
        raw = load_torch_file(src)
        sd = raw.get("state_dict", raw) if isinstance(raw, Mapping) else {}
        bb = {k.removeprefix("backbone."): s for k, s in _shapes(sd).items()}
        backbone = backbone or infer_backbone(bb)
        if backbone is None:
            raise CheckpointError(f"{src}: no ViTPose backbone recognised; it looks like {describe_state_dict(_shapes(sd))}")
        model = load_vitpose_backbone(build_model(variant, backbone), src)
    else:
        model = load_model(src)
    return save_checkpoint(model, dst, dtype=dtype)


# ---------------------------------------------------------------------------- strict loading

def load_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` strictly (all keys, same shapes, finite values); meta modules
    get the tensors assigned (no copy). Raises CheckpointError with the differences and what the
    file looks like, or naming the tensors that hold NaN/inf."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = _shapes(state)
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {got[k]} (model: {expected[k]})" for k in expected if k in got and got[k] != expected[k]]
    if missing or unexpected or wrong:
        wants = (f"{module.config.variant} on {module.config.backbone}" if isinstance(module, DeforHMR)
                 else type(module).__name__)
        parts = [f"{source} does not fit the model ({wants}): the file looks like "
                 f"{describe_state_dict(got)}."]
        for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)):
            if items:
                more = f" ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
                parts.append(f"{len(items)} {name}: {', '.join(items[:_SHOW])}{more}.")
        raise CheckpointError(" ".join(parts))
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not v.is_meta and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (+{len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
        raise CheckpointError(f"{source} holds NaN or infinite weights in {len(bad)} tensor(s) "
                              f"({', '.join(bad[:_SHOW])}{more}); the file is damaged: download or "
                              f"convert it again.")
    is_meta = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict(dict(state), strict=True, assign=is_meta)


def _shapes(state: Mapping) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


# ---------------------------------------------------------------------------- describing files

def infer_backbone(shapes: Mapping[str, tuple]) -> str | None:
    """Backbone name from un-prefixed ViT keys (``pos_embed`` width and block count), or None."""
    if "pos_embed" not in shapes:
        return None
    embed = shapes["pos_embed"][-1]
    depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    for name, size in BACKBONES.items():
        if size["embed_dim"] == embed and size["depth"] == depth:
            return name
    return None


def describe_state_dict(shapes: Mapping[str, tuple]) -> str:
    """One line saying what a state dict (key -> shape) holds: variant, backbone, sizes."""
    if any(k.startswith("keypoint_head.") for k in shapes):
        bb = infer_backbone({k[9:]: s for k, s in shapes.items() if k.startswith("backbone.")})
        return f"a ViTPose pose-estimation checkpoint (backbone {bb or 'unknown'} + keypoint_head), not a full model"
    if "pos_embed" in shapes:
        return f"a bare ViT backbone state dict ({_backbone_text(shapes)})"
    bb = {k[9:]: s for k, s in shapes.items() if k.startswith("backbone.")}
    backbone = _backbone_text(bb) if bb else "no backbone"
    head = {k[10:]: s for k, s in shapes.items() if k.startswith("smpl_head.")}
    if "transformer.pos_embedding" not in head:
        extra = " (HMR 2.0 discriminator/SMPL keys only)" if any(k.startswith(HMR2_DROPPED_PREFIXES) for k in shapes) else ""
        return f"no DeforHMR/HMR 2.0 decoder{extra}; {backbone}"
    _, q, d = head["transformer.pos_embedding"]
    layers = {k.split(".")[3] for k in head if k.startswith("transformer.transformer.layers.")}
    cross = "transformer.transformer.layers.0.1.fn."
    deform = f"{cross}offset.0.weight" in head
    name = ("def" if deform else "reg") + ("-m" if q == 25 else "-s")
    details = [f"{q} query token{'s' if q != 1 else ''}", f"{'deformable' if deform else 'regular'} cross-attention"]
    if deform:
        groups = head[f"{cross}to_kv.weight"][1] // max(head[f"{cross}offset.0.weight"][0], 1)
        pe = "relative" if f"{cross}rpe" in head else "absolute" if f"{cross}abs_pe" in head else "none"
        details.append(f"{pe} PE")
        if f"{cross}rpe" in head:
            heads = head[f"{cross}rpe"][1]
            details.append(f"{heads} heads / {groups} groups")
            if (heads, groups) != (16, 8):
                name += f"-h{heads}g{groups}o{{1,2}}"   # λo is not stored in the weights
        if pe != "relative":
            name += "-pe-" + ("abs" if pe == "absolute" else "none")
    details.append(f"{len(layers)} decoder layers, D={d}")
    return f"{name} ({', '.join(details)}) on {backbone}"


def _backbone_text(shapes: Mapping[str, tuple]) -> str:
    if "pos_embed" not in shapes:
        return "an unrecognised backbone"
    depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    name = infer_backbone(shapes) or "a ViT"
    return f"{name} (embed {shapes['pos_embed'][-1]}, {depth} blocks)"


# ---------------------------------------------------------------------------- weights-only torch.load

class _InertMapping:
    """Stand-in for a pickled ``dict`` subclass: becomes a plain OrderedDict (items and attributes
    kept); its real class is never imported and none of its code runs."""

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


class _YacsCfgNode(_InertMapping):
    """``yacs.config.CfgNode``, read as an OrderedDict."""


# Every non-torch global a model file may name, each with the file that needs it. Exact names only:
# anything else (another numpy/builtins/torch function, a class of any library) is refused unread.
_STAND_INS: dict[str, type] = {
    # HMR 2.0 Lightning .ckpt (epoch=35-step=1000000.ckpt, hmr2_reference.md §8): hyper_parameters
    # ["cfg"] is the yacs config given to save_hyperparameters (protocol-2 NEWOBJ + BUILD + SETITEMS).
    "yacs.config.CfgNode": _YacsCfgNode,
}


def _numpy_globals() -> list[tuple[object, str]]:
    """numpy objects a model file may hold: scalars (and their dtypes) in an mmcv ``meta`` dict.

    ViTPose/mmpose ``.pth`` files saved by mmcv's runner carry ``meta["hook_msgs"]["best_score"]``,
    an ``np.float64``, pickled as ``numpy.core.multiarray.scalar(numpy.dtype('f8'), bytes)``
    (``numpy._core`` when written under numpy >= 2). ``numpy.dtype`` rebuilds into its concrete
    class (e.g. ``Float64DType``), which torch must also allow for the BUILD that follows; only the
    bool/integer/float dtype classes are listed (object, string and void dtypes are refused).
    """
    import numpy as np
    try:
        from numpy._core.multiarray import scalar
    except ImportError:                                # numpy 1.x
        from numpy.core.multiarray import scalar
    out: list[tuple[object, str]] = [(scalar, "numpy.core.multiarray.scalar"),
                                     (scalar, "numpy._core.multiarray.scalar"),
                                     (np.dtype, "numpy.dtype")]
    for code in "?bBhHiIlLqQefd":
        cls = type(np.dtype(code))
        out.append((cls, f"{cls.__module__}.{cls.__name__}"))
    return out


def allowed_globals() -> list[tuple[object, str]]:
    """The exact (object, "module.name") pairs :func:`load_torch_file` adds to torch's own
    weights-only allow-list (tensors, storages, OrderedDict, torch.Size, ...)."""
    return [(cls, name) for name, cls in _STAND_INS.items()] + _numpy_globals()


def load_torch_file(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` (CPU, memory-mapped for zip files) with
    :func:`allowed_globals` and nothing else: no code named by the file runs.

    Works for zip (torch >= 1.6) and legacy (non-zip) torch files.
    Raises:
        MissingModelFileError: the path does not exist.
        CheckpointError: unreadable, or the file names any other global (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        require_file(str(path))
    is_zip = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - torch/zip/pickle raise many types for hostile bytes
        raise CheckpointError(f"{path} was refused: {_refusal_reason(e)}") from None


_GLOBAL_PATTERNS = (r"GLOBAL (\S+) was not an allowed global",
                    r"unsupported GLOBAL (\S+) whose module",
                    r"unrecognized function (\S+)",
                    r"but got <class '([^']+)'>",
                    r"got <class '([^']+)'>")


def _refusal_reason(e: Exception) -> str:
    """One complete sentence for a failed weights-only load, without torch's advice to load it
    with ``weights_only=False`` (which would run the file's code)."""
    text = str(e)
    for pattern in _GLOBAL_PATTERNS:
        m = re.search(pattern, text)
        if m:
            name = m.group(1).rstrip(".,;:")
            name = name if "." in name else f"builtins.{name}"     # torch drops the "builtins." prefix
            return (f"it names {name}, which a model file does not need, so it was not read (nothing "
                    f"in it ran). Use the original HMR 2.0 .ckpt, ViTPose .pth or DeforHMR .safetensors file.")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()
             and "weights_only" not in ln and "trust the source" not in ln.lower()]
    first = lines[0] if lines else type(e).__name__
    first = first.removeprefix("WeightsUnpickler error: ").rstrip(".")
    if len(first) > 200:                     # keep whole words, say it was shortened
        first = first[:200].rsplit(" ", 1)[0] + " (...)"
    return f"it is not a readable torch model file ({type(e).__name__}: {first})."
