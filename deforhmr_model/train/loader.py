"""From mixed sources to batches: the training dataset, the batch plan, the feature cache.

* :class:`TrainDataset` — map-style torch dataset keyed by ``(global index,
  epoch)``. The augmentation of a sample is drawn from
  ``numpy.random.default_rng((seed, epoch, index))`` (``augment.py``), so a batch
  is a pure function of the run seed, the epoch and the indices: data-loader
  workers, restarts and the number of GPUs do not change what a sample looks like.
* :class:`BatchPlan` — the ordered global batches of an epoch and how they are
  split over ranks (DDP) and gradient-accumulation micro steps: global batch
  ``k`` is ``indices[k G : (k + 1) G]``; micro step ``a`` of rank ``r`` takes
  chunk ``a * W + r`` of size ``G / (W A)``. Incomplete last batches are dropped.
  Resuming at step ``k`` just starts the plan there (the sampler position).
* :class:`FeatureCache` — the encoder is frozen (paper §3.1), so its output
  for a given crop never changes. The cache stores encoder features for every
  ``(sample, augmentation variant)`` in one float16 ``numpy.memmap`` file; with
  it, epochs run the decoder only. Augmentation in cached mode uses
  ``variant = epoch % variants`` instead of the epoch (a fixed set of
  ``variants`` augmented crops per sample, all pre-computed); with augmentation
  off use ``variants = 1``. Size: C x 16 x 12 x 2 bytes per crop and variant
  (ViT-H: 480 KB). The file name carries a fingerprint of the encoder weights,
  the data and the augmentation settings; a finished cache has a ``.json``
  sidecar written last (a half-built cache is rebuilt).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from deforhmr_model.files.atomic import atomic_write
from deforhmr_model.train.augment import AugConfig, make_crop_sample, sample_aug
from deforhmr_model.train.mixing import MixedSource


class TrainDataset(torch.utils.data.Dataset):
    """Items: ``dataset[(index, epoch)]`` -> dict of tensors.

    Keys: ``img`` (3, 256, 192) f32 or ``features`` (C, h, w) f32 (cached mode) |
    ``keypoints_2d`` (24, 3) normalised crop coords + conf | ``keypoints_3d`` (24, 4) metres +
    conf | ``global_orient`` (3,) aa | ``body_pose`` (23, 3) aa | ``betas`` (10,) |
    ``has_smpl``, ``has_betas`` () | ``box_center`` (2,) px | ``box_size`` () px | ``index`` () |
    ``aug_key`` () the augmentation key used (epoch or variant).
    """

    def __init__(self, source: MixedSource, aug: AugConfig, seed: int = 0,
                 features: "FeatureCache | None" = None):
        self.source, self.aug, self.seed, self.features = source, aug, int(seed), features

    def __len__(self) -> int:
        return len(self.source)

    def aug_key(self, epoch: int) -> int:
        """The augmentation epoch key: the epoch, or ``epoch % variants`` in cached mode."""
        return epoch % self.features.variants if self.features is not None else epoch

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, epoch = (int(key), 0) if np.isscalar(key) else (int(key[0]), int(key[1]))
        variant = self.aug_key(epoch)
        params = sample_aug(self.aug, np.random.default_rng((self.seed, variant, index)))
        lab = self.source.labels(index)
        image = None if self.features is not None else self.source.image(index)
        cs = make_crop_sample(image, lab.center, lab.size, lab.keypoints_2d, lab.keypoints_3d,
                              lab.pose, lab.betas, lab.has_smpl, lab.has_betas, params)
        item = {
            "keypoints_2d": torch.from_numpy(cs.keypoints_2d),
            "keypoints_3d": torch.from_numpy(cs.keypoints_3d),
            "global_orient": torch.from_numpy(cs.pose[:3].copy()),
            "body_pose": torch.from_numpy(cs.pose[3:].reshape(23, 3).copy()),
            "betas": torch.from_numpy(cs.betas),
            "has_smpl": torch.tensor(cs.has_smpl, dtype=torch.float32),
            "has_betas": torch.tensor(cs.has_betas, dtype=torch.float32),
            "box_center": torch.from_numpy(cs.box_center),
            "box_size": torch.tensor(cs.box_size, dtype=torch.float32),
            "index": torch.tensor(index),
            "aug_key": torch.tensor(variant),
        }
        if self.features is not None:
            item["features"] = torch.from_numpy(self.features.read(index, variant).astype(np.float32))
        else:
            item["img"] = torch.from_numpy(cs.img)
        return item


class BatchPlan:
    """Global batches of one epoch, split over ``world`` ranks and ``accum`` micro steps.

    Args:
        source: the mixture (gives the epoch's index list).
        global_batch: G, samples per optimiser step over all ranks.
        world, rank: DDP world size and this process's rank.
        accum: A, gradient-accumulation micro steps per optimiser step.
        seed: run seed (epoch order).
    Raises:
        ValueError: G not divisible by W x A, or an epoch shorter than one global batch.
    """

    def __init__(self, source: MixedSource, global_batch: int, world: int = 1, rank: int = 0,
                 accum: int = 1, seed: int = 0):
        if global_batch % (world * accum):
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world} x "
                             f"accumulation steps {accum}; choose --accum so that it divides")
        self.source, self.G, self.W, self.r, self.A, self.seed = source, global_batch, world, rank, accum, seed
        self.micro = global_batch // (world * accum)
        if self.steps_per_epoch == 0:
            raise ValueError(f"the epoch has {source.epoch_size} samples, fewer than one global batch "
                             f"({global_batch}); lower the batch size or add data")

    @property
    def steps_per_epoch(self) -> int:
        return self.source.epoch_size // self.G

    def micro_batches(self, epoch: int, start_step: int = 0) -> Iterator[list[tuple[int, int]]]:
        """Keys ``(index, epoch)`` of this rank's micro batches, from optimiser step ``start_step`` on."""
        idx = self.source.epoch_indices(epoch, self.seed)
        for k in range(start_step, self.steps_per_epoch):
            batch = idx[k * self.G:(k + 1) * self.G]
            for a in range(self.A):
                c = a * self.W + self.r
                yield [(int(i), epoch) for i in batch[c * self.micro:(c + 1) * self.micro]]


class _PlanSampler:
    """A batch sampler (iterable of key lists) for one epoch, starting at a given step."""

    def __init__(self, plan: BatchPlan, epoch: int, start_step: int):
        self.plan, self.epoch, self.start = plan, epoch, start_step

    def __iter__(self):
        return self.plan.micro_batches(self.epoch, self.start)

    def __len__(self) -> int:
        return (self.plan.steps_per_epoch - self.start) * self.plan.A


def make_loader(dataset: TrainDataset, plan: BatchPlan, epoch: int, start_step: int = 0,
                workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """DataLoader over this rank's micro batches of ``epoch`` (from ``start_step``)."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=_PlanSampler(plan, epoch, start_step),
                                       num_workers=workers, pin_memory=pin_memory,
                                       persistent_workers=False)


class FeatureCache:
    """Frozen-encoder features per (sample, augmentation variant) in a float16 memmap.

    Args:
        folder: where ``features-<fingerprint>.f16`` and its ``.json`` live.
        num_items: samples in the (mixed) dataset.
        variants: augmentation variants per sample (1 without augmentation).
        shape: (C, h, w) of one feature map.
        fingerprint: hex string identifying encoder weights + data + augmentation.
    """

    def __init__(self, folder: str | Path, num_items: int, variants: int, shape: tuple[int, int, int],
                 fingerprint: str):
        self.folder = Path(folder)
        self.num_items, self.variants, self.shape = int(num_items), int(variants), tuple(shape)
        self.path = self.folder / f"features-{fingerprint}.f16"
        self.meta_path = self.path.with_suffix(".json")
        self._mm: np.memmap | None = None

    @property
    def ready(self) -> bool:
        return self.meta_path.is_file() and self.path.is_file()

    def read(self, index: int, variant: int) -> np.ndarray:
        """(C, h, w) float16 features of one sample/variant."""
        if self._mm is None:
            self._mm = np.memmap(self.path, np.float16, "r", shape=(self.num_items * self.variants, *self.shape))
        return np.asarray(self._mm[index * self.variants + variant])

    @torch.no_grad()
    def build(self, model, dataset: TrainDataset, device: torch.device, batch_size: int = 64,
              rank: int = 0, world: int = 1, barrier=None, progress: bool = True) -> None:
        """Run the frozen encoder over every (sample, variant); rank r fills rows r::world.

        ``dataset`` must be an image-mode :class:`TrainDataset` with the same augmentation and
        seed as training. ``barrier`` (e.g. ``torch.distributed.barrier``) syncs ranks before the
        sidecar is written by rank 0. Needs a folder shared by all ranks.
        """
        from tqdm import tqdm
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = self.num_items * self.variants
        if rank == 0 and (not self.path.is_file() or self.path.stat().st_size != rows * np.prod(self.shape) * 2):
            np.memmap(self.path, np.float16, "w+", shape=(rows, *self.shape)).flush()
        if barrier is not None:
            barrier()
        mm = np.memmap(self.path, np.float16, "r+", shape=(rows, *self.shape))
        keys = [(i, v) for v in range(self.variants) for i in range(self.num_items)][rank::world]
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                             sampler=keys, num_workers=0)
        model.eval()
        for batch in tqdm(loader, desc="caching encoder features", disable=not progress or rank != 0):
            feats = model.forward_features(batch["img"].to(device)).float().cpu().numpy()
            rows_b = batch["index"].numpy() * self.variants + batch["aug_key"].numpy()
            mm[rows_b] = feats.astype(np.float16)
        mm.flush()
        del mm
        if barrier is not None:
            barrier()
        if rank == 0:
            meta = dict(num_items=self.num_items, variants=self.variants, shape=list(self.shape))
            atomic_write(self.meta_path, lambda f: f.write(json.dumps(meta).encode()))
        if barrier is not None:
            barrier()


def fingerprint(model, source: MixedSource, aug: AugConfig, seed: int, variants: int) -> str:
    """Hex fingerprint of encoder weights (pos_embed and patch kernel), data and augmentation."""
    h = hashlib.sha256()
    enc = model.backbone
    for t in (enc.pos_embed, enc.patch_embed.proj.weight):
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(model.config.to_json().encode())
    h.update(json.dumps([[getattr(s, "name", "?"), len(s)] for s in source.sources]).encode())
    h.update(json.dumps(asdict(aug), sort_keys=True).encode())
    h.update(f"{seed}:{variants}".encode())
    return h.hexdigest()[:16]
