"""Forward time per crop of every DeforHMR variant on every backbone, and the decoder's share.

Measures, per backbone, the ViTPose encoder once (it is shared by all variants), and per
variant the decoder + heads on the encoder's context (``DeforHMR.forward_head``); a full forward
is their sum. Baselines measured in the same run: the encoder of the same backbone (decoder
time as % of encoder time; target: DeforHMR's decoder <= 5% of the ViT-H encoder) and the
``reg-s`` decoder (HMR 2.0's, ratio "x reg-s").

    python bench/bench_model.py                                   # CPU, 2 threads, fp32
    python bench/bench_model.py --backbones vit-b --batches 1     # quick
    python bench/bench_model.py --device cuda --dtype bf16        # GPU (fused SDPA, bf16)

Weights are random: timing does not depend on them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deforhmr_model.network.configs import BACKBONES, VARIANTS, make_config  # noqa: E402
from deforhmr_model.network.model import build_head  # noqa: E402
from deforhmr_model.network.encoder import ViTEncoder  # noqa: E402

ALIASES = {"def-m-h16g8o1", "def-m-pe-rel"}                  # same configs as def-m
DEFAULT_VARIANTS = ["reg-s"] + [v for v in VARIANTS if v not in ALIASES and v != "reg-s"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def timed(fn, device: torch.device, inner: int = 1) -> float:
    """Wall time of one call of ``fn()`` in seconds (mean over ``inner`` back-to-back calls)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / inner


def bench_backbone(backbone: str, variants: list[str], batches: list[int], device, dtype,
                   repeats: int, warmup: int) -> list[dict]:
    """Encoder and every decoder timed in interleaved rounds (a loaded machine slows them alike);
    the best round is kept (``timeit``'s rule for noisy machines)."""
    cfg = make_config("reg-s", backbone)
    with torch.device(device):
        encoder = ViTEncoder(**dataclasses.asdict(cfg.encoder)).to(dtype).eval()
        heads = {}
        for variant in variants:
            vcfg = make_config(variant, backbone)
            heads[variant] = build_head(vcfg.decoder, vcfg.encoder.embed_dim,
                                        encoder.grid_size).to(dtype).eval()
    rows = []
    for batch in batches:
        images = torch.randn(batch, 3, 256, 192, device=device, dtype=dtype)
        best = {name: float("inf") for name in ["encoder", *variants]}
        with torch.inference_mode():
            context = encoder(images)
            for r in range(warmup + repeats):
                times = {"encoder": timed(lambda: encoder(images), device)}
                for variant, head in heads.items():
                    times[variant] = timed(lambda: head(context), device, inner=3)
                if r >= warmup:
                    best = {k: min(best[k], times[k]) for k in best}
        t_enc, base = best["encoder"], best["reg-s"]
        new = [dict(backbone=backbone, variant=v, batch=batch, enc=t_enc / batch, dec=best[v] / batch,
                    full=(t_enc + best[v]) / batch, share=best[v] / t_enc, vs_reg=best[v] / base)
               for v in variants]
        print_rows(new, header=not rows)
        rows += new
    return rows


def print_rows(rows: list[dict], header: bool) -> None:
    if header:
        print(f"{'backbone':9} {'variant':14} {'batch':>5} {'encoder ms/crop':>15} {'decoder ms/crop':>15} "
              f"{'full ms/crop':>12} {'dec/enc':>8} {'dec x reg-s':>11}")
    for r in rows:
        print(f"{r['backbone']:9} {r['variant']:14} {r['batch']:>5} {1e3 * r['enc']:>15.1f} "
              f"{1e3 * r['dec']:>15.2f} {1e3 * r['full']:>12.1f} {100 * r['share']:>7.2f}% {r['vs_reg']:>10.2f}x",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="vit-h,vit-l,vit-b,vit-s",
                    help=f"comma list from {sorted(BACKBONES)}")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma list; reg-s is the baseline")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    variants = [v for v in args.variants.split(",") if v]
    if "reg-s" not in variants:
        variants.insert(0, "reg-s")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# torch {torch.__version__}, {name}, {args.dtype}, best of {args.repeats} interleaved rounds "
          f"after {args.warmup} warm-up{load}; random weights")
    if device.type == "cpu" and hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        print("# WARNING: the machine is busier than its core count; with several threads per op, small "
              "decoder ops wait for descheduled threads and their times inflate (try --threads 1)")
    rows = []
    for backbone in args.backbones.split(","):
        rows += bench_backbone(backbone, variants, [int(b) for b in args.batches.split(",")],
                               device, dtype, args.repeats, args.warmup)
    h = [r for r in rows if r["backbone"] == "vit-h" and r["variant"] == "def-m"]
    for r in h:
        verdict = "meets" if r["share"] <= 0.05 else "MISSES"
        print(f"# def-m decoder on vit-h, batch {r['batch']}: {100 * r['share']:.2f}% of encoder time "
              f"({verdict} the <= 5% target), {r['vs_reg']:.2f}x the reg-s (HMR 2.0) decoder")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
