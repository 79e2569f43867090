"""Per-stage time of the main job on the real dev photos (CPU), and memory over many images.

Stages: load (decode + EXIF), detect (BlazePose, all people), crop (HMR 2.0 crops, for the
network path), fit (2D pose-guided fitting, all people of the image), body (mesh forward),
export (npz + json + OBJ + skinned GLB), render (overlay PNG).

Baseline measured in the same run: one fitting iteration with full-mesh skinning
(``BodyModel`` forward, what a naive fit does) versus the keypoint-only kinematic body the
fitter uses; the ratio is printed.

    .venv/bin/python bench/bench_pipeline.py [--threads 2] [--memory 200 [--bad-every 10] [--memory-only]]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PHOTOS = REPO.parent / "shared" / "photos" / "dev"


def photos() -> list[Path]:
    return (sorted((PHOTOS / "coco").glob("*.jpg")) + sorted((PHOTOS / "mpii").glob("*.jpg"))
            + [PHOTOS / "skates.png", PHOTOS / "pexels-anete-lusina-4793258.jpg"])


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def stage_table(pipe):
    from deforhmr_model.cli import write_outputs
    from deforhmr_model.people.crop import crop_person
    from deforhmr_model.files.image_io import load_image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in photos():
            img, t_load = timed(load_image, p)
            dets, t_det = timed(pipe.detect, img)
            _, t_crop = timed(lambda: [crop_person(img, d.bbox) for d in dets])
            res, t_fit = timed(pipe.recover, [img], [dets])
            res = res[0]
            _, t_exp = timed(write_outputs, res, img, Path(tmp), p.stem, ["npz", "obj", "glb"])
            _, t_ren = timed(write_outputs, res, img, Path(tmp), p.stem, ["overlay"])
            n = max(len(res.people), 1)
            rows.append((p.name, img.shape[1], img.shape[0], len(res.people), t_load, t_det, t_crop,
                         t_fit, t_fit / n, t_exp, t_ren))
    print(f"{'image':34s} {'WxH':>10s} {'ppl':>3s} {'load':>6s} {'detect':>6s} {'crop':>6s} "
          f"{'fit+body':>8s} {'/person':>7s} {'export':>6s} {'render':>6s} {'total':>6s}  (seconds)")
    for r in rows:
        total = sum(r[4:8]) + r[9] + r[10]
        print(f"{r[0]:34s} {r[1]:>5d}x{r[2]:<5d}{r[3]:>3d} {r[4]:6.3f} {r[5]:6.3f} {r[6]:6.3f} {r[7]:8.3f} "
              f"{r[8]:7.3f} {r[9]:6.3f} {r[10]:6.3f} {total:6.2f}")
    a = np.array([r[4:] for r in rows])
    print(f"{'median':34s} {'':>10s} {'':>3s} " + " ".join(f"{v:6.3f}" for v in np.median(a[:, :3], 0))
          + f" {np.median(a[:, 3]):8.3f} {np.median(a[:, 4]):7.3f} {np.median(a[:, 5]):6.3f} {np.median(a[:, 6]):6.3f}")


def baseline_ratio(pipe, iters=20):
    from deforhmr_model.fitting.fit import KeypointBody
    from deforhmr_model.geometry.rotation import axis_angle_to_rotmat
    P = 2
    pose = torch.zeros(P, 24, 3, requires_grad=True)
    betas = torch.zeros(P, 10, requires_grad=True)
    tr = torch.zeros(P, 3)
    kb = KeypointBody(pipe.body_data)

    def fast():
        kb.coco17(axis_angle_to_rotmat(pose), betas, tr).sum().backward()

    def naive():
        R = axis_angle_to_rotmat(pose)
        out = pipe.body(R[:, 0], R[:, 1:], betas, tr)
        pipe.body.coco17(out).sum().backward()

    res = {}
    for name, fn in (("keypoint body (ours)", fast), ("full-mesh skinning (baseline)", naive)):
        fn()
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        res[name] = (time.perf_counter() - t) / iters
        print(f"fit iteration, {P} people, {name:30s}: {1000 * res[name]:7.2f} ms")
    print(f"speed-up of the fitter's body over the baseline: "
          f"{res['full-mesh skinning (baseline)'] / res['keypoint body (ours)']:.1f}x")


def memory(pipe, n, bad_every=0):
    """Peak RSS over ``n`` images through the CLI's per-image path (recover, write_outputs into one
    folder, distinct stems as a batch has). With ``bad_every`` k, every k-th item is also a bad
    input handled the way the CLI handles it: an image too small to detect in (ValueError), and an
    output set whose writing fails with ENOSPC (staging folder removed). The baseline is the same
    run's own peak after the first quarter: flat means growth near zero, ratio near 1."""
    import errno

    from deforhmr_model.cli import write_outputs
    from deforhmr_model.files.image_io import load_image
    from deforhmr_model.files.output_set import write_output_set
    small = sorted((PHOTOS / "coco").glob("*.jpg")) + sorted((PHOTOS / "mpii").glob("*.jpg"))
    tiny = np.zeros((1, 1000, 3), np.uint8)
    rss, failures = [], 0

    def full_disk(folder):
        (folder / "bad.npz").write_bytes(bytes(2**20))
        raise OSError(errno.ENOSPC, "No space left on device")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            p = small[i % len(small)]
            img = load_image(p)
            res = pipe.recover([img], [pipe.detect(img)])[0]
            write_outputs(res, img, Path(tmp), f"{p.stem}_{i}", ["npz", "glb", "overlay"])
            if bad_every and i % bad_every == bad_every - 1:
                try:
                    pipe.recover([tiny], [pipe.detect(tiny)])
                except ValueError:
                    failures += 1
                try:
                    write_output_set(Path(tmp), f"bad_{i}", full_disk)
                except OSError:
                    failures += 1
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            if (i + 1) % 25 == 0:
                print(f"  after {i + 1:4d} images: peak RSS {rss[-1]:7.1f} MB")
        hidden = [q.name for q in Path(tmp).iterdir() if q.name.startswith(".")]
        stray = [q.name for q in Path(tmp).glob("bad_*")]
    q = max(1, n // 4)
    print(f"peak RSS after first quarter {rss[q - 1]:.1f} MB (baseline), at the end {rss[-1]:.1f} MB: "
          f"growth {rss[-1] - rss[q - 1]:+.1f} MB over {n - q} images, ratio {rss[-1] / rss[q - 1]:.3f}")
    if bad_every:
        print(f"bad inputs handled: {failures}; staging folders left: {len(hidden)}; files of failed sets "
              f"left: {len(stray)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", type=int, default=0, help="images for the memory run (e.g. 200)")
    ap.add_argument("--bad-every", type=int, default=10,
                    help="memory run: every k-th image also a too-small image and a full-disk write (0: none)")
    ap.add_argument("--memory-only", action="store_true", help="skip the stage table and baseline ratio")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from deforhmr_model.pipeline import HMRPipeline
    pipe = HMRPipeline(model="none")   # the fit path, whatever is installed
    pipe.detect(np.zeros((64, 64, 3), np.uint8))  # load the detector models
    print(f"torch threads: {torch.get_num_threads()}, body: {pipe.body_data.id} "
          f"({pipe.body_data.num_vertices} vertices)")
    if not args.memory_only:
        stage_table(pipe)
        baseline_ratio(pipe)
    if args.memory:
        memory(pipe, args.memory, args.bad_every)


if __name__ == "__main__":
    main()
