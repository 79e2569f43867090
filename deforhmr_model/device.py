"""Choosing the torch device: the one resolver used by the CLI, the pipeline, training,
evaluation and the ComfyUI nodes.

``"auto"`` (the default everywhere) picks CUDA (``cuda:LOCAL_RANK`` under ``torchrun``),
then Apple's MPS, then the CPU, and logs one line saying what it chose on the
``deforhmr.device`` logger (INFO; the ``deforhmr`` command shows it). An explicit name
(``cpu``, ``cuda``, ``cuda:1``, ``mps``) is checked: a device this machine does not have,
or one that cannot run a model (``meta``), raises :class:`DeviceError`, a message that
starts with the device named and ends with the fix.
"""
from __future__ import annotations

import logging

import torch

__all__ = ["DeviceError", "resolve_device", "mps_available"]

log = logging.getLogger("deforhmr.device")
_RUNNABLE = ("cpu", "cuda", "mps")


class DeviceError(ValueError):
    """The requested device does not exist here or cannot run the model; the message says what to use."""


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``name``.

    Args:
        name: "auto" (or None): CUDA, then MPS, then CPU; else a torch device name or object.
        local_rank: the CUDA index for "auto" and a bare "cuda" (``torchrun``'s LOCAL_RANK).
    Returns:
        A ``torch.device`` with an index for CUDA.
    Raises:
        DeviceError: an unknown name, a device type that cannot run a model (e.g. "meta"),
            CUDA/MPS not available, or a CUDA index beyond the GPUs present.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        if torch.cuda.is_available():
            dev, why = torch.device(f"cuda:{local_rank}"), torch.cuda.get_device_name(local_rank)
        elif mps_available():
            dev, why = torch.device("mps"), "Apple GPU"
        else:
            dev, why = torch.device("cpu"), "no CUDA or MPS GPU found"
        log.info("deforhmr: device auto -> %s (%s)", dev, why)
        return dev
    try:
        dev = torch.device(name.strip() if isinstance(name, str) else name)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"{name!r}: unknown device ({e}); use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in _RUNNABLE:
        raise DeviceError(f"{dev}: not a device that can run the model; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{dev}: CUDA is not available in this torch build/machine; "
                              "use auto or cpu (or install a CUDA build of torch)")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
        if dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{dev}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                              f"use cuda:0..cuda:{torch.cuda.device_count() - 1} or auto")
    if dev.type == "mps" and not mps_available():
        raise DeviceError("mps: MPS (Apple GPU) is not available here; use auto or cpu")
    return dev
