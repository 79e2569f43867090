"""GPU throughput of the DeforHMR network and of the whole main job (issue 13), one script.

Sections (each prints a table; ``--sections`` picks some):

* ``throughput``: ``reg-s`` and ``def-m`` on ViT-H at batch 1/16/64/256: crops/s, ms per crop,
  peak GPU memory, the decoder's share of the time; fp32 vs bf16 vs fp16 (autocast, as the
  pipeline runs); eager vs ``torch.compile`` (and CUDA graphs, ``mode="reduce-overhead"``, for
  small batches). Baseline measured in the same run: our own fp32 eager forward (ratio column).
* ``sdpa``: which attention kernels ran (profiler kernel names: flash / memory-efficient / cuDNN
  fused attention vs the unfused math path) for the encoder and the decoder.
* ``numerics``: bf16 / fp16 vs fp32 on real person crops of the dev photos: rotation angle error
  (degrees, geodesic, over the 24 SMPL rotations), camera translation error (mm, after the crop
  camera is put into the photo's camera), betas error.
* ``memory``: batch-1 peak memory, and the batch :func:`auto_batch_size` picks from free memory.
* ``e2e``: the main job over the dev photos and dev video frames with a test-made checkpoint
  (random weights, real shapes), detection and landmarks (CPU, LiteRT) run in a thread pool ahead
  of the GPU forward; images/s, the share of wall time the GPU forward is busy, per-stage times.

    python bench/bench_gpu.py                        # on the GPU machine: everything (~6-8 min on an H200)
    python bench/bench_gpu.py --sections throughput --no-compile
    python bench/bench_gpu.py --smoke                # CPU, vit-tiny, seconds: checks the script runs

Weights are random (no DeforHMR weights are public): timings do not depend on them; the numerics
section compares precisions of the same network, which is what it is meant to check.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deforhmr_model.network.configs import make_config  # noqa: E402
from deforhmr_model.network.inference import PRECISIONS, auto_batch_size, autocast_dtype, predict  # noqa: E402
from deforhmr_model.network.model import build_from_config  # noqa: E402

SHARED = Path(os.environ.get("DEFORHMR_SHARED", ROOT.parent / "shared")) / "photos" / "dev"


# ----------------------------------------------------------------------------- helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, min_time: float, warmup: int) -> float:
    """Seconds per call: ``warmup`` calls, then repeated calls until ``min_time`` has passed."""
    for _ in range(warmup):
        fn()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync(device)
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 2:
            return dt / n


def peak_mb(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def make_model(variant: str, backbone: str, device, **overrides):
    torch.manual_seed(0)
    cfg = make_config(variant, backbone, **overrides)
    return build_from_config(cfg, device=device).eval()


def env_line(device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        drv = "?"
        try:
            import subprocess
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        name = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, driver {drv}, CUDA {torch.version.cuda}"
    else:
        name = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    return f"# {name}; torch {torch.__version__}; python {platform.python_version()}"


# ----------------------------------------------------------------------------- sections

def section_throughput(args, device) -> list[dict]:
    print("\n## throughput (random weights; ratio = crops/s over the fp32 eager forward of the same "
          "variant and batch, measured in this run)")
    print(f"{'variant':7} {'batch':>5} {'precision':9} {'mode':16} {'crops/s':>9} {'ms/crop':>8} "
          f"{'peak MiB':>9} {'dec %':>6} {'x fp32':>7}")
    rows = []
    for variant in args.variants:
        model = make_model(variant, args.backbone, device)
        h, w = model.backbone.img_size
        for batch in args.batches:
            x = torch.randn(batch, 3, h, w, device=device)
            base = None
            for precision in args.precisions:
                dtype = autocast_dtype(device, precision)
                modes = ["eager"] + ([] if args.no_compile else ["compile"])
                if not args.no_compile and batch <= 16:
                    modes.append("compile+cudagraph")
                for mode in modes:
                    if mode != "eager" and precision != args.compile_precision:
                        continue
                    fwd = _forward_fn(model, x, device, dtype, mode)
                    if fwd is None:
                        continue
                    reset_peak(device)
                    t = time_call(fwd, device, args.min_time, args.warmup)
                    mem = peak_mb(device)
                    share = _decoder_share(model, x, device, dtype, args) if mode == "eager" else float("nan")
                    if precision == "fp32" and mode == "eager":
                        base = t
                    r = dict(variant=variant, batch=batch, precision=precision, mode=mode, crops_s=batch / t,
                             ms=1e3 * t / batch, mem=mem, share=share, ratio=(base / t) if base else float("nan"))
                    rows.append(r)
                    print(f"{variant:7} {batch:>5} {precision:9} {mode:16} {r['crops_s']:>9.1f} {r['ms']:>8.3f} "
                          f"{mem:>9.0f} {100 * share:>6.2f} {r['ratio']:>7.2f}", flush=True)
        del model
        reset_peak(device)
    _verdicts(rows)
    return rows


def _forward_fn(model, x, device, dtype, mode):
    ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else None

    def run(m):
        with torch.inference_mode():
            if ctx is None:
                return m(x)
            with ctx():
                return m(x)
    if mode == "eager":
        return lambda: run(model)
    if device.type != "cuda":
        return None
    try:
        compiled = torch.compile(model, mode="reduce-overhead" if "cudagraph" in mode else "max-autotune-no-cudagraphs",
                                 dynamic=False)
        run(compiled)            # compile now, outside the timing
        return lambda: run(compiled)
    except Exception as e:  # noqa: BLE001 - a compile failure is a result to report, not a crash
        print(f"# {mode} failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        return None


def _decoder_share(model, x, device, dtype, args) -> float:
    """Decoder + heads time over encoder time (same batch, precision)."""
    ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    with torch.inference_mode(), ctx:
        context = model.forward_features(x)
        t_enc = time_call(lambda: model.forward_features(x), device, args.min_time / 2, 1)
        t_dec = time_call(lambda: model.forward_head(context), device, args.min_time / 2, 1)
    return t_dec / t_enc


def _verdicts(rows) -> None:
    def get(variant, batch, precision, mode="eager"):
        for r in rows:
            if (r["variant"], r["batch"], r["precision"], r["mode"]) == (variant, batch, precision, mode):
                return r
    big = max((r["batch"] for r in rows), default=0)
    d, s = get("def-m", big, "bf16"), get("reg-s", big, "bf16")
    best = max((r for r in rows if r["variant"] == "def-m" and r["batch"] == big), key=lambda r: r["crops_s"],
               default=None)
    if d:
        print(f"# def-m bf16 eager batch {big}: {d['crops_s']:.0f} crops/s (target >= 1600); decoder "
              f"{100 * d['share']:.2f}% of encoder time (target <= 5%)")
    if best:
        print(f"# def-m best at batch {big}: {best['crops_s']:.0f} crops/s ({best['precision']}, {best['mode']})")
    if d and s:
        print(f"# def-m vs reg-s (bf16 eager, batch {big}): {d['crops_s'] / s['crops_s']:.3f}x (target >= 0.90x)")


def section_sdpa(args, device) -> None:
    print("\n## fused attention (kernel names seen by the profiler, one bf16 forward of def-m)")
    model = make_model("def-m", args.backbone, device)
    h, w = model.backbone.img_size
    x = torch.randn(min(args.batches[-1], 16), 3, h, w, device=device)
    dtype = autocast_dtype(device, "bf16") if device.type == "cuda" else None
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof, torch.inference_mode():
        if dtype is not None:
            with torch.autocast(device.type, dtype=dtype):
                model(x)
        else:
            model(x)
        sync(device)
    names = {e.key for e in prof.key_averages()}
    fused = sorted(n for n in names if any(k in n.lower() for k in ("flash", "efficient_attention", "cudnn_attention",
                                                                      "fmha", "_scaled_dot_product")))
    math_path = sorted(n for n in names if "_scaled_dot_product_attention_math" in n)
    print("# attention ops/kernels:", ", ".join(fused[:12]) or "none found")
    print("# unfused math path used:", "YES (" + ", ".join(math_path) + ")" if math_path else "no")


def _dev_crops(max_people: int) -> tuple[torch.Tensor, list]:
    """Real person crops from the dev photos (the product's detector, crop and normalisation)."""
    from deforhmr_model.files.image_io import load_image
    from deforhmr_model.people.crop import crop_person
    from deforhmr_model.pipeline import HMRPipeline
    pipe = HMRPipeline(model=None, device="cpu")
    photos = sorted(glob.glob(str(SHARED / "*.jpg")) + glob.glob(str(SHARED / "*.png"))
                    + glob.glob(str(SHARED / "coco" / "*.jpg")) + glob.glob(str(SHARED / "crowdpose" / "*.jpg")))
    crops, meta = [], []
    for p in photos:
        im = load_image(p)
        for d in pipe.detect(im):
            c = crop_person(im, np.asarray(d.bbox, np.float32))
            crops.append(c.image)
            meta.append((c.center, c.size, im.shape[1], im.shape[0]))
            if len(crops) >= max_people:
                return torch.stack(crops), meta
    return (torch.stack(crops) if crops else torch.zeros(0, 3, 256, 192)), meta


def section_numerics(args, device) -> None:
    print("\n## half precision vs fp32 on real dev-photo crops (random weights: a random camera scale near 0 puts "
          "a body far away, so translation errors in mm are large where depth is; 'depth rel %' is the median)")
    import roma
    from deforhmr_model.geometry.camera import cam_crop_to_full, standard_focal_length
    crops, meta = _dev_crops(args.numerics_people)
    if not len(crops):
        print("# no dev photos found at", SHARED)
        return
    centers = torch.tensor(np.stack([m[0] for m in meta]), dtype=torch.float32)
    sizes = torch.tensor([m[1] for m in meta], dtype=torch.float32)
    img = torch.tensor([[m[2], m[3]] for m in meta], dtype=torch.float32)
    focal = torch.tensor([standard_focal_length(m[2], m[3]) for m in meta], dtype=torch.float32)
    print(f"{'variant':7} {'precision':9} {'crops':>5} {'rot mean deg':>12} {'rot max deg':>11} "
          f"{'transl mean mm':>14} {'transl max mm':>13} {'depth rel %':>11} {'betas max':>9}")
    precisions = [p for p in args.precisions if p != "fp32" and not (p == "fp16" and device.type == "cpu")]
    for variant in args.variants:
        model = make_model(variant, args.backbone, device)
        ref = predict(model, crops, precision="fp32", batch_size=32)
        t_ref = cam_crop_to_full(ref.pred_cam, centers, sizes, img, focal)
        rot_ref = torch.cat([ref.global_orient[:, None], ref.body_pose], dim=1)
        for precision in precisions:
            out = predict(model, crops, precision=precision, batch_size=32)
            rot = torch.cat([out.global_orient[:, None], out.body_pose], dim=1)
            ang = torch.rad2deg(roma.rotmat_geodesic_distance(rot, rot_ref))
            t = cam_crop_to_full(out.pred_cam, centers, sizes, img, focal)
            mm = 1e3 * (t - t_ref).norm(dim=-1)
            rel = 100 * ((t[:, 2] - t_ref[:, 2]).abs() / t_ref[:, 2].abs().clamp(min=1e-6)).median()
            print(f"{variant:7} {precision:9} {len(crops):>5} {ang.mean():>12.4f} {ang.max():>11.4f} "
                  f"{mm.mean():>14.2f} {mm.max():>13.2f} {rel:>11.3f} {(out.betas - ref.betas).abs().max():>9.5f}", flush=True)
        del model


def section_memory(args, device) -> None:
    print("\n## memory")
    for variant in args.variants:
        model = make_model(variant, args.backbone, device)
        h, w = model.backbone.img_size
        reset_peak(device)
        predict(model, torch.randn(1, 3, h, w), precision="auto", batch_size=1)
        print(f"# {variant}: batch-1 peak {peak_mb(device):.0f} MiB (target <= 3072 MiB incl. weights); "
              f"automatic batch size now {auto_batch_size(model)}")
        del model
        reset_peak(device)


def section_e2e(args, device) -> None:
    print("\n## end to end (HMRPipeline.run_many: detection + landmarks on a CPU thread ahead of the "
          "network on the device)")
    from deforhmr_model.files.image_io import load_image
    from deforhmr_model.network.checkpoint import save_checkpoint
    from deforhmr_model.pipeline import HMRPipeline
    paths = sorted(glob.glob(str(SHARED / "**" / "*.jpg"), recursive=True)
                   + glob.glob(str(SHARED / "**" / "*.png"), recursive=True))[: args.e2e_images]
    frames = _video_frames(args.e2e_frames)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bench-def-m.safetensors"
        save_checkpoint(make_model("def-m", args.backbone, "cpu"), ckpt)
        pipe = HMRPipeline(model=str(ckpt), device=device)
    images = [load_image(p) for p in paths] + frames
    busy = {"network": 0.0, "detect": 0.0}

    def timed_stage(name, fn):
        def wrapper(*a, **k):
            s = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync(device)
                busy[name] += time.perf_counter() - s
        return wrapper
    pipe.run_many(images[:1])                                   # warm-up: kernels, detector models
    net_call = pipe._network
    pipe._network = timed_stage("network", net_call)
    pipe.detect = timed_stage("detect", pipe.detect)
    rows = []
    for overlap in (False, True):
        busy.update(network=0.0, detect=0.0)
        t0 = time.perf_counter()
        res = pipe.run_many(images, overlap=overlap, chunk=args.e2e_chunk)
        wall = time.perf_counter() - t0
        n_people = sum(len(r.people) for r in res)
        rows.append((overlap, wall))
        print(f"# overlap={overlap!s:5}: {len(images)} images ({len(paths)} photos + {len(frames)} video frames), "
              f"{n_people} people: {len(images) / wall:.2f} images/s; wall {wall:.1f} s; detection {busy['detect']:.1f} s; "
              f"network forward {busy['network']:.1f} s = {100 * busy['network'] / wall:.0f}% of wall time busy")
    print(f"# overlap speed-up {rows[0][1] / rows[1][1]:.2f}x (baseline: the sequential run above); bounded by: "
          f"{'detection (CPU)' if busy['detect'] > busy['network'] else 'network (device)'}")


def _video_frames(n: int) -> list[np.ndarray]:
    import cv2
    frames = []
    for p in sorted(glob.glob(str(SHARED / "video" / "*.mp4"))):
        cap = cv2.VideoCapture(p)
        while len(frames) < n:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        cap.release()
    return frames


SECTIONS = {"throughput": section_throughput, "sdpa": section_sdpa, "numerics": section_numerics,
            "memory": section_memory, "e2e": section_e2e}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--variants", default="reg-s,def-m")
    ap.add_argument("--backbone", default="vit-h")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--compile-precision", default="bf16", help="precision compiled modes are timed in")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per row")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--numerics-people", type=int, default=48)
    ap.add_argument("--e2e-images", type=int, default=64)
    ap.add_argument("--e2e-frames", type=int, default=80)
    ap.add_argument("--e2e-chunk", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="CPU, vit-tiny, tiny batches: checks the script runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.backbone, args.batches, args.precisions = "cpu", "vit-tiny", "1,2", "fp32,bf16"
        args.no_compile, args.min_time, args.warmup = True, 0.01, 1
        args.numerics_people, args.e2e_images, args.e2e_frames, args.e2e_chunk = 3, 2, 2, 2
    args.variants = [v for v in args.variants.split(",") if v]
    args.batches = [int(b) for b in args.batches.split(",")]
    args.precisions = [p for p in args.precisions.split(",") if p in PRECISIONS]
    device = torch.device(args.device)
    if device.type == "cpu" and "fp16" in args.precisions:
        args.precisions.remove("fp16")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False   # fp32 baseline is true fp32
        torch.backends.cudnn.allow_tf32 = False
    print(env_line(device))
    print(f"# command: python bench/bench_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    for name in args.sections.split(","):
        SECTIONS[name](args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
