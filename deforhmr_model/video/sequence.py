"""The sequence job: a video (or image sequence) in, tracked, smoothed, animated bodies out.

Data flow::

    frames, streamed (reader) -> people: full detection every ``detect_every`` seconds, in
    between BlazePose's landmark model on each live track's predicted box (tracking mode,
    as MediaPipe) -> track ids (tracking) -> per track and frame: body fit warm-started
    from the track's previous frame (one betas per track, fitting.fit ``warm_start``), or the
    network's estimate with the track's betas -> [pass done] temporal smoothing on SO(3),
    translation and depth (smoothing) -> :class:`~deforhmr_model.files.result.SequenceResult`

Memory stays flat over long clips: frames are decoded, used and dropped one at a time;
what is kept per track and frame is its parameters and keypoints (about 1 KB). Outputs
that need pixels again (the overlay video) decode the source a second time.

Camera: one pinhole camera for the whole clip, chosen as for a photo without EXIF
(``HMRPipeline.camera``: the pipeline's focal length / field of view, else the standard
lens); principal point at the centre; OpenCV frame, metres.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from deforhmr_model.files.result import ImageResult, PersonResult, SequenceResult, TrackResult
from deforhmr_model.fitting.fit import FitInit
from deforhmr_model.video.reader import Frame, FrameSource
from deforhmr_model.video.contacts import lock_feet
from deforhmr_model.video.smoothing import DEFAULT_LEVEL, smooth_track, sigma_for
from deforhmr_model.video.tracking import PersonTracker, box_iou

log = logging.getLogger("deforhmr")


@dataclass
class SequenceConfig:
    """Settings of the sequence job.

    smoothing: ``off`` / ``light`` / ``strong`` (:data:`~deforhmr_model.video.smoothing.LEVELS`)
        or a Gaussian sigma in seconds.
    detect_every: seconds between full person detections (new people are found then; in
        between each track is followed by the landmark model); 0 detects on every frame.
    max_missed: seconds a track may go unseen (occlusion) and keep its id.
    warm_gap: a track seen at most this many frames ago is fitted from its last parameters
        (warm start); a longer gap refits from scratch.
    foot_lock: after smoothing, shift each track's root along the floor so that planted feet
        stay put (:mod:`~deforhmr_model.video.contacts`; the pose is unchanged).
    """

    smoothing: str | float = DEFAULT_LEVEL
    detect_every: float = 0.5
    max_missed: float = 1.0
    warm_gap: int = 3
    foot_lock: bool = True


@dataclass
class _Row:
    frame: int
    global_orient: np.ndarray   # (3,3)
    body_pose: np.ndarray       # (23,3,3)
    transl: np.ndarray          # (3,)
    keypoints_2d: np.ndarray    # (17,3)
    bbox: np.ndarray            # (4,)
    score: float


class _TrackState:
    def __init__(self, track_id: int):
        self.id = track_id
        self.rows: list[_Row] = []
        self.betas: torch.Tensor | None = None   # (10,) one shape per track

    def last(self) -> _Row | None:
        return self.rows[-1] if self.rows else None


def recover_sequence(pipe, source: FrameSource, config: SequenceConfig | None = None,
                     progress: Callable[[Frame, int], None] | None = None) -> SequenceResult:
    """Run the sequence job over every frame of ``source``.

    Args:
        pipe: an :class:`~deforhmr_model.pipeline.HMRPipeline` (detector, network or fit, body).
        source: a :class:`~deforhmr_model.video.reader.FrameSource` (video file, image
            sequence, in-memory batch).
        config: :class:`SequenceConfig`.
        progress: called after each frame with the frame and its number of tracked people.
    Returns:
        :class:`~deforhmr_model.files.result.SequenceResult`, tracks sorted by id, rows by frame.
    Raises:
        ValueError: bad smoothing setting; ``reader.SequenceError`` when the source cannot be read.
    """
    cfg = config or SequenceConfig()
    sigma_for(cfg.smoothing)  # validate before the long pass
    states: dict[int, _TrackState] = {}
    times: list[float] = []
    cam = None
    for frame, tracked in track_people(pipe, source, cfg):
        while len(times) < frame.index:   # frames an image sequence skipped keep their time slot
            times.append(len(times) / source.fps)
        times.append(frame.time)
        if cam is None:
            cam = pipe.camera(frame.image)
        if tracked:
            _fit_frame(pipe, frame.image, frame.index, tracked, states, cam, cfg)
        if progress is not None:
            progress(frame, len(tracked))
    if cam is None:
        from deforhmr_model.video.reader import SequenceError
        raise SequenceError(f"{source.name}: no frame could be read")
    return _finish(pipe, source, states, np.asarray(times, np.float64), cam, cfg)


def track_people(pipe, source: FrameSource, config: SequenceConfig | None = None):
    """Detect and track the people of every frame (no body fitting).

    Yields ``(frame, [(track_id, detection), ...])`` per frame of ``source``; detections are
    :class:`~deforhmr_model.people.detection.Detection` (box, score, BlazePose and COCO
    keypoints). Full detection every ``config.detect_every`` seconds (or when a followed
    person is lost), the landmark model in each recent track's predicted box otherwise.
    """
    from deforhmr_model.people.detection import dedup
    cfg = config or SequenceConfig()
    fps = source.fps
    det_every = max(1, int(round(cfg.detect_every * fps))) if cfg.detect_every > 0 else 1
    # "confident" depends on the detector's score scale (MoveNet's people score ~0.3-0.7, BlazePose's ~0.9)
    tracker = PersonTracker(high_score=float(getattr(pipe.detector, "confident_score", 0.6)),
                            max_missed=max(1, int(round(cfg.max_missed * fps))))
    since_detect = det_every
    for frame in source:
        image = frame.image
        recent = [t for t in tracker.tracks if frame.index - t.last_frame <= cfg.warm_gap]
        full = since_detect >= det_every or not recent
        dets = pipe.detect(image) if full else []
        since_detect = 1 if full else since_detect + 1
        missing = [t for t in recent if not dets or
                   box_iou(t.predicted_box(frame.index), np.stack([d.bbox for d in dets])).max() < 0.3]
        if missing:   # follow them with the landmark model in their predicted boxes
            guided = _follow(pipe, image, [t.predicted_box(frame.index) for t in missing])
            if not full and len(guided) < len(missing):   # someone was lost: look for everyone
                dets, since_detect = pipe.detect(image), 1
            dets = dedup(list(dets) + guided)
        ids = tracker.update(frame.index, dets)
        yield frame, [(i, d) for i, d in zip(ids, dets) if i >= 0]


def _follow(pipe, image, boxes) -> list:
    """Landmark-model detections inside predicted boxes, those that still see a person."""
    from deforhmr_model.people.detection import MIN_PRESENCE
    b = _clip_boxes(np.stack(boxes).astype(np.float32), image.shape[1], image.shape[0])
    dets = pipe.detector.keypoints_for_boxes(image, b)
    min_q = getattr(pipe.detector, "min_quality", 0.0)
    return [d for d in dets if d.presence >= MIN_PRESENCE and d.quality >= min_q]


def _fit_frame(pipe, image, index, tracked, states, cam, cfg) -> None:
    from deforhmr_model.pipeline import _extra_keypoints, _world_landmarks
    from deforhmr_model.stages import Person as _Person
    people = [_Person(np.asarray(d.bbox, np.float32), float(d.score), np.asarray(d.keypoints_coco, np.float32),
                      _extra_keypoints(d), _world_landmarks(d)) for _, d in tracked]
    for tid, _ in tracked:
        states.setdefault(tid, _TrackState(tid))
    if pipe.model is not None:   # network estimate per frame, the track's shape
        init = pipe._network([image], [people], [cam])[0]
        params = [(init.global_orient[k], init.body_pose[k], init.betas[k], init.transl[k])
                  for k in range(len(people))]
        if pipe.refine:
            params = _fit_group(pipe, people, list(range(len(people))), cam, init, warm=False)
    else:
        warm, cold = [], []
        for k, (tid, _) in enumerate(tracked):
            last = states[tid].last()
            (warm if last is not None and index - last.frame <= cfg.warm_gap else cold).append(k)
        params = [None] * len(people)
        if cold:
            for k, p in zip(cold, _fit_group(pipe, [people[k] for k in cold], cold, cam, None, warm=False)):
                params[k] = p
        if warm:
            rows = [states[tracked[k][0]].last() for k in warm]
            t = lambda xs: torch.as_tensor(np.stack(xs), dtype=torch.float32)  # noqa: E731
            init = FitInit(t([r.global_orient for r in rows]), t([r.body_pose for r in rows]),
                           torch.stack([states[tracked[k][0]].betas for k in warm]), t([r.transl for r in rows]))
            for k, p in zip(warm, _fit_group(pipe, [people[k] for k in warm], warm, cam, init, warm=True)):
                params[k] = p
    for (tid, _), person, (go, bp, betas, tr) in zip(tracked, people, params):
        st = states[tid]
        if st.betas is None:
            st.betas = torch.as_tensor(betas, dtype=torch.float32).reshape(-1).clone()
        st.rows.append(_Row(index, np.asarray(go, np.float32).reshape(3, 3), np.asarray(bp, np.float32).reshape(23, 3, 3),
                            np.asarray(tr, np.float32).reshape(3), person.keypoints_coco, person.bbox, person.score))


def _fit_group(pipe, people, _idx, cam, init, warm: bool):
    """The pipeline's fit (:class:`~deforhmr_model.stages.FitStage`: keypoints, extremities,
    world landmarks) of one frame's people; per person (global_orient, body_pose, betas, transl)."""
    r = pipe.fitter(people, cam.focal_length, cam.principal_point, init, warm_start=warm)
    return [(r.global_orient[k].numpy(), r.body_pose[k].numpy(), r.betas[k].numpy(), r.transl[k].numpy())
            for k in range(len(people))]


def _finish(pipe, source, states, times, cam, cfg) -> SequenceResult:
    focal, pp = cam.focal_length, cam.principal_point
    d = pipe.body_data
    level = cfg.smoothing if isinstance(cfg.smoothing, str) else f"{float(cfg.smoothing):g}s"
    method = (f"network:{pipe.model_name}" + ("+refine" if pipe.refine else "")) if pipe.model is not None else "fit"
    tracks = []
    for tid in sorted(states):
        st = states[tid]
        if not st.rows:
            continue
        frames = np.array([r.frame for r in st.rows], np.int32)
        stack = lambda k: np.stack([getattr(r, k) for r in st.rows])  # noqa: E731
        go, bp, tr = smooth_track(stack("global_orient"), stack("body_pose"), stack("transl"),
                                  times[frames], cfg.smoothing)
        betas = st.betas.reshape(1, -1).float()
        joints = body_joints(pipe.body, go, bp, betas, tr)
        if cfg.foot_lock:
            tr, joints, _ = lock_feet(tr, joints, go, times[frames], frames)
        with torch.inference_mode():
            rv, rj = pipe.body.rest(betas.to(pipe.device))
        tracks.append(TrackResult(
            track_id=tid, frames=frames, betas=betas[0].numpy().astype(np.float32),
            rest_vertices=rv[0].cpu().numpy().astype(np.float32), rest_joints=rj[0].cpu().numpy().astype(np.float32),
            global_orient=go, body_pose=bp, transl=tr, joints=joints, keypoints_2d=stack("keypoints_2d"),
            bbox=stack("bbox"), score=np.array([r.score for r in st.rows], np.float32), method=method + "+track"))
    return SequenceResult(
        frame_times=times, fps=float(source.fps), image_size=tuple(source.size), focal_length=float(focal),
        principal_point=(float(pp[0]), float(pp[1])), faces=np.asarray(d.faces, np.int32),
        lbs_weights=np.asarray(d.lbs_weights, np.float32), parents=np.asarray(d.parents, np.int32),
        joint_names=list(d.joint_names), body_model={"id": d.id, "name": d.name, "license": d.license},
        tracks=tracks, source=getattr(source, "path", None), smoothing=level, foot_lock=bool(cfg.foot_lock),
        focal_source=cam.source,
        model={"name": pipe.model_name} if pipe.model is not None else {})


def body_joints(body, go, bp, betas, transl, batch: int = 256, vertices: bool = False):
    """Posed joints (N, 24, 3) (and vertices (N, V, 3) when asked), camera frame, metres, for
    per-frame parameters go (N,3,3), bp (N,23,3,3), transl (N,3) and one betas (1,10)."""
    dev = next(iter(body.buffers())).device
    outj, outv = [], []
    with torch.inference_mode():
        for s in range(0, len(go), batch):
            n = min(batch, len(go) - s)
            o = body(torch.as_tensor(go[s:s + n], device=dev).float(), torch.as_tensor(bp[s:s + n], device=dev).float(),
                     torch.as_tensor(betas, device=dev).float().reshape(1, -1).expand(n, -1),
                     torch.as_tensor(transl[s:s + n], device=dev).float())
            outj.append(o.joints.cpu().numpy().astype(np.float32))
            if vertices:
                outv.append(o.vertices.cpu().numpy().astype(np.float32))
    J = np.concatenate(outj) if outj else np.zeros((0, 24, 3), np.float32)
    if vertices:
        return J, (np.concatenate(outv) if outv else np.zeros((0, body.num_vertices, 3), np.float32))
    return J


def frame_result(seq: SequenceResult, body, index: int) -> ImageResult:
    """The people of frame ``index`` as an :class:`ImageResult` (``person_index`` = track id),
    posed vertices from ``body`` (a :class:`~deforhmr_model.body.model.BodyModel`)."""
    from deforhmr_model.geometry.camera import perspective_projection
    people = []
    for t in seq.tracks:
        hit = np.flatnonzero(t.frames == index)
        if not len(hit):
            continue
        k = int(hit[0])
        j, v = body_joints(body, t.global_orient[k:k + 1], t.body_pose[k:k + 1], t.betas[None], t.transl[k:k + 1],
                           vertices=True)
        j2d = perspective_projection(torch.as_tensor(j), seq.focal_length,
                                     torch.tensor(seq.principal_point, dtype=torch.float32)).numpy()[0]
        people.append(PersonResult(
            betas=t.betas, global_orient=t.global_orient[k], body_pose=t.body_pose[k], transl=t.transl[k],
            rest_vertices=t.rest_vertices, rest_joints=t.rest_joints, vertices=v[0], joints=j[0],
            joints_2d=j2d.astype(np.float32), keypoints_2d=t.keypoints_2d[k], bbox=t.bbox[k],
            score=float(t.score[k]), person_index=int(t.track_id), method=t.method))
    return ImageResult(people=people, image_size=tuple(seq.image_size), focal_length=seq.focal_length,
                       principal_point=tuple(seq.principal_point), faces=seq.faces, lbs_weights=seq.lbs_weights,
                       parents=seq.parents, joint_names=list(seq.joint_names), body_model=dict(seq.body_model),
                       model=dict(seq.model))


def write_overlay_video(seq: SequenceResult, source: FrameSource, body, path: str | os.PathLike,
                        progress: Callable[[int], None] | None = None) -> Path:
    """Render every frame's tracked bodies over the source frames into an ``.mp4`` (MPEG-4
    Part 2 via OpenCV's FFmpeg backend, the source's frame rate), written atomically; each
    track keeps its colour (:func:`~deforhmr_model.files.render.person_colors` by track id).

    Raises OSError if the file cannot be written."""
    import cv2

    from deforhmr_model.files.render import person_colors, render_overlay
    from deforhmr_model.files.atomic import atomic_path
    path = Path(path)
    n_ids = max([t.track_id for t in seq.tracks], default=-1) + 1
    palette = person_colors(max(n_ids, 1))
    W, H = seq.image_size
    with atomic_path(path) as tmp:
        tmp_mp4 = tmp.with_suffix(".mp4")   # OpenCV picks the container from the suffix
        writer = cv2.VideoWriter(str(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), float(seq.fps), (int(W), int(H)))
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write an mp4 video here")
        try:
            for frame in source:
                res = frame_result(seq, body, frame.index)
                cols = [palette[p.person_index] for p in res.people]
                img = render_overlay(frame.image, res, colors=cols).overlay if res.people else frame.image
                writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                if progress is not None:
                    progress(frame.index)
        finally:
            writer.release()
        os.replace(tmp_mp4, tmp)
    return path


def _clip_boxes(boxes: np.ndarray, W: int, H: int) -> np.ndarray:
    b = boxes.copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, W)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, H)
    bad = (b[:, 2] - b[:, 0] < 2) | (b[:, 3] - b[:, 1] < 2)
    b[bad] = boxes[bad]
    return b


SEQUENCE_FORMATS = ("npz", "glb", "bvh", "overlay")


def write_sequence_outputs(seq: SequenceResult, source: FrameSource, body, folder: str | os.PathLike, stem: str,
                           formats=SEQUENCE_FORMATS, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write a sequence's outputs into ``folder``: ``npz`` -> ``<stem>.npz`` + ``.json``
    (sequence result), ``glb`` -> ``<stem>.glb`` (animated, all tracks), ``bvh`` ->
    ``<stem>_track<id>.bvh``, ``overlay`` -> ``<stem>_overlay.mp4`` (decodes ``source`` again;
    skipped when ``source``/``body`` is None).
    Other format names are ignored (``obj`` has no animated form). Each file is atomic.

    Returns the paths written. Raises OSError when the folder is not writable."""
    from deforhmr_model.files.bvh import export_bvh
    from deforhmr_model.files.export import export_animated_glb
    from deforhmr_model.files.result import save_sequence
    folder = Path(folder)
    out: list[Path] = []
    if "npz" in formats:
        out.extend(save_sequence(seq, folder / stem))
    has_people = any(len(t.frames) for t in seq.tracks)
    if "glb" in formats and has_people:
        out.append(export_animated_glb(seq, folder / f"{stem}.glb"))
    if "bvh" in formats and has_people:
        out.extend(export_bvh(seq, folder, stem))
    if "overlay" in formats and source is not None and body is not None:
        out.append(write_overlay_video(seq, source, body, folder / f"{stem}_overlay.mp4", progress))
    return out
