"""Benchmark: one photo -> GLB, steady state (the pipeline already loaded, as in ComfyUI or a
batch of photos), on the single-person dev photos (CPU).

Per photo: load (decode + EXIF), detect (people + landmarks), recover (fit; the network too
when ``--model`` names one), GLB export; median over the photos and ``--repeat`` rounds.
``cpu s`` is the process CPU time per photo (all threads): on a shared machine whose wall
times swing with the neighbours' load it is the steadier number (with 2 threads the wall time
on an idle machine is at least half of it). Also the one-shot cost a first photo pays (pipeline construction: body model, LiteRT
interpreters) measured once.

Baseline measured in the same run: the same job with the previous default detector
(``--detector blazepose``); the ratio is printed.

    .venv/bin/python bench/bench_photo.py [--threads 2] [--repeat 2] [--model none]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEV = Path(os.environ.get("DEFORHMR_SHARED", ROOT.parent / "shared")) / "photos" / "dev"
PHOTOS = ("coco/000000000785.jpg", "mpii/051423444.jpg", "mpii/060754485.jpg", "mpii/004645041.jpg")


def run(detector: str, model: str, repeat: int, out: Path) -> tuple[float, np.ndarray, float, float]:
    """(one-shot construction s, per-stage medians (load, detect, recover, glb) s, total median s,
    median process CPU time per photo s (all threads))."""
    from deforhmr_model.files.export import export_glb
    from deforhmr_model.files.image_io import load_image
    from deforhmr_model.pipeline import HMRPipeline
    t0 = time.perf_counter()
    pipe = HMRPipeline(model=model, detector=detector)
    export_glb(pipe(load_image(DEV / PHOTOS[0])), out / "warm.glb")     # interpreters, body, first fit
    first = time.perf_counter() - t0
    parts, cpu = [], []
    for _ in range(repeat):
        for rel in PHOTOS:
            c0 = time.process_time()
            t = [time.perf_counter()]
            image = load_image(DEV / rel)
            t.append(time.perf_counter())
            dets = pipe.detect(image)
            t.append(time.perf_counter())
            result = pipe.recover([image], [dets])[0]
            t.append(time.perf_counter())
            export_glb(result, out / "photo.glb")
            t.append(time.perf_counter())
            parts.append(np.diff(t))
            cpu.append(time.process_time() - c0)
    parts = np.array(parts)
    return first, np.median(parts, 0), float(np.median(parts.sum(1))), float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--model", default="none", help="none (fit), or a checkpoint name/path")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    missing = [p for p in PHOTOS if not (DEV / p).is_file()]
    if missing:
        sys.exit(f"dev photos missing under {DEV}: {missing}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for det in ("movenet", "blazepose"):
            rows[det] = run(det, args.model, args.repeat, Path(tmp))
    print(f"load average {os.getloadavg()[0]:.1f}; torch/LiteRT threads {args.threads}; model {args.model}; "
          f"{len(PHOTOS)} single-person photos x {args.repeat}")
    print(f"{'detector':24s} {'first photo s':>13s} {'load':>6s} {'detect':>7s} {'recover':>8s} {'glb':>6s} "
          f"{'photo->GLB s':>12s} {'cpu s':>6s}")
    for det, (first, med, total, cpu) in rows.items():
        label = det + (" (default)" if det == "movenet" else " (baseline)")
        print(f"{label:24s} {first:13.2f} {med[0]:6.3f} {med[1]:7.3f} {med[2]:8.3f} {med[3]:6.3f} {total:12.2f} {cpu:6.2f}")
    print(f"photo->GLB default / baseline: {rows['movenet'][2] / rows['blazepose'][2]:.2f}x")


if __name__ == "__main__":
    main()
