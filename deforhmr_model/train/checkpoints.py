"""Training checkpoints: one folder per step, written by every rank, and exact resume.

Layout (``out_dir/checkpoints/step-XXXXXXXX/``): ``model.safetensors``
(:func:`deforhmr_model.network.checkpoint.save_checkpoint`, config in the metadata),
``train_state.pt`` (optimiser state, the loop counters, the run config) and
``rng-rank<r>.pt`` (torch CPU/CUDA, numpy and Python RNG states of each rank). Both
``.pt`` files hold only tensors and plain values and are read back with
``torch.load(weights_only=True)``; ``out_dir/checkpoints/latest`` names the newest; only
the newest ``keep`` complete folders are kept. Every file is written atomically.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deforhmr_model.files.atomic import atomic_write
from deforhmr_model.network.checkpoint import load_state, save_checkpoint
from deforhmr_model.train.distributed import DistInfo, barrier

COUNTERS = ("epoch", "step_in_epoch", "global_step")


class RunCheckpoints:
    """The checkpoints of one run.

    Args:
        out: the run folder (``TrainConfig.out_dir``).
        dist: this process's :class:`~.distributed.DistInfo` (rank 0 writes the shared files).
        keep: complete checkpoint folders kept (at least 1).
    """

    def __init__(self, out: str | Path, dist: DistInfo, keep: int = 3):
        self.out, self.dist, self.keep = Path(out), dist, max(int(keep), 1)
        self.root = self.out / "checkpoints"

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, counters: dict[str, int],
             config: dict) -> Path:
        """Write the folder for ``counters["global_step"]`` (all ranks call this; it synchronises)."""
        folder = self.root / f"step-{counters['global_step']:08d}"
        if self.dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model, folder / "model.safetensors")
            state = {"optimizer": optimizer.state_dict(), **{k: counters[k] for k in COUNTERS},
                     "world": self.dist.world, "config": json.loads(json.dumps(config, default=str))}
            atomic_write(folder / "train_state.pt", lambda f: torch.save(state, f))
        barrier()
        rng = capture_rng()
        atomic_write(folder / f"rng-rank{self.dist.rank}.pt", lambda f: torch.save(rng, f))
        barrier()
        if self.dist.is_main:
            atomic_write(self.root / "latest", lambda f: f.write(folder.name.encode()))
            self._prune()
        return folder

    def folder(self, path: str | Path = "latest") -> Path:
        """The checkpoint folder ``path`` names (``"latest"``: the newest of this run).

        Raises:
            FileNotFoundError: no checkpoint, or the folder lacks a file (named).
        """
        folder = Path(path)
        if str(path) == "latest":
            pointer = self.root / "latest"
            if not pointer.is_file():
                raise FileNotFoundError(f"no checkpoint to resume from: {pointer} does not exist")
            folder = self.root / pointer.read_text().strip()
        for name in ("model.safetensors", "train_state.pt"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"checkpoint {folder} is incomplete: {name} missing")
        return folder

    def load(self, path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
             device: torch.device) -> dict[str, int]:
        """Restore model, optimiser and this rank's RNG states; returns the loop counters."""
        from safetensors.torch import load_file
        folder = self.folder(path)
        load_state(model, load_file(str(folder / "model.safetensors")), source=str(folder))
        model.to(device)
        state = torch.load(folder / "train_state.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        rng_file = folder / f"rng-rank{self.dist.rank}.pt"
        if rng_file.is_file():
            restore_rng(torch.load(rng_file, weights_only=True))
        return {k: int(state[k]) for k in COUNTERS}

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step-*") if (p / "train_state.pt").is_file())
        for old in done[:-self.keep]:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()


def capture_rng() -> dict:
    """This process's torch (CPU and CUDA), numpy and Python RNG states as tensors/plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(rng: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(rng["torch"])
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
