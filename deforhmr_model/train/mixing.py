"""Dataset mixtures: several sources drawn with fixed weights (HMR 2.0 / SPIN style).

A mixture file is a small JSON (or TOML, Python >= 3.11) document::

    {"epoch_size": 100000,
     "datasets": [
        {"name": "3dpw", "path": "3dpw_train.npz", "image_root": "3DPW", "weight": 0.2},
        {"name": "coco", "path": "coco-train/{000000..000017}.tar", "weight": 0.3}]}

Relative ``path``/``image_root`` are resolved against the data root given to
:func:`open_mixture` (default: the mixture file's folder). Weights are
normalised to sum to 1. ``epoch_size`` defaults to the total number of people.

An epoch is a deterministic list of ``epoch_size`` global sample indices
(:meth:`MixedSource.epoch_indices`): the source of each slot is drawn with the
weights, and each source is walked through its own shuffled order (cycling),
all from ``numpy.random.default_rng((seed, epoch))``. The same seed and epoch
always give the same list, which is what exact resume relies on.

The paper's mixture (§3.3: 3DPW and MPI-INF-3DHP with SMPL ground truth; COCO,
MPII and Human3.6M with CLIFF pseudo-labels) ships as ``paper_mix.json``; the
paper gives no weights, ours are SPIN-like and stated in that file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deforhmr_model.datasets.readers import DatasetFileError, open_source

PAPER_MIX = Path(__file__).with_name("paper_mix.json")


@dataclass(frozen=True)
class MixEntry:
    """One source of a mixture: name, data file/pattern, image folder, relative weight."""

    name: str
    path: str
    weight: float = 1.0
    image_root: str | None = None


@dataclass(frozen=True)
class MixConfig:
    """A whole mixture; ``epoch_size`` None means "sum of the sources' lengths"."""

    entries: tuple[MixEntry, ...]
    epoch_size: int | None = None


def load_mix_config(path: str | Path) -> MixConfig:
    """Read a mixture file (.json, or .toml on Python >= 3.11).

    Raises:
        DatasetFileError: missing file, bad syntax, missing ``datasets``/``path``, bad weights.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"mixture file not found: {path}")
    try:
        if path.suffix == ".toml":
            import tomllib
            doc = tomllib.loads(path.read_text())
        else:
            doc = json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001
        raise DatasetFileError(f"{path}: cannot parse the mixture file ({exc})") from exc
    items = doc.get("datasets") if isinstance(doc, dict) else None
    if not items:
        raise DatasetFileError(f"{path}: needs a non-empty 'datasets' list of {{name, path, weight}}")
    entries = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "path" not in it:
            raise DatasetFileError(f"{path}: datasets[{i}] needs a 'path'")
        w = float(it.get("weight", 1.0))
        if not w > 0:
            raise DatasetFileError(f"{path}: datasets[{i}] weight must be > 0, got {w}")
        entries.append(MixEntry(name=str(it.get("name", Path(it["path"]).stem)), path=str(it["path"]),
                                weight=w, image_root=it.get("image_root")))
    size = doc.get("epoch_size")
    return MixConfig(tuple(entries), None if size is None else int(size))


class MixedSource:
    """Several sources behind one global index (source k's sample i = ``offsets[k] + i``).

    Args:
        sources: objects with ``__len__``, ``labels(i)``, ``image(i)`` and ``name``.
        weights: relative sampling weights (normalised).
        epoch_size: samples per epoch (default: total length).
    """

    def __init__(self, sources: list, weights: list[float] | None = None, epoch_size: int | None = None):
        if not sources:
            raise ValueError("a mixture needs at least one source")
        self.sources = list(sources)
        self.lengths = np.array([len(s) for s in self.sources], np.int64)
        if (self.lengths == 0).any():
            empty = [s.name for s, n in zip(self.sources, self.lengths) if n == 0]
            raise DatasetFileError(f"empty dataset source(s): {empty}")
        w = np.ones(len(sources)) if weights is None else np.asarray(weights, np.float64)
        self.weights = w / w.sum()
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.epoch_size = int(epoch_size or self.lengths.sum())

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (source number, index inside it)."""
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return k, int(index - self.offsets[k])

    def labels(self, index: int):
        k, i = self.locate(index)
        return self.sources[k].labels(i)

    def image(self, index: int) -> np.ndarray:
        k, i = self.locate(index)
        return self.sources[k].image(i)

    def epoch_indices(self, epoch: int, seed: int) -> np.ndarray:
        """(epoch_size,) int64 global indices for ``epoch`` (deterministic in (seed, epoch))."""
        rng = np.random.default_rng((seed, epoch))
        if len(self.sources) == 1 and self.epoch_size == len(self):
            return rng.permutation(len(self)).astype(np.int64)
        which = rng.choice(len(self.sources), size=self.epoch_size, p=self.weights)
        out = np.empty(self.epoch_size, np.int64)
        for k, n in enumerate(self.lengths):
            slots = np.flatnonzero(which == k)
            order = np.concatenate([rng.permutation(n) for _ in range(-(-len(slots) // n))]) if len(slots) else []
            out[slots] = self.offsets[k] + np.asarray(order[:len(slots)], np.int64)
        return out


def open_mixture(config: MixConfig | str | Path, data_root: str | Path | None = None) -> MixedSource:
    """Open every source of a mixture (errors name the missing files of *all* sources)."""
    if not isinstance(config, MixConfig):
        root = Path(data_root) if data_root is not None else Path(config).parent
        config = load_mix_config(config)
    else:
        root = Path(data_root or ".")
    sources, weights, problems = [], [], []
    for e in config.entries:
        path = e.path if Path(e.path).is_absolute() else str(root / e.path)
        image_root = None if e.image_root is None else (root / e.image_root)
        try:
            src = open_source(path, image_root)
            src.name = e.name
            sources.append(src)
            weights.append(e.weight)
        except DatasetFileError as exc:
            problems.append(f"[{e.name}] {exc}")
    if problems:
        raise DatasetFileError("cannot open the training mixture:\n  " + "\n  ".join(problems))
    return MixedSource(sources, weights, config.epoch_size)
