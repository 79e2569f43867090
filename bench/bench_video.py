"""The sequence job on the dev videos: speed, tracking, jitter, lag and foot skating.

Clips: ``shared/photos/dev/video/*.mp4`` (two phone clips, 40 frames, 1080x1920, 12 fps; one
with two people) and the 5-frame PoseTrack clip. Per clip:

* **fps end to end** (decode, detect/track, fit; then export npz + animated GLB + BVH, and
  the overlay mp4 timed separately), CPU, ``--threads`` torch threads. Baseline measured in
  the same run: today's per-photo job on the first ``--baseline-frames`` frames (full
  detection and a cold fit of every person on every frame); the speed-up is printed.
  ``cpu fps`` divides by the process's CPU time (all threads), which other processes on a
  shared machine inflate far less than wall time: a lower bound of the wall fps on an idle
  machine with ``--threads`` cores (the fit runs on one thread, detection on two).
* **tracks**: frames per track id; **identity switches**: frames where the ids disagree
  with the optimal box-IoU matching to the previous frame (0 expected).
* **jitter**: mean joint acceleration ``|j[t+1] - 2 j[t] + j[t-1]|`` in mm/frame^2 over the
  24 joints, camera frame (what an animation shows) and root-relative (pose only), raw fits
  (smoothing off) versus each smoothing level applied to the same fits.
* **lag**: the shift (frames) maximising the cross-correlation of smoothed and raw
  root-relative joint trajectories (mean removed), over -5..5; 0 = no lag. And the
  correlation of the smoothed with the raw motion at shift 0.
* **foot skating**: mean horizontal speed (mm/frame) of a foot joint while in contact
  (within 5 cm of the track's floor: the 5th percentile of foot heights along the body's
  mean up axis), in consecutive frames.

    .venv/bin/python bench/bench_video.py [--threads 2] [--clips multi,single,posetrack] [--overlay]
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
DEV = REPO.parent / "shared" / "photos" / "dev"
CLIPS = {"multi": DEV / "video" / "multi_person_demo.mp4", "single": DEV / "video" / "single_person_demo.mp4",
         "posetrack": DEV / "posetrack18" / "videos" / "000001_mpiinew_test" / "000001_mpiinew_test.mp4"}


def identity_switches(seq) -> int:
    from scipy.optimize import linear_sum_assignment

    from deforhmr_model.video.tracking import box_iou
    boxes = {}
    for t in seq.tracks:
        for f, b in zip(t.frames, t.bbox):
            boxes.setdefault(int(f), {})[t.track_id] = b
    switches = 0
    for f in sorted(boxes)[1:]:
        prev, cur = boxes.get(f - 1, {}), boxes[f]
        common = sorted(set(prev) & set(cur))
        if len(common) < 2:
            continue
        iou = box_iou(np.stack([prev[i] for i in common]), np.stack([cur[i] for i in common]))
        r, c = linear_sum_assignment(-iou)
        switches += int(any(common[a] != common[b] for a, b in zip(r, c)))
    return switches


def joints_of(pipe, track, go, bp, tr):
    from deforhmr_model.video.sequence import body_joints
    return body_joints(pipe.body, go, bp, track.betas[None], tr).astype(np.float64)


def runs(frames):
    """Index runs of consecutive frames (lists of row indices)."""
    out, cur = [], [0]
    for i in range(1, len(frames)):
        if frames[i] == frames[i - 1] + 1:
            cur.append(i)
        else:
            out.append(cur)
            cur = [i]
    out.append(cur)
    return [r for r in out if len(r) >= 3]


def jitter(J, frames, root_relative=False):
    if root_relative:
        J = J - J[:, :1]
    acc = [np.linalg.norm(J[r][2:] - 2 * J[r][1:-1] + J[r][:-2], axis=-1).mean() for r in runs(frames)]
    return 1000.0 * float(np.mean(acc)) if acc else float("nan")


def lag(Jraw, Js, frames):
    """Shift maximising the cross-correlation of smoothed vs raw root-relative trajectories."""
    best = []
    for r in runs(frames):
        if len(r) < 12:
            continue
        a = (Jraw[r] - Jraw[r][:, :1]).reshape(len(r), -1)
        b = (Js[r] - Js[r][:, :1]).reshape(len(r), -1)
        a, b = a - a.mean(0), b - b.mean(0)
        scores = {s: float((np.roll(b, s, 0)[5:-5] * a[5:-5]).sum()) for s in range(-5, 6)}
        best.append((max(scores, key=scores.get), scores[0] / np.sqrt((a[5:-5] ** 2).sum() * (b[5:-5] ** 2).sum())))
    if not best:
        return float("nan"), float("nan")
    return float(np.mean([b[0] for b in best])), float(np.mean([b[1] for b in best]))


def foot_skating(J, go, frames):
    up = (go @ np.array([0.0, 1.0, 0.0])).mean(0)
    up /= np.linalg.norm(up)
    feet = J[:, [10, 11]]                                        # left_foot, right_foot
    h = feet @ up
    floor = np.percentile(h, 5)
    contact = h < floor + 0.05
    speeds = []
    for i in range(1, len(frames)):
        if frames[i] != frames[i - 1] + 1:
            continue
        for k in range(2):
            if contact[i, k] and contact[i - 1, k]:
                d = feet[i, k] - feet[i - 1, k]
                speeds.append(np.linalg.norm(d - (d @ up) * up))
    return 1000.0 * float(np.mean(speeds)) if speeds else float("nan")


def bench_clip(pipe, name, path, threads, baseline_frames, overlay=False):
    from deforhmr_model.video.reader import VideoSource
    from deforhmr_model.video.sequence import SequenceConfig, recover_sequence, write_sequence_outputs
    from deforhmr_model.video.contacts import lock_feet
    from deforhmr_model.video.smoothing import LEVELS, smooth_track
    src = VideoSource(path)
    c0, t0 = time.process_time(), time.perf_counter()
    seq = recover_sequence(pipe, src, SequenceConfig(smoothing="off"))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    T = seq.num_frames
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_sequence_outputs(seq, src, pipe.body, tmp, name, ["npz", "glb", "bvh"])
        t_export = time.perf_counter() - t1
        t1 = time.perf_counter()
        if overlay:
            write_sequence_outputs(seq, src, pipe.body, tmp, name, ["overlay"])
        t_overlay = time.perf_counter() - t1
    # baseline: the per-photo job (detect + cold fit on every frame), first frames only
    t1, c1, n = time.perf_counter(), time.process_time(), 0
    for f in src:
        if n >= baseline_frames:
            break
        pipe.recover([f.image], [pipe.detect(f.image)])
        n += 1
    base_fps, base_cpu_fps = n / (time.perf_counter() - t1), n / (time.process_time() - c1)
    print(f"\n== {name}: {path.name}, {T} frames {src.size[0]}x{src.size[1]} @ {src.fps:g} fps, {threads} threads")
    print(f"sequence job: {T / wall:.2f} fps wall ({wall:.1f} s), {T / cpu:.2f} fps cpu ({cpu:.1f} s); "
          f"export npz+glb+bvh {t_export:.1f} s, overlay mp4 {t_overlay:.1f} s "
          f"(end to end with exports {T / (wall + t_export):.2f} fps, with overlay {T / (wall + t_export + t_overlay):.2f})")
    print(f"baseline per-photo job, first {n} frames: {base_fps:.2f} fps wall, {base_cpu_fps:.2f} fps cpu -> "
          f"sequence job x{(T / wall) / base_fps:.1f} (wall), x{(T / cpu) / base_cpu_fps:.1f} (cpu)")
    print("tracks: " + ", ".join(f"{t.track_id}: {len(t.frames)} frames ({t.frames[0]}..{t.frames[-1]})"
                                 for t in seq.tracks) + f"; identity switches {identity_switches(seq)}")
    print(f"{'track':>5s} {'level':>10s} {'jitter cam':>10s} {'jitter pose':>11s} {'lag':>5s} {'corr':>5s} {'skate':>7s}"
          "   (mm/frame^2, mm/frame^2, frames, -, mm/frame)")
    rows = []
    for t in seq.tracks:
        if len(t.frames) < 5:
            continue
        times = seq.frame_times[t.frames]
        Jraw = joints_of(pipe, t, t.global_orient, t.body_pose, t.transl)
        for level in [*LEVELS, "light+lock"]:
            go, bp, tr = smooth_track(t.global_orient, t.body_pose, t.transl, times, level.split("+")[0])
            J = joints_of(pipe, t, go, bp, tr)
            if level.endswith("+lock"):
                tr, J, _ = lock_feet(tr, J, go, times, t.frames)
            jc, jp = jitter(J, t.frames), jitter(J, t.frames, True)
            lg, corr = lag(Jraw, J, t.frames)
            sk = foot_skating(J, go, t.frames)
            rows.append((t.track_id, level, jc, jp))
            print(f"{t.track_id:5d} {level:>10s} {jc:10.1f} {jp:11.1f} {lg:5.1f} {corr:5.2f} {sk:7.1f}")
    for tid in sorted({r[0] for r in rows}):
        off = next(r for r in rows if r[0] == tid and r[1] == "off")
        for r in rows:
            if r[0] == tid and r[1] != "off":
                print(f"track {tid} {r[1]}: jitter lowered x{off[2] / r[2]:.1f} (camera frame), "
                      f"x{off[3] / r[3]:.1f} (root-relative)")
    return seq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clips", default="multi,single,posetrack")
    ap.add_argument("--baseline-frames", type=int, default=4)
    ap.add_argument("--overlay", action="store_true", help="also time the overlay mp4 (slow on a CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from deforhmr_model.pipeline import HMRPipeline
    pipe = HMRPipeline()
    for name in args.clips.split(","):
        bench_clip(pipe, name, CLIPS[name], args.threads, args.baseline_frames, args.overlay)
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
