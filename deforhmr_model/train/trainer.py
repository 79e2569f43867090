"""The training loop (DeforHMR §3.3, supplementary A): frozen encoder, AdamW, DDP, exact resume.

Recipe defaults (paper): AdamW, lr 1e-4, weight decay 1e-3, global batch 200,
100 epochs, 256x192 crops, losses of :mod:`.losses`. The paper trained on two
GPUs with DDP; here any number of ranks (``torchrun``) and gradient
accumulation (``accum``) reach the same global batch: each optimiser step sees
exactly the same 200 samples, whatever the split (see :class:`.loader.BatchPlan`).

Weight decay is applied to weight matrices/kernels only. Excluded, as in DAT
(``no_weight_decay_keywords`` ``rpe_table``/``relative_position_bias_table``)
and timm's optimiser factory (parameters with ndim <= 1): every bias and norm
parameter, the deformable attention's relative-position tables (names
containing ``rpe``) and position embeddings (names containing ``pos_embed``).
The readout layers start at zero (:func:`zero_readout`; fresh models only) so
training starts from the mean parameters. No learning-rate schedule and no gradient clipping (none stated in the paper;
HMR 2.0 uses neither); ``grad_clip`` is available.

Precision: bf16 autocast on CUDA (``bf16=True``), float32 on CPU; the body model and
losses always run in float32.

The :class:`Trainer` runs the loop and the optimiser step; its collaborators:
checkpoints and exact resume (:class:`.checkpoints.RunCheckpoints`: one folder per step
under ``out_dir/checkpoints/``, model + optimiser + counters + every rank's RNG states),
validation (:func:`.validation.validate`), data (:class:`.loader.BatchPlan`,
:class:`.loader.FeatureCache`) and losses (:class:`.losses.HMRLoss`). Data order and
augmentation are pure functions of (seed, epoch, index), so restoring those
counters restores the sampler position exactly: resuming and taking one more
step gives bit-identical parameters to never having stopped (tested on CPU).

Logs: ``out_dir/log.jsonl`` (one JSON object per logged step: step, epoch, lr,
loss, each unweighted term, samples/s; and validation records) plus a console
line and a tqdm progress bar on rank 0.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deforhmr_model.train.augment import AugConfig
from deforhmr_model.train.checkpoints import RunCheckpoints
from deforhmr_model.train.distributed import DistInfo, all_reduce_mean, barrier
from deforhmr_model.train.loader import BatchPlan, FeatureCache, TrainDataset, fingerprint, make_loader
from deforhmr_model.train.losses import HMRLoss, LossWeights
from deforhmr_model.train.mixing import MixedSource
from deforhmr_model.train.validation import validate

TERMS = ("smpl_pose", "smpl_betas", "joints_3d", "joints_2d", "mesh")
NO_DECAY_KEYWORDS = ("rpe", "relative_position", "pos_embed")


@dataclass
class TrainConfig:
    """Run settings (paper defaults). ``max_steps`` stops early (tests, benchmarks)."""

    out_dir: str = "runs/deforhmr"
    epochs: int = 100
    global_batch: int = 200
    accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-3
    seed: int = 0
    aug: AugConfig = field(default_factory=AugConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    cache_features: bool = False
    aug_variants: int = 1
    cache_dir: str | None = None
    workers: int = 0
    bf16: bool = True
    grad_clip: float | None = None
    log_every: int = 10
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    val_every_epochs: int = 1
    max_steps: int | None = None
    progress: bool = True
    zero_init_readout: bool = True


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decayed weights, and non-decayed biases/norms/RPE tables/position embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or any(k in name for k in NO_DECAY_KEYWORDS)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def zero_readout(model: nn.Module) -> None:
    """Zero the pose/shape/camera readout layers so the first prediction is exactly the mean
    parameters (the IEF starting point, paper §3.2.1). Randomly initialised readouts give
    random cameras, and a non-positive scale s puts the body behind the camera, where the
    squared 2D error explodes. Deviation from HMR 2.0 (PyTorch default init); fresh models only."""
    head = model.smpl_head
    with torch.no_grad():
        for layer in (head.decpose, head.decshape, head.deccam):
            layer.weight.zero_()
            layer.bias.zero_()


def dataset_mean_params(source: MixedSource, max_samples: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-set mean SMPL parameters for the IEF start (paper §3.2.1 uses the H36M mean):
    per joint the chordal mean rotation (``roma.special_procrustes`` of the mean matrix) and the
    mean betas, over up to ``max_samples`` evenly spaced samples with SMPL labels.

    Returns: pose_6d (144,) in the column-pair 6D layout, betas (10,). ValueError if no sample
    has SMPL labels."""
    import roma
    from deforhmr_model.geometry.rotation import axis_angle_to_rotmat, rotmat_to_rot6d
    idx = np.unique(np.linspace(0, len(source) - 1, min(len(source), max_samples)).astype(int))
    labs = [lab for lab in (source.labels(int(i)) for i in idx) if lab.has_smpl > 0]
    if not labs:
        raise ValueError("no training sample has SMPL labels; cannot compute mean parameters (use 'default')")
    R = axis_angle_to_rotmat(torch.from_numpy(np.stack([lab.pose for lab in labs])).reshape(-1, 24, 3))
    mean = roma.special_procrustes(R.mean(0))
    betas = torch.from_numpy(np.stack([lab.betas for lab in labs])).mean(0)
    return rotmat_to_rot6d(mean).reshape(-1), betas


def _feature_cache(cfg: TrainConfig, model: nn.Module, source: MixedSource) -> FeatureCache:
    """The frozen encoder's features of every (sample, augmentation variant), keyed by model,
    data, augmentation and seed (:class:`.loader.FeatureCache`)."""
    variants = cfg.aug_variants if cfg.aug.enabled else 1
    return FeatureCache(cfg.cache_dir or Path(cfg.out_dir) / "feature_cache", len(source), variants,
                        (model.backbone.embed_dim, *model.backbone.grid_size),
                        fingerprint(model, source, cfg.aug, cfg.seed, variants))


class _Step(nn.Module):
    """What DDP wraps: images -> model, or cached encoder features -> decoder only."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, features: bool):
        return self.model.forward_head(x) if features else self.model(x)


class Trainer:
    """Train a DeforHMR model's decoder on a mixture of sources.

    Args:
        cfg: :class:`TrainConfig`.
        model: a ``DeforHMR`` (encoder frozen by its config).
        body: the body model used by the losses (``deforhmr_model.body.model.BodyModel``).
        joints: its :class:`~deforhmr_model.body.joints.J24Regressor`.
        train_source: a :class:`~.mixing.MixedSource`.
        val_source: optional held-out source (validated every ``val_every_epochs``).
        dist: this process's :class:`~.distributed.DistInfo`.
    Raises:
        ValueError: the global batch does not split over ranks x accumulation.
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, body: nn.Module, joints: nn.Module,
                 train_source: MixedSource, val_source: MixedSource | None = None,
                 dist: DistInfo = DistInfo()):
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.model = model.to(self.device)
        if cfg.zero_init_readout:
            zero_readout(self.model)
        self.loss = HMRLoss(body, joints, cfg.loss).to(self.device)
        self.step_module = _Step(self.model)
        if dist.world > 1:
            ids = [self.device] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids)
        else:
            self.ddp = self.step_module
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr)
        self.plan = BatchPlan(train_source, cfg.global_batch, dist.world, dist.rank, cfg.accum, cfg.seed)
        self.features = _feature_cache(cfg, self.model, train_source) if cfg.cache_features else None
        self.train_source, self.val_source = train_source, val_source
        self.dataset = TrainDataset(train_source, cfg.aug, cfg.seed, self.features)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.out = Path(cfg.out_dir)
        self.checkpoints = RunCheckpoints(self.out, dist, cfg.keep_checkpoints)
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ loop

    def fit(self) -> dict:
        """Train until ``epochs`` (or ``max_steps``); returns the last logged record."""
        cfg = self.cfg
        if self.features is not None and not self.features.ready:
            image_ds = TrainDataset(self.train_source, cfg.aug, cfg.seed, None)
            self.features.build(self.model, image_ds, self.device, rank=self.dist.rank,
                                world=self.dist.world, barrier=barrier if self.dist.world > 1 else None,
                                progress=cfg.progress)
        last: dict = {}
        self._last_saved = getattr(self, "_last_saved", -1)
        while self.epoch < cfg.epochs and not self._done():
            last = self._run_epoch() or last
            if self.step_in_epoch >= self.plan.steps_per_epoch:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                if self.val_source is not None and self.epoch % cfg.val_every_epochs == 0:
                    self.log({"type": "val", "epoch": self.epoch, "step": self.global_step,
                              **self.validate(self.val_source)})
                self.save_checkpoint()
        if self._last_saved != self.global_step:
            self.save_checkpoint()
        return last

    def _done(self) -> bool:
        return self.cfg.max_steps is not None and self.global_step >= self.cfg.max_steps

    def _run_epoch(self) -> dict:
        from tqdm import tqdm
        cfg, A = self.cfg, self.cfg.accum
        loader = make_loader(self.dataset, self.plan, self.epoch, self.step_in_epoch, cfg.workers,
                             pin_memory=self.device.type == "cuda")
        it = iter(loader)
        bar = tqdm(total=self.plan.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch}",
                   disable=not (cfg.progress and self.dist.is_main), leave=False)
        last: dict = {}
        t0, n0 = time.perf_counter(), 0
        while self.step_in_epoch < self.plan.steps_per_epoch and not self._done():
            terms = self.train_step([next(it) for _ in range(A)])
            self.step_in_epoch += 1
            self.global_step += 1
            n0 += cfg.global_batch
            bar.update(1)
            if self.global_step % cfg.log_every == 0 or self.step_in_epoch == self.plan.steps_per_epoch:
                rate = n0 / max(time.perf_counter() - t0, 1e-9)
                last = {"type": "train", "step": self.global_step, "epoch": self.epoch,
                        "lr": self.optimizer.param_groups[0]["lr"], **terms, "samples_per_s": rate}
                self.log(last)
                bar.set_postfix(loss=f"{terms['loss']:.4f}")
                t0, n0 = time.perf_counter(), 0
            if cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0:
                self.save_checkpoint()
        bar.close()
        return last

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        """One optimiser step over this rank's micro batches; returns rank-averaged loss terms."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        A = len(micro_batches)
        acc = torch.zeros(len(TERMS) + 1, device=self.device)
        use_bf16 = self.cfg.bf16 and self.device.type == "cuda"
        for a, batch in enumerate(micro_batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            sync = a == A - 1 or not isinstance(self.ddp, nn.parallel.DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                feats = "features" in batch
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    pred = self.ddp(batch["features"] if feats else batch["img"], feats)
                out = self.loss(pred, batch)
                (out.total / A).backward()
            acc += torch.stack([out.total.detach(), *(out.terms[t].detach() for t in TERMS)]) / A
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        vals = all_reduce_mean(acc).tolist()
        return dict(zip(("loss", *TERMS), vals))

    # ------------------------------------------------------------------ validation

    def validate(self, source: MixedSource, batch_size: int = 64) -> dict[str, float]:
        """:func:`.validation.validate` on rank 0 (other ranks return {})."""
        if not self.dist.is_main:
            return {}
        return validate(self.model, self.loss, source, self.cfg.seed, self.device, batch_size)

    # ------------------------------------------------------------------ logging / checkpoints

    def log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        from tqdm import tqdm
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def save_checkpoint(self) -> Path:
        """Write the checkpoint folder for the current step (all ranks call this)."""
        counters = {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step}
        folder = self.checkpoints.save(self.model, self.optimizer, counters, asdict(self.cfg))
        self._last_saved = self.global_step
        return folder

    def resume(self, path: str | Path = "latest") -> None:
        """Restore model, optimiser, counters and this rank's RNG states from a checkpoint folder
        (or ``"latest"`` under ``out_dir``). Raises FileNotFoundError naming what is missing."""
        counters = self.checkpoints.load(path, self.model, self.optimizer, self.device)
        self.epoch, self.step_in_epoch, self.global_step = (counters["epoch"], counters["step_in_epoch"],
                                                            counters["global_step"])
