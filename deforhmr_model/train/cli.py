"""``deforhmr train``: fit a model (``fit``), write synthetic data (``synth``), check data files
(``check-data``). Multi-GPU: ``torchrun --nproc_per_node G -m deforhmr_model.train fit ...``.

Exit status: 0 success, 1 failure reported as one line (bad data, missing files), 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from deforhmr_model.cli_errors import guard

_DATA_HELP = ("training data: a mixture file (.json/.toml, see deforhmr_model/train/paper_mix.json) or "
              "one or more SPIN/ProHMR .npz files / HMR 2.0 webdataset .tar shards (comma-separated)")


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` (with ``fit``, ``synth``, ``check-data``) to an argparse subparsers object."""
    p = subparsers.add_parser("train", help="train DeforHMR (paper §3.3) or make synthetic training data",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    _add_fit(sub)
    _add_synth(sub)
    ck = sub.add_parser("check-data", help="open every data source and check that all images exist")
    ck.add_argument("--data", required=True, help=_DATA_HELP)
    ck.add_argument("--data-root", default=None, help="folder relative mixture paths are resolved against")
    ck.add_argument("--image-root", default=None, help="image folder for single .npz inputs")
    ck.set_defaults(func=guard(_cmd_check, "deforhmr train"))
    return p


def _add_fit(sub) -> None:
    f = sub.add_parser("fit", help="train a model (frozen encoder, AdamW, DDP via torchrun)")
    f.add_argument("--data", required=True, help=_DATA_HELP)
    f.add_argument("--data-root", default=None, help="folder relative mixture paths are resolved against")
    f.add_argument("--image-root", default=None, help="image folder for single .npz inputs (default: npz folder)")
    f.add_argument("--val", default=None, help="held-out .npz validated after each epoch (MPJPE / PA-MPJPE)")
    f.add_argument("--out", required=True, help="run folder: log.jsonl, checkpoints/, feature_cache/")
    f.add_argument("--variant", default="def-m", help="model variant (def-m = DeforHMR, reg-s = HMR 2.0 layout, ...)")
    f.add_argument("--backbone", default="vit-h", help="encoder: vit-h (paper), vit-l, vit-b, vit-s, vit-tiny")
    f.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, e.g. depth=2 or encoder_depth=1 (repeatable)")
    f.add_argument("--encoder-weights", default=None, help="ViTPose .pth for the frozen encoder")
    f.add_argument("--init", default=None, help="start from a DeforHMR .safetensors model (fine-tuning)")
    f.add_argument("--mean-params", default="default",
                   help="IEF start: 'default' (upright identity), 'data' (training-set mean) or an "
                        "smpl_mean_params.npz (pose 144 6D, shape 10, cam 3)")
    f.add_argument("--body", default=None, help="SMPL-format body file (default: SMPL neutral, else the open body)")
    f.add_argument("--j19", default=None, help="SMPL_to_J19.pkl joint regressor for the J24 training joints")
    f.add_argument("--epochs", type=int, default=100)
    f.add_argument("--batch", type=int, default=200, help="global batch over all GPUs (default 200)")
    f.add_argument("--accum", type=int, default=1, help="gradient-accumulation steps per optimiser step")
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--weight-decay", type=float, default=1e-3)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-aug", action="store_true", help="no augmentation (plain crops)")
    f.add_argument("--cache-features", action="store_true", help="pre-compute frozen-encoder features")
    f.add_argument("--aug-variants", type=int, default=1, help="augmented crops per sample in cached mode")
    f.add_argument("--cache-dir", default=None, help="feature cache folder (default OUT/feature_cache)")
    f.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loader worker processes (default: min(4, CPU count))")
    f.add_argument("--device", default="auto",
                   help="auto (cuda:LOCAL_RANK, then MPS, then CPU; default), cpu, cuda, mps")
    f.add_argument("--no-bf16", action="store_true", help="float32 on GPU instead of bf16 autocast")
    f.add_argument("--grad-clip", type=float, default=None)
    f.add_argument("--log-every", type=int, default=50)
    f.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint every N steps (and every epoch)")
    f.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    f.add_argument("--max-steps", type=int, default=None)
    f.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume from OUT/checkpoints/latest or a checkpoint folder")
    f.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=guard(_cmd_fit, "deforhmr train"))


def _add_synth(sub) -> None:
    s = sub.add_parser("synth", help="render a synthetic dataset with exact labels (SPIN .npz + images)")
    s.add_argument("--out", required=True, help="output folder (synthetic.npz, images/)")
    s.add_argument("-n", "--num", type=int, default=1000, help="number of samples")
    s.add_argument("--size", default="256x256", help="image size WxH (default 256x256)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--body", default=None, help="SMPL-format body file (default: SMPL neutral, else the open body)")
    s.add_argument("--j19", default=None, help="SMPL_to_J19.pkl (labels J24 like the real datasets)")
    s.add_argument("--backgrounds", default=None, help="folder of photos to crop backgrounds from")
    s.add_argument("--background-kinds", default="noise,gradient,photo", help="among noise,gradient,photo,flat")
    s.add_argument("--poses", default=None, help="canonical poses to use (comma-separated; default all)")
    s.add_argument("--pose-noise", type=float, default=0.15, help="radians per axis-angle component")
    s.add_argument("--yaw-range", type=float, default=180.0, help="degrees")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=guard(_cmd_synth, "deforhmr train"))


def open_data(spec: str, data_root: str | None = None, image_root: str | None = None, epoch_size=None):
    """A :class:`~.mixing.MixedSource` from a mixture file or comma-separated data files."""
    from deforhmr_model.datasets.readers import open_source
    from deforhmr_model.train.mixing import MixedSource, open_mixture
    if spec.endswith((".json", ".toml")):
        return open_mixture(spec, data_root)
    return MixedSource([open_source(s, image_root) for s in spec.split(",") if s], epoch_size=epoch_size)


def _load_body(path):
    from deforhmr_model.body.model import BodyModel, default_body_data, load_body_data
    return BodyModel(load_body_data(path) if path else default_body_data())


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--override expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _cmd_fit(args) -> int:
    import torch
    from deforhmr_model.network.checkpoint import load_model, load_vitpose_backbone
    from deforhmr_model.body.joints import make_j24_regressor
    from deforhmr_model.network.model import build_model
    from deforhmr_model.train.augment import AugConfig
    from deforhmr_model.train.distributed import init_distributed, shutdown
    from deforhmr_model.train.trainer import TrainConfig, Trainer, dataset_mean_params
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = init_distributed(args.device)
    torch.manual_seed(args.seed)
    train = open_data(args.data, args.data_root, args.image_root)
    val = open_data(args.val, image_root=None) if args.val else None
    body = _load_body(args.body)
    joints = make_j24_regressor(body, args.j19)
    if args.init:
        model = load_model(args.init).train()
    else:
        model = build_model(args.variant, args.backbone, **_parse_overrides(args.override))
        if args.encoder_weights:
            load_vitpose_backbone(model, args.encoder_weights)
        _set_mean_params(model, args.mean_params, train, dataset_mean_params)
    cfg = TrainConfig(out_dir=args.out, epochs=args.epochs, global_batch=args.batch, accum=args.accum, lr=args.lr,
                      weight_decay=args.weight_decay, seed=args.seed, aug=AugConfig(enabled=not args.no_aug),
                      cache_features=args.cache_features, aug_variants=args.aug_variants, cache_dir=args.cache_dir,
                      workers=args.workers, bf16=not args.no_bf16, grad_clip=args.grad_clip,
                      log_every=args.log_every, ckpt_every=args.ckpt_every, keep_checkpoints=args.keep,
                      max_steps=args.max_steps, progress=not args.no_progress,
                      zero_init_readout=args.init is None)
    trainer = Trainer(cfg, model, body, joints, train, val, dist)
    if args.resume:
        trainer.resume(args.resume)
    try:
        trainer.fit()
        if trainer.global_step % max(cfg.ckpt_every, 1) != 0 or not cfg.ckpt_every:
            trainer.save_checkpoint()
    finally:
        shutdown()
    if dist.is_main:
        print(f"deforhmr train: {trainer.global_step} steps; checkpoints in {Path(args.out) / 'checkpoints'}")
    return 0


def _set_mean_params(model, how: str, train, dataset_mean_params) -> None:
    import numpy as np
    import torch
    if how == "default":
        return
    if how == "data":
        pose6d, betas = dataset_mean_params(train)
        model.set_mean_params(pose6d, betas, model.smpl_head.init_cam[0])
        return
    with np.load(how, allow_pickle=False) as z:
        missing = [k for k in ("pose", "shape", "cam") if k not in z]
        if missing:
            raise ValueError(f"{how}: mean-parameter file lacks {missing} (expected pose (144,), shape (10,), cam (3,))")
        model.set_mean_params(torch.from_numpy(z["pose"]).float(), torch.from_numpy(z["shape"]).float(),
                              torch.from_numpy(z["cam"]).float())


def _cmd_synth(args) -> int:
    import torch
    from deforhmr_model.body.joints import make_j24_regressor
    from deforhmr_model.train.synthetic import CANONICAL_POSES, SynthConfig, generate
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        W, H = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be WxH, e.g. 256x256, got {args.size!r}") from None
    poses = tuple(args.poses.split(",")) if args.poses else tuple(CANONICAL_POSES)
    unknown = [p for p in poses if p not in CANONICAL_POSES]
    if unknown:
        raise ValueError(f"unknown pose(s) {unknown}; choose among {list(CANONICAL_POSES)}")
    body = _load_body(args.body)
    cfg = SynthConfig(num_samples=args.num, image_size=(W, H), seed=args.seed, poses=poses,
                      pose_noise=args.pose_noise, yaw_range=args.yaw_range, backgrounds=args.backgrounds,
                      background_kinds=tuple(args.background_kinds.split(",")))
    path = generate(args.out, body, make_j24_regressor(body, args.j19), cfg, progress=True)
    print(f"deforhmr train synth: wrote {args.num} samples to {path}")
    return 0


def _cmd_check(args) -> int:
    src = open_data(args.data, args.data_root, args.image_root)
    for s in src.sources:
        if hasattr(s, "check_images"):
            s.check_images(None)
        print(f"{s.name}: {len(s)} people OK")
    print(f"total {len(src)} people; epoch size {src.epoch_size}; weights "
          + ", ".join(f"{s.name}={w:.3f}" for s, w in zip(src.sources, src.weights)))
    return 0
