"""Training throughput (samples/s) of DeforHMR (def-m) against HMR 2.0's layout (reg-s).

Both variants share the same frozen encoder and the same synthetic data (rendered here with
the default body: SMPL if installed, else the open body). Two modes per variant:

* ``images``: encoder forward (frozen, no grad) + decoder forward/backward + losses + AdamW;
* ``cached``: decoder only, on pre-computed encoder features (``--cache-features`` training).

One optimiser step = ``Trainer.train_step`` (bf16 autocast on CUDA, float32 on CPU). Batches
are prepared before timing (data loading excluded). Rounds are interleaved and the best round
is kept; the ratio column is def-m time / reg-s time measured in the same run.

    python bench/bench_train.py                                  # CPU, vit-s encoder, paper decoder
    python bench/bench_train.py --device cuda --batch 64          # GPU, bf16 autocast
    python bench/bench_train.py --decoder small --steps 3         # quick
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deforhmr_model.body.model import BodyModel, default_body_data  # noqa: E402
from deforhmr_model.body.joints import make_j24_regressor  # noqa: E402
from deforhmr_model.network.model import build_model  # noqa: E402
from deforhmr_model.train.augment import AugConfig  # noqa: E402
from deforhmr_model.datasets.readers import NpzSource  # noqa: E402
from deforhmr_model.device import resolve_device  # noqa: E402
from deforhmr_model.train.distributed import DistInfo  # noqa: E402
from deforhmr_model.train.loader import TrainDataset  # noqa: E402
from deforhmr_model.train.mixing import MixedSource  # noqa: E402
from deforhmr_model.train.synthetic import SynthConfig, generate  # noqa: E402
from deforhmr_model.train.trainer import TrainConfig, Trainer  # noqa: E402

SMALL_DECODER = dict(dim=256, depth=2, mlp_dim=256, self_heads=4, self_dim_head=64, cross_dim_head=32)


def make_batches(source, n_batches: int, batch: int, seed: int = 0) -> list[dict]:
    ds = TrainDataset(source, AugConfig(enabled=True), seed)
    keys = [(i % len(source), 0) for i in range(n_batches * batch)]
    return [torch.utils.data.default_collate([ds[k] for k in keys[j * batch:(j + 1) * batch]])
            for j in range(n_batches)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="reg-s,def-m")
    ap.add_argument("--backbone", default="vit-s", help="encoder shared by the variants (default vit-s)")
    ap.add_argument("--decoder", choices=("paper", "small"), default="paper",
                    help="paper: D=1024, 6 layers (Table 2 sizes); small: D=256, 2 layers")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="timed optimiser steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=32, help="synthetic samples rendered")
    ap.add_argument("--data", default=None, help="use this SPIN .npz instead of rendering")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    body = BodyModel(default_body_data())
    joints = make_j24_regressor(body)
    tmp = tempfile.TemporaryDirectory()
    npz = args.data or generate(tmp.name, body, joints, SynthConfig(num_samples=args.samples))
    source = MixedSource([NpzSource(npz)])
    batches = make_batches(source, 2 + args.steps, args.batch)

    runs = {}
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        over = SMALL_DECODER if args.decoder == "small" else {}
        model = build_model(variant, args.backbone, **over)
        cfg = TrainConfig(out_dir=tmp.name + f"/{variant}", global_batch=args.batch, bf16=not args.no_bf16,
                          progress=False)
        trainer = Trainer(cfg, model, body, joints, source, dist=DistInfo(device=device))
        with torch.no_grad():
            cached = [{**{k: v for k, v in b.items() if k != "img"},
                       "features": model.forward_features(b["img"].to(device)).float().cpu()} for b in batches]
        runs[variant] = (trainer, {"images": batches, "cached": cached})

    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for mode in ("images", "cached"):
            for variant, (trainer, data) in runs.items():
                for b in data[mode][:2]:
                    trainer.train_step([b])                               # warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                for b in data[mode][2:]:
                    trainer.train_step([b])
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = (time.perf_counter() - t0) / args.steps
                best[variant, mode] = min(best.get((variant, mode), float("inf")), dt)

    prec = "bf16 autocast" if device.type == "cuda" and not args.no_bf16 else "fp32"
    print(f"device {device} ({prec}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"encoder {args.backbone}, decoder {args.decoder}, batch {args.batch}, body {body.id}")
    print(f"{'variant':<10}{'mode':<9}{'ms/step':>10}{'samples/s':>12}{'x reg-s':>9}")
    for (variant, mode), dt in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0] != "reg-s")):
        ref = best.get(("reg-s", mode))
        ratio = f"{dt / ref:>9.2f}" if ref else f"{'-':>9}"
        print(f"{variant:<10}{mode:<9}{dt * 1000:>10.1f}{args.batch / dt:>12.1f}{ratio}")


if __name__ == "__main__":
    main()
