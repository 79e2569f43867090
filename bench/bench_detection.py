"""Benchmark: person detection time per dev photo (CPU, LiteRT, 2 threads by default).

Compares, in the same run and on the same images, the single whole-image pass (the
baseline: ``min_person=1``, no tiles, MediaPipe's own setting) with the tiled settings
``min_person=0.4`` (fast), ``0.3`` (the default) and ``0.2`` (small people). Reports, per image,
the best of ``--repeat`` timed calls after one warm-up call (the best is the least
disturbed by other processes), the number of detector passes and people found, and the
ratio to the baseline. Image loading is not timed. It also prints the process CPU time
of the best call and the load average: on a shared machine wall times grow with the
load, CPU times much less.

    .venv/bin/python bench/bench_detection.py [--threads 2] [--repeat 3] [--photos DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deforhmr_model.people.detection import BlazePoseDetector, tile_regions  # noqa: E402
from deforhmr_model.files.image_io import load_image  # noqa: E402

SETTINGS = {"whole image (baseline)": 1.0, "min_person=0.4": 0.4, "min_person=0.3 (default)": 0.3,
            "min_person=0.2": 0.2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos" / "dev")
    args = ap.parse_args()
    files = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        sys.exit(f"no photos under {args.photos}")
    detectors = {name: BlazePoseDetector(min_person=m, num_threads=args.threads) for name, m in SETTINGS.items()}
    totals = {name: 0.0 for name in SETTINGS}
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} threads, best of {args.repeat}")
    print(f"{'image':34s} {'size':>10s} " + " ".join(f"{n:>44s}" for n in SETTINGS))
    for path in files:
        image = load_image(path)
        cells = []
        for name, det in detectors.items():
            det.detect(image)                                     # warm-up (interpreters, arena)
            best, cpu, people = float("inf"), 0.0, 0
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                people = len(det.detect(image))
                if time.perf_counter() - t0 < best:
                    best, cpu = time.perf_counter() - t0, time.process_time() - c0
            totals[name] += best
            passes = 1 + len(tile_regions(image.shape[1], image.shape[0], det.min_person, det.tile_overlap))
            cells.append(f"{best * 1e3:7.1f} ms (cpu {cpu * 1e3:6.1f}) {passes:2d}p {people:2d} ppl")
        base = float(cells[0].split()[0])
        ratios = [float(c.split()[0]) / base for c in cells]
        print(f"{str(path.relative_to(args.photos)):34s} {image.shape[1]:>4d}x{image.shape[0]:<5d} "
              + " ".join(f"{c} x{r:4.1f}" for c, r in zip(cells, ratios)))
    print(f"load average {os.getloadavg()[0]:.1f}")
    base = totals["whole image (baseline)"]
    print("total: " + ", ".join(f"{n} {t * 1e3:.0f} ms (x{t / base:.2f})" for n, t in totals.items()))


if __name__ == "__main__":
    main()
